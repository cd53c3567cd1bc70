#include "daemon/http/connection.h"

#include <sys/socket.h>

#include <exception>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace tokenmill::http {

namespace {

Connection* FromParser(http_parser* parser) { return static_cast<Connection*>(parser->data); }

// The process behind an accepted unix socket, or nullopt when the kernel
// does not say.
std::optional<PeerCredentials> UnixPeerCredentials(uv_stream_t* stream) {
  uv_os_fd_t fd = -1;
  if (uv_fileno(reinterpret_cast<uv_handle_t*>(stream), &fd) != 0) return std::nullopt;
  ucred cred{};
  socklen_t length = sizeof(cred);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &length) != 0 || length != sizeof(cred)) {
    return std::nullopt;
  }
  return PeerCredentials{cred.pid, cred.uid, cred.gid};
}

// "ip:port" or "[ip6]:port" of a TCP peer; "" when unknown.
std::string TcpPeerName(uv_tcp_t* tcp) {
  sockaddr_storage addr{};
  int length = sizeof(addr);
  if (uv_tcp_getpeername(tcp, reinterpret_cast<sockaddr*>(&addr), &length) != 0) return "";
  char host[64] = {};
  if (addr.ss_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&addr);
    uv_ip6_name(in6, host, sizeof(host));
    return absl::StrCat("[", host, "]:", ntohs(in6->sin6_port));
  }
  const auto* in4 = reinterpret_cast<const sockaddr_in*>(&addr);
  uv_ip4_name(in4, host, sizeof(host));
  return absl::StrCat(host, ":", ntohs(in4->sin_port));
}

}  // namespace

// A write in flight: the bytes must stay alive until libuv reports back.
struct Connection::PendingWrite {
  uv_write_t req;
  std::string data;
  size_t size;  // bytes handed to uv_write (data minus what uv_try_write sent)
};

const http_parser_settings Connection::kParserSettings = {
    .on_message_begin = &Connection::OnMessageBegin,
    .on_url = &Connection::OnUrl,
    .on_status = nullptr,
    .on_header_field = &Connection::OnHeaderField,
    .on_header_value = &Connection::OnHeaderValue,
    .on_headers_complete = &Connection::OnHeadersComplete,
    .on_body = &Connection::OnBody,
    .on_message_complete = &Connection::OnMessageComplete,
    .on_chunk_header = nullptr,
    .on_chunk_complete = nullptr,
};

Connection::Connection(ConnectionContext& context) : context_(context) {
  http_parser_init(&parser_, HTTP_REQUEST);
  parser_.data = this;
}

void Connection::Open(uv_stream_t* server, const Listener& spec, size_t index) {
  const Listener::Kind kind = spec.kind;
  origin_.listener = index;
  origin_.role = spec.role;
  listener_name_ = absl::StrCat(kind == Listener::Kind::kTcp ? "tcp:" : "unix:", spec.address);
  uv_timer_init(server->loop, &timer_);  // cannot fail
  timer_.data = this;
  ++open_handles_;
  int rc = kind == Listener::Kind::kTcp ? uv_tcp_init(server->loop, &stream_.tcp)
                                        : uv_pipe_init(server->loop, &stream_.pipe, 0);
  if (rc != 0) {
    // Only the timer is open: close it alone.
    state_ = State::kClosing;
    uv_close(reinterpret_cast<uv_handle_t*>(&timer_), &Connection::OnHandleClosed);
    return;
  }
  stream_.handle.data = this;
  ++open_handles_;
  if (uv_accept(server, &stream_.stream) != 0 ||
      uv_read_start(&stream_.stream, &Connection::OnAlloc, &Connection::OnRead) != 0) {
    Close();
    return;
  }
  if (kind == Listener::Kind::kTcp) {
    // Small SSE chunks must not wait for Nagle.
    uv_tcp_nodelay(&stream_.tcp, 1);
    origin_.peer = TcpPeerName(&stream_.tcp);
  } else {
    origin_.credentials = UnixPeerCredentials(&stream_.stream);
  }
  ArmTimer(context_.idle_timeout_ms);
}

