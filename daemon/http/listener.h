// ListenSocket: one bound, listening unix or TCP socket on the server's loop.
#pragma once

#include <sys/types.h>
#include <uv.h>

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "daemon/http/connection.h"
#include "daemon/http/http_server.h"

namespace tokenmill::http {

class ListenSocket {
 public:
  // Called on the loop thread for every connection waiting to be accepted.
  using AcceptFn = std::function<void(uv_stream_t* server)>;

  ListenSocket(uv_loop_t* loop, AcceptFn on_accept);
  // The handle must be closed and its close callback run (the loop ran)
  // before destruction.
  ~ListenSocket() = default;
  ListenSocket(const ListenSocket&) = delete;
  ListenSocket& operator=(const ListenSocket&) = delete;

  // Binds and listens. Unix: a stale socket file is replaced, a live one is
  // kFailedPrecondition, a path too long is kInvalidArgument, then the file
  // gets spec.unix_mode. TCP: IP literals and "localhost"; bind failures are
  // kUnavailable. On failure Close() still has to be called.
  absl::Status Bind(const Listener& spec);
  // uv_close()s the handle if it was opened. Idempotent.
  void Close();
  // Removes the socket file if it is still the one this listener created.
  void RemoveSocketFile();
  // Bound TCP port; 0 for unix sockets.
  uint16_t port() const { return port_; }

 private:
  static void OnConnection(uv_stream_t* server, int status);
  absl::Status BindUnix(const Listener& spec);
  absl::Status BindTcp(const Listener& spec);

  uv_loop_t* loop_;
  AcceptFn on_accept_;
  StreamHandle handle_{};
  bool open_ = false;
  uint16_t port_ = 0;
  std::string socket_path_;  // set once this listener created the file
  dev_t socket_dev_ = 0;
  ino_t socket_ino_ = 0;
};

}  // namespace tokenmill::http
