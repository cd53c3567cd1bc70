// HttpServer listeners and lifecycle: socket files, ports, Stop(), SplitHostPort.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <fstream>

#include "tests/http/test_server.h"

namespace tokenmill::http::testing {
namespace {

using ::testing::HasSubstr;

HttpServerOptions UnixOnly(const std::string& path, uint32_t mode = 0660) {
  HttpServerOptions options;
  options.listeners.push_back({Listener::Kind::kUnix, path, mode});
  return options;
}

void Answer(HttpRequest, ResponseWriterPtr response) { response->Send(200, "text/plain", "ok"); }

TEST(SplitHostPortTest, AcceptsHostPortAndBracketedIpv6) {
  auto v4 = SplitHostPort("127.0.0.1:8080");
  ASSERT_TRUE(v4.ok()) << v4.status();
  EXPECT_EQ(v4->first, "127.0.0.1");
  EXPECT_EQ(v4->second, 8080);
  auto v6 = SplitHostPort("[::1]:80");
  ASSERT_TRUE(v6.ok()) << v6.status();
  EXPECT_EQ(v6->first, "::1");
  EXPECT_EQ(v6->second, 80);
  auto name = SplitHostPort("localhost:0");
  ASSERT_TRUE(name.ok());
  EXPECT_EQ(name->first, "localhost");
  EXPECT_EQ(name->second, 0);
  EXPECT_EQ(SplitHostPort("0.0.0.0:65535")->second, 65535);
}

TEST(SplitHostPortTest, RejectsMalformedAddresses) {
  for (const char* bad :
       {"", "host", "host:", ":80", "host:abc", "host:65536", "host:-1", "host:+80", "::1:80",
        "[::1]", "[::1]80", "[::1", "[]:80", "host:123456"}) {
    auto result = SplitHostPort(bad);
    EXPECT_FALSE(result.ok()) << bad;
    if (!result.ok()) {
      EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    }
  }
}

TEST_F(ServerTest, UnixSocketFileModeIsApplied) {
  StartServer();
  struct stat st {};
  ASSERT_EQ(stat(socket_path_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0660u);

  std::string other = dir_ + "/private.sock";
  HttpServer server(UnixOnly(other, 0600), Answer);
  ASSERT_TRUE(server.Start().ok());
  ASSERT_EQ(stat(other.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  server.Stop();
  EXPECT_NE(access(other.c_str(), F_OK), 0) << "socket file left behind";
}

TEST_F(ServerTest, StaleSocketFileIsReplaced) {
  // A socket file nobody listens on, as a crashed server leaves it.
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, socket_path_.c_str(), sizeof(addr.sun_path) - 1);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  close(fd);
  ASSERT_EQ(access(socket_path_.c_str(), F_OK), 0);

  StartServer();
  CurlResult result = CurlRequest("http://localhost/echo", socket_path_);
  EXPECT_EQ(result.status, 200);
}

TEST_F(ServerTest, LiveSocketIsRefused) {
  StartServer();
  HttpServer second(UnixOnly(socket_path_), Answer);
  absl::Status status = second.Start();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("another server is listening on " + socket_path_));
  second.Stop();  // harmless after a failed Start
  // The first server keeps its socket.
  CurlResult result = CurlRequest("http://localhost/echo", socket_path_);
  EXPECT_EQ(result.status, 200);
}

TEST_F(ServerTest, BadListenersAreRefused) {
  std::string long_path = dir_ + "/" + std::string(120, 's') + ".sock";
  HttpServer too_long(UnixOnly(long_path), Answer);
  EXPECT_EQ(too_long.Start().code(), absl::StatusCode::kInvalidArgument);

  std::string regular = dir_ + "/file";
  std::ofstream(regular) << "data";
  HttpServer not_socket(UnixOnly(regular), Answer);
  EXPECT_EQ(not_socket.Start().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(access(regular.c_str(), F_OK), 0) << "a regular file must not be removed";

  HttpServerOptions by_name;
  by_name.listeners.push_back({Listener::Kind::kTcp, "example.invalid:0", 0});
  HttpServer named(by_name, Answer);
  EXPECT_EQ(named.Start().code(), absl::StatusCode::kInvalidArgument);

  StartServer();
  HttpServerOptions taken;
  // A unix listener first: a later failure must clean it up again.
  std::string first_path = dir_ + "/first.sock";
  taken.listeners.push_back({Listener::Kind::kUnix, first_path, 0660});
  taken.listeners.push_back({Listener::Kind::kTcp, "127.0.0.1:" + std::to_string(port_), 0});
  HttpServer busy(taken, Answer);
  absl::Status status = busy.Start();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(status.message()), HasSubstr("127.0.0.1:" + std::to_string(port_)));
  EXPECT_NE(access(first_path.c_str(), F_OK), 0);
}

TEST_F(ServerTest, PortZeroPicksAFreePortAndLocalhostWorks) {
  StartServer([](HttpServerOptions& o) {
    o.listeners.push_back({Listener::Kind::kTcp, "localhost:0", 0});
  });
  EXPECT_EQ(server_->tcp_port(0), 0);  // the unix listener
  EXPECT_NE(server_->tcp_port(1), 0);
  EXPECT_NE(server_->tcp_port(2), 0);
  EXPECT_NE(server_->tcp_port(1), server_->tcp_port(2));
  EXPECT_EQ(server_->tcp_port(99), 0);
  CurlResult result =
      CurlRequest("http://127.0.0.1:" + std::to_string(server_->tcp_port(2)) + "/echo", "");
  EXPECT_EQ(result.status, 200);
}

TEST(HttpServerIpv6Test, BracketedIpv6Loopback) {
  HttpServerOptions options;
  options.listeners.push_back({Listener::Kind::kTcp, "[::1]:0", 0});
  HttpServer server(options, Answer);
  absl::Status status = server.Start();
  if (!status.ok()) GTEST_SKIP() << "no IPv6 loopback here: " << status;
  ASSERT_NE(server.tcp_port(0), 0);
  CurlResult result = CurlRequest("http://[::1]:" + std::to_string(server.tcp_port(0)) + "/", "");
  EXPECT_EQ(result.status, 200);
  EXPECT_EQ(result.body, "ok");
}

TEST_F(ServerTest, StopWithOpenConnectionsAndPendingHandlerReturnsPromptly) {
  StartServer();
  auto idle = RawClient::ConnectTcp(port_);
  auto partial = RawClient::ConnectUnix(socket_path_);
  auto pending = RawClient::ConnectUnix(socket_path_);
  ASSERT_TRUE(idle && partial && pending);
  ASSERT_TRUE(partial->Send("POST /echo HTTP/1.1\r\nContent-Length: 50\r\n\r\nabc"));
  ASSERT_TRUE(pending->Send("GET /hold HTTP/1.1\r\n\r\n"));
  ASSERT_TRUE(WaitHeld(1));

  auto start = Clock::now();
  server_->Stop();
  EXPECT_LT(Clock::now() - start, 1s);
  EXPECT_EQ(server_->connection_count(), 0u);
  EXPECT_NE(access(socket_path_.c_str(), F_OK), 0) << "socket file left behind";
  EXPECT_TRUE(idle->WaitClosed(kTimeout));
  EXPECT_TRUE(pending->WaitClosed(kTimeout));
  {
    absl::MutexLock lock(&mu_);
    EXPECT_EQ(on_close_calls_, 1);  // the pending request learns its peer is gone
    EXPECT_TRUE(held_[0]->closed());
    held_[0]->Send(200, "text/plain", "too late");  // a no-op, not a crash
  }
  server_->Post([] { FAIL() << "posted work must be dropped after Stop()"; });
  server_->Stop();  // idempotent
}

TEST(HttpServerLifecycleTest, StopWithoutStartAndDoubleStart) {
  char dir[] = "/tmp/tokenmill-http-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  std::string path = std::string(dir) + "/s.sock";
  {
    HttpServer never(UnixOnly(path), Answer);
    never.Stop();
  }
  HttpServer server(UnixOnly(path), Answer);
  ASSERT_TRUE(server.Start().ok());
  EXPECT_EQ(server.Start().code(), absl::StatusCode::kFailedPrecondition);
  server.Stop();
  EXPECT_EQ(server.Start().code(), absl::StatusCode::kFailedPrecondition);
  rmdir(dir);
}

}  // namespace
}  // namespace tokenmill::http::testing