void Connection::Close() {
  if (state_ == State::kClosing) return;
  state_ = State::kClosing;
  busy_ = false;
  // Closing cancels the queued writes: they leave the server's count now, so
  // that a server over its output budget does not pick this one again.
  context_.queued_write_bytes_total -= queued_write_bytes_;
  queued_write_bytes_ = 0;
  uv_close(&stream_.handle, &Connection::OnHandleClosed);
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), &Connection::OnHandleClosed);
  on_writable_ = nullptr;
  std::shared_ptr<ConnectionResponseWriter> writer = active_writer_.lock();
  active_writer_.reset();
  if (writer) writer->PeerGone();
}

void Connection::OnHandleClosed(uv_handle_t* handle) {
  auto* self = static_cast<Connection*>(handle->data);
  if (--self->open_handles_ == 0) {
    // May destroy *self: nothing may follow.
    self->context_.on_closed(self);
  }
}

void Connection::ArmTimer(uint64_t ms) {
  if (state_ == State::kClosing) return;
  if (ms == 0) {
    uv_timer_stop(&timer_);
  } else {
    uv_timer_start(&timer_, &Connection::OnTimer, ms, 0);
  }
}

void Connection::OnTimer(uv_timer_t* timer) {
  static_cast<Connection*>(timer->data)->HandleTimeout();
}

void Connection::HandleTimeout() {
  switch (state_) {
    case State::kClosing:
      return;
    case State::kDraining:
      Close();
      return;
    case State::kOpen:
      if (busy_) return;  // the timer is stopped while answering; stale tick
      if (request_started_) {
        SendErrorAndClose(
            408, "request_timeout",
            absl::StrCat("request not complete within ", context_.idle_timeout_ms, " ms"));
      } else {
        Close();  // idle keep-alive connection: silently
      }
      return;
  }
}

// Reading --------------------------------------------------------------------

void Connection::OnAlloc(uv_handle_t* handle, size_t, uv_buf_t* buf) {
  auto* self = static_cast<Connection*>(handle->data);
  *buf = uv_buf_init(self->context_.read_buffer.data(), self->context_.read_buffer.size());
}

void Connection::OnRead(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
  static_cast<Connection*>(stream->data)->HandleRead(nread, buf->base);
}

void Connection::HandleRead(ssize_t nread, const char* data) {
  if (nread == 0) return;  // EAGAIN
  if (nread < 0) {
    // EOF or error: the peer is gone (half-closed peers are not supported).
    Close();
    return;
  }
  if (state_ != State::kOpen) return;  // draining: discard what still comes
  size_t buffered = input_.size() - input_pos_;
  if (busy_ && buffered + static_cast<size_t>(nread) > context_.max_buffered_bytes) {
    Close();  // pipelining far past what one request may hold
    return;
  }
  input_.append(data, static_cast<size_t>(nread));
  ProcessInput();
}

void Connection::ProcessInput() {
  if (in_process_input_) return;  // a handler answered synchronously; the outer loop goes on
  in_process_input_ = true;
  while (state_ == State::kOpen && !busy_ && input_pos_ < input_.size()) {
    size_t available = input_.size() - input_pos_;
    size_t parsed =
        http_parser_execute(&parser_, &kParserSettings, input_.data() + input_pos_, available);
    input_pos_ += parsed;
    auto error = static_cast<http_errno>(HTTP_PARSER_ERRNO(&parser_));
    if (error == HPE_PAUSED) {  // paused by OnMessageComplete: one request is ready
      http_parser_pause(&parser_, 0);
      Dispatch();
    } else if (error != HPE_OK) {
      RejectRequest(error);
    } else if (parsed < available) {
      Close();  // the parser stopped without saying why; do not spin
    }
  }
  if (input_pos_ == input_.size()) {
    input_.clear();
    input_pos_ = 0;
  } else if (input_pos_ > (64u << 10)) {
    input_.erase(0, input_pos_);
    input_pos_ = 0;
  }
  in_process_input_ = false;
}

