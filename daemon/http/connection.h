// Connection: one accepted HTTP/1.1 connection (TCP or unix socket) on the
// server's loop thread. Parses requests with http-parser, hands them to the
// handler one at a time (pipelined requests wait in a buffer and are answered
// in order), enforces the size and time limits, and writes responses.
//
// Lifetime: owned by the server through a shared_ptr; writers hold weak_ptrs.
// Close() starts closing the uv handles; when the last close callback fires
// the connection reports itself through ConnectionContext::on_closed, which
// drops the owning reference. Everything here runs on the loop thread.
#pragma once

#include <http_parser.h>
#include <uv.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "daemon/http/http_server.h"
#include "daemon/http/loop_task_queue.h"
#include "daemon/http/response.h"

namespace tokenmill::http {

class Connection;

// Settings and shared state that every connection of one server reads.
struct ConnectionContext {
  uint64_t max_header_bytes = 16 << 10;
  uint64_t max_body_bytes = 4 << 20;
  // Bytes a connection may buffer while its current request is answered.
  uint64_t max_buffered_bytes = (16 << 10) + (4 << 20);
  // Bytes queued for a peer that does not read; past this it is cut off.
  uint64_t max_queued_write_bytes = 16 << 20;
  // Bytes queued over all open connections (closed ones leave the count at
  // Close()), and the most that may be; past it on_output_over_budget runs.
  // Atomic only so that other threads may read it; the loop thread writes.
  std::atomic<uint64_t> queued_write_bytes_total{0};
  uint64_t max_queued_write_bytes_total = 64 << 20;
  std::function<void()> on_output_over_budget;
  uint64_t idle_timeout_ms = 30000;  // 0: no timeout
  // How long a connection closing after its last response may still flush
  // and wait for the peer's EOF.
  uint64_t linger_ms = 2000;
  Handler handler;
  std::shared_ptr<LoopTaskQueue> loop;
  std::function<void(Connection*)> on_closed;
  // One read buffer for all connections: libuv calls alloc and read back to
  // back on the loop thread, and reads are copied out at once.
  std::array<char, 64 << 10> read_buffer;
};

// Storage for either kind of stream handle; libuv handles share a common
// prefix, so the stream and handle views are valid for both.
union StreamHandle {
  uv_handle_t handle;
  uv_stream_t stream;
  uv_tcp_t tcp;
  uv_pipe_t pipe;
};

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  explicit Connection(ConnectionContext& context);
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Accepts a pending connection from `server`, which listens as `spec`
  // (listener number `index`), notes the peer and starts reading. On any
  // failure the connection closes itself (on_closed follows).
  void Open(uv_stream_t* server, const Listener& spec, size_t index);
  // Closes at once, dropping unsent bytes; a response in progress sees its
  // peer gone. Idempotent.
  void Close();
  // True while responses can still be written.
  bool writable() const { return state_ == State::kOpen; }
  // Bytes handed to libuv and not yet written to the peer; 0 once closing.
  uint64_t queued_write_bytes() const { return queued_write_bytes_; }
  // The listener and peer, as every request of this connection reports them.
  const RequestOrigin& origin() const { return origin_; }
  // "tcp:127.0.0.1:8080" or "unix:/run/tokenmill/tokenmill.sock" (logs).
  const std::string& listener_name() const { return listener_name_; }
  // Logs why a peer that does not read is dropped, then closes.
  void DropSlowReader(std::string_view reason);

  // Used by ConnectionResponseWriter.
  void WriteBytes(std::string data);
  // Runs fn once when at most `bytes` are queued for the peer (now, if so);
  // dropped when the connection closes. Replaces an earlier one.
  void WhenQueuedAtMost(uint64_t bytes, std::function<void()> fn);
  // The response to request `id` is complete; close the connection after it
  // when `close`, otherwise go on with the next request.
  void FinishResponse(uint64_t id, bool close);
  // The writer of request `id` was dropped: answer 500, or close when part of
  // a response was already sent.
  void AbandonResponse(uint64_t id, bool started);

 private:
  enum class State { kOpen, kDraining, kClosing };
  struct PendingWrite;

  static void OnAlloc(uv_handle_t* handle, size_t suggested, uv_buf_t* buf);
  static void OnRead(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf);
  static void OnWriteDone(uv_write_t* req, int status);
  static void OnShutdown(uv_shutdown_t* req, int status);
  static void OnTimer(uv_timer_t* timer);
  static void OnHandleClosed(uv_handle_t* handle);

  // http-parser callbacks.
  static int OnMessageBegin(http_parser* parser);
  static int OnUrl(http_parser* parser, const char* at, size_t length);
  static int OnHeaderField(http_parser* parser, const char* at, size_t length);
  static int OnHeaderValue(http_parser* parser, const char* at, size_t length);
  static int OnHeadersComplete(http_parser* parser);
  static int OnBody(http_parser* parser, const char* at, size_t length);
  static int OnMessageComplete(http_parser* parser);
  static const http_parser_settings kParserSettings;

  void HandleRead(ssize_t nread, const char* data);
  void HandleTimeout();
  void ProcessInput();
  void Dispatch();
  void RejectRequest(http_errno error);
  void SendErrorAndClose(int status, std::string_view type, std::string_view message);
  void CloseAfterWrite();
  void ArmTimer(uint64_t ms);
  bool HeadWithinLimit();
  void FlushHeader();
  int CheckHeadersComplete();

  ConnectionContext& context_;
  StreamHandle stream_{};
  uv_timer_t timer_{};
  uv_shutdown_t shutdown_req_{};
  int open_handles_ = 0;
  State state_ = State::kOpen;

  http_parser parser_{};
  std::string input_;     // received bytes the parser has not consumed
  size_t input_pos_ = 0;  // first unconsumed byte of input_
  bool in_process_input_ = false;

  // The request being parsed.
  HttpRequest request_;
  std::string url_;
  std::string header_name_;
  std::string header_value_;
  bool in_header_value_ = false;
  bool headers_done_ = false;
  uint64_t head_bytes_ = 0;
  int error_status_ = 0;          // 400 (version), 413 or 431 decided inside a parser callback
  bool request_started_ = false;  // first byte seen, not yet dispatched
  ResponseContext next_response_;

  // The request being answered.
  bool busy_ = false;
  ResponseContext current_response_;
  std::weak_ptr<ConnectionResponseWriter> active_writer_;
  uint64_t request_seq_ = 0;

  uint64_t queued_write_bytes_ = 0;
  RequestOrigin origin_;
  std::string listener_name_;
  uint64_t writable_at_ = 0;
  std::function<void()> on_writable_;
};

}  // namespace tokenmill::http
