// ControlClient against a scripted server on a unix socket: streamed bodies
// arrive piece by piece, the bearer token is sent, error bodies are kept.
#include "daemon/cli/control_client.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/temp_dir.h"

namespace tokenmill::cli {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// Serves one connection: reads the request, then writes `head` and each of
// `pieces`; before each piece after the first it waits (up to 5 s) until the
// test says the previous one arrived, so buffering in the client would show.
class ScriptedServer {
 public:
  ScriptedServer(const std::string& socket_path, std::string head, std::vector<std::string> pieces)
      : head_(std::move(head)), pieces_(std::move(pieces)) {
    listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", socket_path.c_str());
    EXPECT_EQ(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    EXPECT_EQ(::listen(listen_fd_, 1), 0);
    thread_ = std::thread([this] { Serve(); });
  }
  ~ScriptedServer() {
    PieceArrived();  // never leave the server waiting
    thread_.join();
    ::close(listen_fd_);
  }

  void PieceArrived() {
    std::lock_guard<std::mutex> lock(mu_);
    ++arrived_;
    cv_.notify_all();
  }
  // Whether every wait ended because a piece arrived (not by timeout).
  bool never_timed_out() {
    std::lock_guard<std::mutex> lock(mu_);
    return !timed_out_;
  }
  std::string request() {
    std::lock_guard<std::mutex> lock(mu_);
    return request_;
  }

 private:
  void Serve() {
    int fd = ::accept(listen_fd_, nullptr, nullptr);
    if (fd < 0) return;
    std::string request;
    char buf[4096];
    size_t body_needed = std::string::npos;
    while (true) {
      ssize_t n = ::read(fd, buf, sizeof(buf));
      if (n <= 0) break;
      request.append(buf, static_cast<size_t>(n));
      size_t end = request.find("\r\n\r\n");
      if (end == std::string::npos) continue;
      if (body_needed == std::string::npos) {
        size_t at = request.find("Content-Length: ");
        body_needed = at == std::string::npos ? 0 : std::stoul(request.substr(at + 16));
      }
      if (request.size() >= end + 4 + body_needed) break;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      request_ = request;
    }
    WriteAll(fd, head_);
    for (size_t i = 0; i < pieces_.size(); ++i) {
      if (i > 0) {
        std::unique_lock<std::mutex> lock(mu_);
        if (!cv_.wait_for(lock, std::chrono::seconds(5),
                          [&] { return arrived_ >= static_cast<int>(i); })) {
          timed_out_ = true;
        }
      }
      if (!WriteAll(fd, pieces_[i])) break;
    }
    ::close(fd);
  }
  static bool WriteAll(int fd, const std::string& text) {
    size_t done = 0;
    while (done < text.size()) {
      ssize_t n = ::send(fd, text.data() + done, text.size() - done, MSG_NOSIGNAL);
      if (n <= 0) return false;
      done += static_cast<size_t>(n);
    }
    return true;
  }

  std::string head_;
  std::vector<std::string> pieces_;
  int listen_fd_ = -1;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  int arrived_ = 0;
  bool timed_out_ = false;
  std::string request_;
};

const char kSseHead[] =
    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n";

TEST(ControlClientTest, StreamDeliversPiecesAsTheyArrive) {
  testing::TempDir dir;
  const std::string socket = (dir.path() / "s.sock").string();
  ScriptedServer server(socket, kSseHead, {"data: one\n\n", "data: two\n\n", "data: [DONE]\n\n"});
  ControlClient client(socket, 5000);
  client.set_bearer_token("sk-test-1");
  std::string received;
  int chunks = 0;
  ControlResponse response =
      client.Stream("POST", "/v1/completions", R"({"prompt":"x"})", [&](std::string_view chunk) {
        received.append(chunk);
        ++chunks;
        server.PieceArrived();
        return true;
      });
  EXPECT_EQ(response.status, 200) << response.error;
  EXPECT_EQ(received, "data: one\n\ndata: two\n\ndata: [DONE]\n\n");
  EXPECT_GE(chunks, 3);
  EXPECT_TRUE(response.body.empty());  // a 2xx body goes to the callback only
  EXPECT_TRUE(server.never_timed_out()) << "a piece was held back until the next one came";
  EXPECT_THAT(server.request(), HasSubstr("POST /v1/completions HTTP/1.1\r\n"));
  EXPECT_THAT(server.request(), HasSubstr("Authorization: Bearer sk-test-1\r\n"));
  EXPECT_THAT(server.request(), HasSubstr("Accept: text/event-stream\r\n"));
  EXPECT_THAT(server.request(), HasSubstr(R"({"prompt":"x"})"));
}

TEST(ControlClientTest, StreamKeepsAnErrorBodyForTheCaller) {
  testing::TempDir dir;
  const std::string socket = (dir.path() / "s.sock").string();
  const std::string error = R"({"error":{"message":"unknown API key","type":"auth","code":401}})";
  ScriptedServer server(socket,
                        "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n"
                        "Content-Length: " +
                            std::to_string(error.size()) + "\r\nConnection: close\r\n\r\n",
                        {error});
  ControlClient client(socket, 5000);
  bool called = false;
  ControlResponse response = client.Stream("POST", "/v1/completions", "{}", [&](std::string_view) {
    called = true;
    return true;
  });
  EXPECT_EQ(response.status, 401);
  EXPECT_EQ(response.body, error);
  EXPECT_FALSE(called);
  EXPECT_THAT(server.request(), Not(HasSubstr("Authorization:")));
}

TEST(ControlClientTest, CallbackCanStopTheStream) {
  testing::TempDir dir;
  const std::string socket = (dir.path() / "s.sock").string();
  ScriptedServer server(socket, kSseHead, {"data: one\n\n", "data: two\n\n"});
  ControlClient client(socket, 5000);
  ControlResponse response =
      client.Stream("POST", "/v1/completions", "{}", [](std::string_view) { return false; });
  EXPECT_EQ(response.status, 0);
  EXPECT_EQ(response.error, "stopped");
}

TEST(ControlClientTest, RequestStillReturnsTheWholeBody) {
  testing::TempDir dir;
  const std::string socket = (dir.path() / "s.sock").string();
  ScriptedServer server(socket,
                        "HTTP/1.1 200 OK\r\nContent-Length: 11\r\nConnection: close\r\n\r\n",
                        {"{\"ok\":true}"});
  ControlClient client(socket, 5000);
  client.set_bearer_token("sk-x");
  ControlResponse response = client.Request("GET", "/control/v1/models");
  EXPECT_EQ(response.status, 200);
  EXPECT_EQ(response.body, "{\"ok\":true}");
  EXPECT_THAT(server.request(), HasSubstr("GET /control/v1/models HTTP/1.1\r\n"));
  EXPECT_THAT(server.request(), HasSubstr("Authorization: Bearer sk-x\r\n"));
}

TEST(ControlClientTest, NoDaemonIsATransportError) {
  testing::TempDir dir;
  ControlClient client((dir.path() / "none.sock").string(), 1000);
  ControlResponse response =
      client.Stream("POST", "/v1/completions", "{}", [](std::string_view) { return true; });
  EXPECT_EQ(response.status, 0);
  EXPECT_FALSE(response.error.empty());
}

}  // namespace
}  // namespace tokenmill::cli