// Parsing ---------------------------------------------------------------------

bool Connection::HeadWithinLimit() {
  if (head_bytes_ <= context_.max_header_bytes) return true;
  error_status_ = 431;
  return false;
}

void Connection::FlushHeader() {
  if (header_name_.empty()) return;
  absl::AsciiStrToLower(&header_name_);
  request_.headers.emplace_back(std::move(header_name_), std::move(header_value_));
  header_name_.clear();
  header_value_.clear();
}

int Connection::OnMessageBegin(http_parser* parser) {
  Connection* self = FromParser(parser);
  self->request_ = HttpRequest();
  self->url_.clear();
  self->header_name_.clear();
  self->header_value_.clear();
  self->in_header_value_ = false;
  self->headers_done_ = false;
  self->head_bytes_ = 16;  // request line framing: spaces, "HTTP/1.1", CRLF
  self->error_status_ = 0;
  // The deadline runs from the first byte and is not pushed back by later
  // ones, so a client trickling bytes cannot hold the connection.
  self->request_started_ = true;
  self->ArmTimer(self->context_.idle_timeout_ms);
  return 0;
}

int Connection::OnUrl(http_parser* parser, const char* at, size_t length) {
  Connection* self = FromParser(parser);
  self->head_bytes_ += length;
  if (!self->HeadWithinLimit()) return 1;
  self->url_.append(at, length);
  return 0;
}

int Connection::OnHeaderField(http_parser* parser, const char* at, size_t length) {
  Connection* self = FromParser(parser);
  self->head_bytes_ += length;
  if (!self->HeadWithinLimit()) return 1;
  if (self->headers_done_) return 0;  // chunked trailers are counted, not kept
  if (self->in_header_value_) {
    self->FlushHeader();
    self->in_header_value_ = false;
  }
  if (self->header_name_.empty()) self->head_bytes_ += 4;  // ": " and CRLF
  self->header_name_.append(at, length);
  return 0;
}

int Connection::OnHeaderValue(http_parser* parser, const char* at, size_t length) {
  Connection* self = FromParser(parser);
  self->head_bytes_ += length;
  if (!self->HeadWithinLimit()) return 1;
  if (self->headers_done_) return 0;
  self->in_header_value_ = true;
  self->header_value_.append(at, length);
  return 0;
}

int Connection::OnHeadersComplete(http_parser* parser) {
  return FromParser(parser)->CheckHeadersComplete();
}

int Connection::CheckHeadersComplete() {
  FlushHeader();
  in_header_value_ = false;
  headers_done_ = true;
  request_.method = http_method_str(static_cast<http_method>(parser_.method));
  size_t query_at = url_.find('?');
  if (query_at == std::string::npos) {
    request_.path = url_;
  } else {
    request_.path = url_.substr(0, query_at);
    request_.query = url_.substr(query_at + 1);
  }
  if (parser_.http_major != 1) {
    error_status_ = 400;  // HTTP/0.9 or a version from the future: not ours to guess
    return -1;
  }
  bool http10 = parser_.http_minor == 0;
  next_response_.head = request_.method == "HEAD";
  next_response_.http10 = http10;
  next_response_.keep_alive = http_should_keep_alive(&parser_) != 0;

  bool chunked = (parser_.flags & F_CHUNKED) != 0;
  bool has_length = !chunked && (parser_.flags & F_CONTENTLENGTH) != 0;
  if (has_length && parser_.content_length > context_.max_body_bytes) {
    error_status_ = 413;  // decided before reading any of the body
    return -1;
  }
  if (has_length) request_.body.reserve(parser_.content_length);
  // curl waits up to a second for this before sending bodies over 1 KiB.
  if (!http10 && (chunked || (has_length && parser_.content_length > 0)) &&
      absl::EqualsIgnoreCase(std::string(request_.Header("expect")), "100-continue")) {
    WriteBytes("HTTP/1.1 100 Continue\r\n\r\n");
  }
  return 0;
}

