// Malformed and hostile HTTP against the real daemon's socket; after each, the
// daemon must still answer /healthz.
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_process.h"
#include "tests/support/http_client.h"

namespace tokenmill::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using Clock = std::chrono::steady_clock;

// Unix-socket raw client; asserts the connection was made.
std::unique_ptr<RawClient> Connect(const std::string& path) {
  auto client = RawClient::ConnectUnix(path);
  EXPECT_NE(client, nullptr) << "cannot connect to " << path;
  return client;
}

class HostileHttpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Small limits so the test is quick: 1 s idle timeout (in the base config),
    // 16 KiB heads, 64 KiB bodies.
    daemon_ = std::make_unique<DaemonProcess>(
        dir_.path(),
        DaemonOptions{.api_toml = "max_header_bytes = 16384\nmax_body_bytes = 65536\n"});
    ASSERT_TRUE(daemon_->Start()) << daemon_->Stderr();
  }
  void ExpectHealthy() {
    auto health = daemon_->Control("GET", "/healthz");
    EXPECT_EQ(health.status, 200) << "curl code " << health.code;
    EXPECT_TRUE(daemon_->process().running());
  }
  std::string Socket() { return daemon_->socket_path().string(); }

  TempDir dir_;
  std::unique_ptr<DaemonProcess> daemon_;
};

TEST_F(HostileHttpTest, BadRequestLinesGet400) {
  for (const std::string& line :
       std::vector<std::string>{"GARBAGE\r\n\r\n", "GET\r\n\r\n", "GET / HTTP/9.9\r\n\r\n",
                                "GET / HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n",
                                std::string("\x00\x01\x02\xff\r\n\r\n", 8)}) {
    auto client = Connect(Socket());
    ASSERT_NE(client, nullptr);
    client->Send(line);
    bool closed = false;
    std::string reply = client->ReadUntilClose(std::chrono::seconds(5), &closed);
    EXPECT_THAT(reply, StartsWith("HTTP/1.1 400")) << "for " << ::testing::PrintToString(line);
    EXPECT_TRUE(closed);
  }
  ExpectHealthy();
}

TEST_F(HostileHttpTest, OneMebibyteOfHeadersIsRefused) {
  auto client = Connect(Socket());
  ASSERT_NE(client, nullptr);
  std::string request = "GET /healthz HTTP/1.1\r\nHost: x\r\n";
  std::string value(1024, 'a');
  while (request.size() < (1u << 20)) request += "X-Filler: " + value + "\r\n";
  request += "\r\n";
  client->Send(request);  // the daemon may close before it has read it all
  bool closed = false;
  std::string reply = client->ReadUntilClose(std::chrono::seconds(5), &closed);
  EXPECT_TRUE(closed);
  if (!reply.empty()) {
    EXPECT_THAT(reply, StartsWith("HTTP/1.1 431"));
  }
  ExpectHealthy();
}

TEST_F(HostileHttpTest, OversizeBodyGets413BeforeItIsSent) {
  auto client = Connect(Socket());
  ASSERT_NE(client, nullptr);
  client->Send("POST /control/v1/drain HTTP/1.1\r\nHost: x\r\nContent-Length: 10485760\r\n\r\n");
  bool closed = false;
  std::string reply = client->ReadUntilClose(std::chrono::seconds(5), &closed);
  EXPECT_THAT(reply, StartsWith("HTTP/1.1 413"));
  EXPECT_TRUE(closed);
  EXPECT_EQ(daemon_->Control("GET", "/readyz").status, 200) << "the drain must not have run";
  ExpectHealthy();
}

TEST_F(HostileHttpTest, TruncatedBodyThenHangUpLeavesNoTrace) {
  for (int i = 0; i < 20; ++i) {
    auto client = Connect(Socket());
    ASSERT_NE(client, nullptr);
    client->Send(
        "POST /control/v1/drain HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"a\":");
    // Hang up without the rest of the body.
  }
  auto half = Connect(Socket());
  ASSERT_NE(half, nullptr);
  half->Send("POST /control/v1/drain HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc");
  half->ShutdownWrite();
  half->ReadUntilClose(std::chrono::seconds(3));
  EXPECT_EQ(daemon_->Control("GET", "/readyz").status, 200) << "no truncated request may run";
  ExpectHealthy();
}

TEST_F(HostileHttpTest, TricklingClientIsCutOffWhileOthersAreServed) {
  auto slow = Connect(Socket());
  ASSERT_NE(slow, nullptr);
  std::string request = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
  auto start = Clock::now();
  bool cut_off = false;
  // One byte every 300 ms: the request would take ~10 s; idle_timeout is 1 s.
  for (size_t i = 0; i < request.size(); ++i) {
    if (!slow->Send(request.substr(i, 1))) {
      cut_off = true;
      break;
    }
    // Meanwhile other clients are served at once.
    if (i == 1) ExpectHealthy();
    bool closed = false;
    std::string reply = slow->ReadUntilClose(std::chrono::milliseconds(300), &closed);
    if (closed) {
      if (!reply.empty()) {
        EXPECT_THAT(reply, StartsWith("HTTP/1.1 408"));
      }
      cut_off = true;
      break;
    }
  }
  auto elapsed = Clock::now() - start;
  EXPECT_TRUE(cut_off);
  EXPECT_LT(elapsed, std::chrono::seconds(4));
  ExpectHealthy();
}

TEST_F(HostileHttpTest, SilentConnectionsAreClosedAndManyDoNotStarveOthers) {
  std::vector<std::unique_ptr<RawClient>> silent;
  for (int i = 0; i < 100; ++i) silent.push_back(Connect(Socket()));
  ExpectHealthy();
  bool closed = false;
  silent.front()->ReadUntilClose(std::chrono::seconds(5), &closed);
  EXPECT_TRUE(closed) << "an idle connection must be closed after idle_timeout";
  ExpectHealthy();
}

TEST_F(HostileHttpTest, RandomBytesNeverCrashTheDaemon) {
  std::mt19937 rng(42);
  for (int i = 0; i < 50; ++i) {
    auto client = Connect(Socket());
    ASSERT_NE(client, nullptr);
    std::string junk(1 + rng() % 4096, '\0');
    for (auto& c : junk) c = static_cast<char>(rng());
    if (i % 2 == 0) junk = "GET /healthz HTTP/1.1\r\n" + junk;
    client->Send(junk);
    client->ReadUntilClose(std::chrono::milliseconds(50));
  }
  ExpectHealthy();
}

TEST_F(HostileHttpTest, BadChunkedBodyGets400) {
  auto client = Connect(Socket());
  ASSERT_NE(client, nullptr);
  client->Send(
      "POST /control/v1/drain HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
      "zz\r\nhello\r\n0\r\n\r\n");
  bool closed = false;
  std::string reply = client->ReadUntilClose(std::chrono::seconds(5), &closed);
  EXPECT_THAT(reply, StartsWith("HTTP/1.1 400"));
  EXPECT_EQ(daemon_->Control("GET", "/readyz").status, 200);
  ExpectHealthy();
}

}  // namespace
}  // namespace tokenmill::testing
