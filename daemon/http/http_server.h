// HttpServer: HTTP/1.1 over unix sockets and TCP, served from one libuv loop
// thread. Parsing by http-parser; no TLS (local socket / loopback / behind a
// proxy).
//
// Threading: the server owns one loop thread. Handlers run on it and must not
// block. A handler answers through its ResponseWriter, now or later; the
// writer may only be used on the loop thread, so work finished elsewhere
// comes back with Post(). Everything else is safe from any thread.
//
// Limits: heads over max_header_bytes get 431, bodies over max_body_bytes get
// 413, bad requests get 400, a connection that does not complete a request
// within idle_timeout (trickling or silent) is closed (408 when a request was
// begun). Each listener has its own connection budget (Listener::
// max_connections): past it, that listener's new connections are closed at
// once, so clients of one listener cannot lock out another's. Output queued
// for peers that do not read is bounded per connection (16 MiB) and for the
// whole server (max_buffered_output_bytes): past the server budget the
// connection with the most queued bytes is dropped and logged.
#pragma once

#include <sys/types.h>
#include <chrono>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tokenmill::http {

struct Listener {
  enum class Kind { kUnix, kTcp } kind = Kind::kUnix;
  std::string address;        // socket path, or "host:port" (port 0 = any free)
  uint32_t unix_mode = 0660;  // applied to the socket file
  // What the listener is for. The server only tags each request with it
  // (HttpRequest::origin); what a role may reach is the handler's decision.
  enum class Role {
    kLocal,    // the unix socket: every API; access is the socket file's mode
    kClient,   // a port for API clients (the OpenAI API)
    kControl,  // a port for operators (the control API, behind a token)
  } role = Role::kLocal;
  // Connections open on this listener at most; past it its new connections
  // are closed at once. Not shared with other listeners.
  uint32_t max_connections = 1024;
};

// "local", "client" or "control", as logs name a role.
std::string_view ToString(Listener::Role role);

// The process at the other end of a unix socket, as the kernel reported it
// when the connection was accepted (SO_PEERCRED).
struct PeerCredentials {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
};

// Where a request came from.
struct RequestOrigin {
  size_t listener = 0;  // index in HttpServerOptions::listeners
  Listener::Role role = Listener::Role::kLocal;
  std::string peer;                            // TCP: "ip:port" ("[ip6]:port"); unix: ""
  std::optional<PeerCredentials> credentials;  // unix sockets, when the kernel told
};

// The peer for logs: "ip:port" for TCP, "pid:P,uid:U,gid:G" for a unix
// socket, "unknown" when neither is known.
std::string PeerName(const RequestOrigin& origin);

struct HttpRequest {
  std::string method;                                        // "GET", "POST", ...
  std::string path;                                          // without the query
  std::string query;                                         // after '?', undecoded; "" when none
  std::vector<std::pair<std::string, std::string>> headers;  // names lowercased
  std::string body;
  RequestOrigin origin;  // set by the server for every request

  // First header with this (lowercase) name, or "".
  std::string_view Header(std::string_view lowercase_name) const;
};

// One response. Either Send() once, or Start() then Write()* then End() for a
// streamed (chunked) body such as SSE. Loop thread only.
class ResponseWriter {
 public:
  virtual ~ResponseWriter() = default;
  virtual void Send(int status, std::string_view content_type, std::string body,
                    std::vector<std::pair<std::string, std::string>> headers = {}) = 0;
  virtual void Start(int status, std::string_view content_type,
                     std::vector<std::pair<std::string, std::string>> headers = {}) = 0;
  virtual void Write(std::string chunk) = 0;
  virtual void End() = 0;
  // True once the peer is gone; writes are then dropped.
  virtual bool closed() const = 0;
  // Called once on the loop thread if the peer goes away before End()/Send()
  // (also when Stop() closes the connection, or when a peer that does not
  // read lets its output pile up past the per-connection or server budget). Runs at once if the
  // peer is already gone; may run inside a Write() that finds the peer gone.
  virtual void OnClose(std::function<void()> fn) = 0;
  // Runs fn once on the loop thread when at most max_queued_bytes of output
  // wait for the peer (at once when that is already so), so that a producer
  // of a long body paces itself by the peer's reading instead of piling it
  // up. A later call replaces an earlier fn. Never runs once the peer is
  // gone (OnClose does). Writers without an output queue run fn at once.
  virtual void OnWritable(uint64_t max_queued_bytes, std::function<void()> fn) {
    (void)max_queued_bytes;
    fn();
  }
};

// A writer dropped unanswered makes the server answer 500 (or, mid-stream,
// close the connection); dropping it on another thread is safe.
using ResponseWriterPtr = std::shared_ptr<ResponseWriter>;
using Handler = std::function<void(HttpRequest request, ResponseWriterPtr response)>;

struct HttpServerOptions {
  std::vector<Listener> listeners;
  uint64_t max_header_bytes = 16 << 10;
  uint64_t max_body_bytes = 4 << 20;
  std::chrono::milliseconds idle_timeout{30000};  // 0 = no timeout
  // Bytes queued for peers that do not read, over all connections; past it
  // the connection with the most queued bytes is dropped (and logged).
  uint64_t max_buffered_output_bytes = 64 << 20;
};

class HttpServer {
 public:
  // The handler gets every complete request; routing is the caller's.
  HttpServer(HttpServerOptions options, Handler handler);
  ~HttpServer();  // Stop()s
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds every listener (a stale unix socket file is replaced; one a live
  // server answers on is kFailedPrecondition) and starts the loop thread.
  absl::Status Start();
  // Closes listeners and connections, joins the loop thread; removes socket files.
  // Idempotent; a no-op before Start() or after a failed one. Called from a
  // handler it only begins the shutdown; the destructor then joins.
  void Stop();
  // Runs fn on the loop thread soon. Safe from any thread; dropped after Stop().
  void Post(std::function<void()> fn);
  // Bound TCP port of listener i (for port 0), or 0 for unix listeners. Valid
  // once Start() succeeded.
  uint16_t tcp_port(size_t listener_index) const;
  // Connections currently open, on all listeners.
  size_t connection_count() const;
  // Bytes now queued for peers over all connections (loop thread's count,
  // readable from any thread).
  uint64_t queued_output_bytes() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Splits "host:port" ("[::1]:80" for IPv6). kInvalidArgument when malformed.
absl::StatusOr<std::pair<std::string, uint16_t>> SplitHostPort(std::string_view address);

}  // namespace tokenmill::http