int Connection::OnBody(http_parser* parser, const char* at, size_t length) {
  Connection* self = FromParser(parser);
  if (self->request_.body.size() + length > self->context_.max_body_bytes) {
    self->error_status_ = 413;  // chunked bodies learn their size only here
    return 1;
  }
  self->request_.body.append(at, length);
  return 0;
}

int Connection::OnMessageComplete(http_parser* parser) {
  Connection* self = FromParser(parser);
  // An upgrade (or CONNECT) would switch protocols; answer, then close.
  if (parser->upgrade) self->next_response_.keep_alive = false;
  // Stop here so that one request at a time goes to the handler; the bytes
  // after it stay in input_ until the response is done.
  http_parser_pause(parser, 1);
  return 0;
}

void Connection::RejectRequest(http_errno error) {
  if (error_status_ == 413) {
    SendErrorAndClose(413, "payload_too_large",
                      absl::StrCat("request body exceeds ", context_.max_body_bytes, " bytes"));
  } else if (error_status_ == 431 || error == HPE_HEADER_OVERFLOW) {
    SendErrorAndClose(
        431, "headers_too_large",
        absl::StrCat("request line and headers exceed ", context_.max_header_bytes, " bytes"));
  } else if (error_status_ == 400) {
    SendErrorAndClose(400, "bad_request",
                      absl::StrCat("unsupported HTTP version ", parser_.http_major, ".",
                                   parser_.http_minor, "; HTTP/1.0 and HTTP/1.1 are served"));
  } else {
    SendErrorAndClose(400, "bad_request",
                      absl::StrCat("malformed request: ", http_errno_description(error)));
  }
}

// Answering -------------------------------------------------------------------

void Connection::Dispatch() {
  busy_ = true;
  request_started_ = false;
  // A slow handler or a long stream is not idleness.
  uv_timer_stop(&timer_);
  current_response_ = next_response_;
  current_response_.id = ++request_seq_;
  auto writer = std::make_shared<ConnectionResponseWriter>(weak_from_this(), context_.loop,
                                                           current_response_);
  active_writer_ = writer;
  HttpRequest request = std::move(request_);
  request_ = HttpRequest();
  request.origin = origin_;
  uint64_t id = current_response_.id;
  std::string failure;
  if (!context_.handler) {
    failure = "no handler installed";
  } else {
    // The handler is the caller's code: an exception must not unwind the loop.
    try {
      context_.handler(std::move(request), writer);
    } catch (const std::exception& e) {
      failure = e.what();
    } catch (...) {
      failure = "unknown exception";
    }
  }
  if (!failure.empty() && busy_ && request_seq_ == id) {
    if (!writer->answered()) {
      writer->Send(500, "application/json", ErrorJson("internal_error", failure));
    } else {
      Close();  // part of a response is out; truncate it visibly
    }
  }
  // Dropping the last reference here makes an unanswered writer call
  // AbandonResponse().
}

void Connection::FinishResponse(uint64_t id, bool close) {
  if (state_ != State::kOpen || !busy_ || id != request_seq_) return;
  busy_ = false;
  active_writer_.reset();
  if (close) {
    CloseAfterWrite();
    return;
  }
  ArmTimer(context_.idle_timeout_ms);  // a buffered next request re-arms on its first byte
  ProcessInput();
}

void Connection::AbandonResponse(uint64_t id, bool started) {
  if (state_ != State::kOpen || !busy_ || id != request_seq_) return;
  if (started) {
    Close();
    return;
  }
  ConnectionResponseWriter writer(weak_from_this(), context_.loop, current_response_);
  writer.Send(500, "application/json",
              ErrorJson("internal_error", "the request was dropped without an answer"));
}

void Connection::SendErrorAndClose(int status, std::string_view type, std::string_view message) {
  std::string body = ErrorJson(type, message);
  std::string out = FormatResponseHead(status, "application/json",
                                       static_cast<int64_t>(body.size()), false, false, {});
  out += body;
  WriteBytes(std::move(out));
  CloseAfterWrite();
}

