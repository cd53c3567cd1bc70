// Fuzzes the HTTP request path of the daemon's server: the input is sent as
// raw bytes over a unix socket to a real HttpServer (libuv loop thread,
// http-parser, the size limits), which parses it into requests and answers
// each through the same ResponseWriter paths the APIs use (Send now, Send
// later from Post(), a chunked stream). The client then half-closes, reads
// until the server closes, and waits for the server to free the connection,
// so that each input's allocations are settled before the next one (leak
// detection counts them).
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "daemon/http/http_server.h"

namespace {

using tokenmill::http::HttpRequest;
using tokenmill::http::HttpServer;
using tokenmill::http::ResponseWriterPtr;

[[noreturn]] void Fatal(const char* what) {
  std::fprintf(stderr, "fuzz_http_request: %s: %s\n", what, std::strerror(errno));
  std::abort();
}

// The server and its socket path, made once and never destroyed (the loop
// thread runs until the process exits).
struct Fixture {
  HttpServer* server = nullptr;
  std::string socket_path;
};

void Answer(const HttpRequest& request, const ResponseWriterPtr& response) {
  std::string summary =
      absl::StrCat(request.method, " ", request.path, "?", request.query, " ",
                   request.headers.size(), " headers, ", request.body.size(),
                   " body bytes, host=", std::string(request.Header("host")), "\n");
  if (request.path == "/stream") {
    response->Start(200, "text/event-stream");
    response->Write("data: " + summary);
    response->Write("data: [DONE]\n\n");
    response->End();
  } else {
    response->Send(200, "text/plain", std::move(summary), {{"x-fuzz", "1"}});
  }
}

const Fixture& GetFixture() {
  static const Fixture* fixture = [] {
    auto* f = new Fixture;
    char dir[] = "/tmp/tokenmill-fuzz-http.XXXXXX";
    if (mkdtemp(dir) == nullptr) Fatal("mkdtemp");
    f->socket_path = std::string(dir) + "/http.sock";
    tokenmill::http::HttpServerOptions options;
    options.listeners.push_back({tokenmill::http::Listener::Kind::kUnix, f->socket_path, 0600});
    // Small limits, so that inputs of a few KiB reach the 413 and 431 paths.
    options.max_header_bytes = 1024;
    options.max_body_bytes = 2048;
    options.idle_timeout = std::chrono::milliseconds(5000);
    f->server = new HttpServer(options, [f](HttpRequest request, ResponseWriterPtr response) {
      if (request.method == "POST") {
        // Answered later from the loop, as handlers that wait for work do.
        f->server->Post([request = std::move(request), response = std::move(response)] {
          Answer(request, response);
        });
      } else {
        Answer(request, response);
      }
    });
    if (absl::Status s = f->server->Start(); !s.ok()) {
      std::fprintf(stderr, "fuzz_http_request: %s\n", s.ToString().c_str());
      std::abort();
    }
    return f;
  }();
  return *fixture;
}

int Connect(const std::string& path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) Fatal("socket");
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) Fatal("connect");
  return fd;
}

// Reads until the server closes. A server that keeps a half-closed
// connection open for longer than its idle timeout is a finding.
void DrainUntilClosed(int fd) {
  char buffer[16 << 10];
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (true) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      std::fprintf(stderr, "fuzz_http_request: server kept the connection open\n");
      std::abort();
    }
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left.count())) < 0) {
      if (errno == EINTR) continue;
      Fatal("poll");
    }
    ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
    if (n == 0) return;
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      if (errno == ECONNRESET) return;
      Fatal("recv");
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Fixture& f = GetFixture();
  int fd = Connect(f.socket_path);
  size_t sent = 0;
  while (sent < size) {
    ssize_t n = send(fd, data + sent, size - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // the server closed on a bad request: the rest is moot
    sent += static_cast<size_t>(n);
  }
  shutdown(fd, SHUT_WR);
  DrainUntilClosed(fd);
  close(fd);
  // The server frees the connection on its loop thread after its close
  // callbacks; wait for that (a condition, with a deadline).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (f.server->connection_count() != 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      std::fprintf(stderr, "fuzz_http_request: a closed connection was never freed\n");
      std::abort();
    }
    std::this_thread::yield();
  }
  return 0;
}