void Connection::CloseAfterWrite() {
  if (state_ != State::kOpen) return;
  state_ = State::kDraining;
  // Flush, send FIN, then keep reading (and discarding) until the peer's EOF:
  // closing with unread input would reset the connection and could destroy
  // the error response before the peer reads it.
  ArmTimer(context_.linger_ms);
  shutdown_req_.data = this;
  if (uv_shutdown(&shutdown_req_, &stream_.stream, &Connection::OnShutdown) != 0) Close();
}

void Connection::OnShutdown(uv_shutdown_t* req, int status) {
  auto* self = static_cast<Connection*>(req->data);
  if (status < 0 && self->state_ != State::kClosing) self->Close();
}

// Writing ---------------------------------------------------------------------

void Connection::WriteBytes(std::string data) {
  if (state_ != State::kOpen || data.empty()) return;
  size_t offset = 0;
  if (queued_write_bytes_ == 0) {
    // Most responses fit the socket buffer: skip the request allocation.
    uv_buf_t buf = uv_buf_init(data.data(), data.size());
    int written = uv_try_write(&stream_.stream, &buf, 1);
    if (written >= 0) {
      offset = static_cast<size_t>(written);
    } else if (written != UV_EAGAIN) {
      Close();
      return;
    }
    if (offset == data.size()) return;
  }
  auto* pending = new PendingWrite{uv_write_t{}, std::move(data), 0};
  pending->size = pending->data.size() - offset;
  pending->req.data = pending;
  uv_buf_t buf = uv_buf_init(pending->data.data() + offset, pending->size);
  if (uv_write(&pending->req, &stream_.stream, &buf, 1, &Connection::OnWriteDone) != 0) {
    delete pending;
    Close();
    return;
  }
  queued_write_bytes_ += pending->size;
  context_.queued_write_bytes_total += pending->size;
  if (queued_write_bytes_ > context_.max_queued_write_bytes) {
    DropSlowReader("connection_queue_full");
    return;
  }
  if (context_.queued_write_bytes_total > context_.max_queued_write_bytes_total &&
      context_.on_output_over_budget) {
    context_.on_output_over_budget();  // may close this connection too
  }
}

void Connection::DropSlowReader(std::string_view reason) {
  if (state_ == State::kClosing) return;
  const uint64_t queued = queued_write_bytes_;
  Close();
  spdlog::warn(
      "slow_reader_dropped reason={} listener={} role={} peer={} queued_bytes={} "
      "connection_limit_bytes={} server_queued_bytes={} server_limit_bytes={}",
      reason, listener_name_, ToString(origin_.role), PeerName(origin_), queued,
      context_.max_queued_write_bytes, context_.queued_write_bytes_total + queued,
      context_.max_queued_write_bytes_total);
}

void Connection::WhenQueuedAtMost(uint64_t bytes, std::function<void()> fn) {
  if (state_ != State::kOpen) return;
  if (queued_write_bytes_ <= bytes) {
    on_writable_ = nullptr;
    fn();
    return;
  }
  writable_at_ = bytes;
  on_writable_ = std::move(fn);
}

void Connection::OnWriteDone(uv_write_t* req, int status) {
  auto* pending = static_cast<PendingWrite*>(req->data);
  // Write callbacks (cancelled ones included) run before the close callback,
  // so the connection is still alive here.
  auto* self = static_cast<Connection*>(req->handle->data);
  // Once closing, Close() took the connection's whole queue off the counts.
  if (self->state_ != State::kClosing) {
    self->queued_write_bytes_ -= pending->size;
    self->context_.queued_write_bytes_total -= pending->size;
  }
  delete pending;
  if (status < 0 && status != UV_ECANCELED) {
    self->Close();
  } else if (self->on_writable_ && self->state_ == State::kOpen &&
             self->queued_write_bytes_ <= self->writable_at_) {
    std::function<void()> fn = std::move(self->on_writable_);
    self->on_writable_ = nullptr;
    fn();
  }
}

}  // namespace tokenmill::http
