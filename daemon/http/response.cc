#include "daemon/http/response.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "daemon/http/connection.h"

namespace tokenmill::http {

namespace {

// Bodies up to this size are copied behind the head to save a syscall.
constexpr size_t kCoalesceBytes = 64 << 10;

bool SafeHeaderText(std::string_view text) {
  return text.find_first_of(std::string_view("\r\n\0", 3)) == std::string_view::npos;
}

void AppendJsonString(std::string& out, std::string_view text) {
  out += '"';
  for (char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          absl::StrAppendFormat(&out, "\\u%04x", static_cast<unsigned char>(c));
        } else {
          out += c;
        }
    }
  }
  out += '"';
}

bool HasNoBody(int status) {
  return status == 204 || status == 304 || (status >= 100 && status < 200);
}

}  // namespace

std::string_view ReasonPhrase(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 101:
      return "Switching Protocols";
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 202:
      return "Accepted";
    case 204:
      return "No Content";
    case 206:
      return "Partial Content";
    case 301:
      return "Moved Permanently";
    case 302:
      return "Found";
    case 304:
      return "Not Modified";
    case 307:
      return "Temporary Redirect";
    case 308:
      return "Permanent Redirect";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 406:
      return "Not Acceptable";
    case 408:
      return "Request Timeout";
    case 409:
      return "Conflict";
    case 410:
      return "Gone";
    case 411:
      return "Length Required";
    case 412:
      return "Precondition Failed";
    case 413:
      return "Payload Too Large";
    case 414:
      return "URI Too Long";
    case 415:
      return "Unsupported Media Type";
    case 416:
      return "Range Not Satisfiable";
    case 417:
      return "Expectation Failed";
    case 422:
      return "Unprocessable Entity";
    case 425:
      return "Too Early";
    case 426:
      return "Upgrade Required";
    case 428:
      return "Precondition Required";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 499:
      return "Client Closed Request";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    case 505:
      return "HTTP Version Not Supported";
    case 507:
      return "Insufficient Storage";
    default:
      return "Unknown";
  }
}

std::string ErrorJson(std::string_view type, std::string_view message) {
  std::string out = "{\"error\":{\"type\":";
  AppendJsonString(out, type);
  out += ",\"message\":";
  AppendJsonString(out, message);
  out += "}}";
  return out;
}

std::string FormatResponseHead(int status, std::string_view content_type, int64_t content_length,
                               bool chunked, bool keep_alive, const HeaderList& headers) {
  std::string out =
      absl::StrCat("HTTP/1.1 ", status, " ", std::string(ReasonPhrase(status)), "\r\n");
  if (!content_type.empty() && SafeHeaderText(content_type)) {
    absl::StrAppend(&out, "Content-Type: ", std::string(content_type), "\r\n");
  }
  if (content_length >= 0) absl::StrAppend(&out, "Content-Length: ", content_length, "\r\n");
  if (chunked) out += "Transfer-Encoding: chunked\r\n";
  out += keep_alive ? "Connection: keep-alive\r\n" : "Connection: close\r\n";
  for (const auto& [name, value] : headers) {
    if (name.empty() || !SafeHeaderText(name) || !SafeHeaderText(value) ||
        name.find(':') != std::string::npos) {
      continue;
    }
    absl::StrAppend(&out, name, ": ", value, "\r\n");
  }
  out += "\r\n";
  return out;
}

ConnectionResponseWriter::ConnectionResponseWriter(std::weak_ptr<Connection> connection,
                                                   std::shared_ptr<LoopTaskQueue> loop,
                                                   ResponseContext context)
    : connection_(std::move(connection)), loop_(std::move(loop)), context_(context) {}

ConnectionResponseWriter::~ConnectionResponseWriter() {
  if (state_ == State::kDone || peer_gone_) return;
  // Possibly on a foreign thread (the handler's worker dropped us): only
  // copies cross over, and the connection is touched on the loop thread.
  std::weak_ptr<Connection> connection = connection_;
  uint64_t id = context_.id;
  bool started = state_ == State::kStreaming;
  loop_->RunOnLoop([connection, id, started] {
    if (std::shared_ptr<Connection> live = connection.lock()) live->AbandonResponse(id, started);
  });
}

std::shared_ptr<Connection> ConnectionResponseWriter::LiveConnection() const {
  if (peer_gone_) return nullptr;
  std::shared_ptr<Connection> live = connection_.lock();
  if (live == nullptr || !live->writable()) return nullptr;
  return live;
}

void ConnectionResponseWriter::Send(int status, std::string_view content_type, std::string body,
                                    HeaderList headers) {
  if (state_ != State::kPending) return;
  state_ = State::kDone;
  std::shared_ptr<Connection> live = LiveConnection();
  if (live == nullptr) return;
  bool no_body = HasNoBody(status);
  int64_t length = no_body ? -1 : static_cast<int64_t>(body.size());
  std::string head =
      FormatResponseHead(status, content_type, length, false, context_.keep_alive, headers);
  if (no_body || context_.head) {
    live->WriteBytes(std::move(head));
  } else if (body.size() <= kCoalesceBytes) {
    head += body;
    live->WriteBytes(std::move(head));
  } else {
    live->WriteBytes(std::move(head));
    live->WriteBytes(std::move(body));
  }
  live->FinishResponse(context_.id, !context_.keep_alive);
}

void ConnectionResponseWriter::Start(int status, std::string_view content_type,
                                     HeaderList headers) {
  if (state_ != State::kPending) return;
  state_ = State::kStreaming;
  // HTTP/1.0 knows no chunking: the body runs until the connection closes.
  chunked_ = !context_.http10;
  if (context_.http10) context_.keep_alive = false;
  std::shared_ptr<Connection> live = LiveConnection();
  if (live == nullptr) return;
  live->WriteBytes(
      FormatResponseHead(status, content_type, -1, chunked_, context_.keep_alive, headers));
}

void ConnectionResponseWriter::Write(std::string chunk) {
  if (state_ != State::kStreaming || chunk.empty() || context_.head) return;
  std::shared_ptr<Connection> live = LiveConnection();
  if (live == nullptr) return;
  if (chunked_) {
    std::string framed = absl::StrFormat("%x\r\n", chunk.size());
    framed += chunk;
    framed += "\r\n";
    live->WriteBytes(std::move(framed));
  } else {
    live->WriteBytes(std::move(chunk));
  }
}

void ConnectionResponseWriter::End() {
  if (state_ != State::kStreaming) return;
  state_ = State::kDone;
  std::shared_ptr<Connection> live = LiveConnection();
  if (live == nullptr) return;
  if (chunked_ && !context_.head) live->WriteBytes("0\r\n\r\n");
  live->FinishResponse(context_.id, !context_.keep_alive);
}

bool ConnectionResponseWriter::closed() const { return LiveConnection() == nullptr; }

void ConnectionResponseWriter::OnClose(std::function<void()> fn) {
  if (state_ == State::kDone) return;  // it can no longer fire
  if (peer_gone_ || connection_.expired()) {
    if (fn) fn();
    return;
  }
  on_close_ = std::move(fn);
}

void ConnectionResponseWriter::OnWritable(uint64_t max_queued_bytes, std::function<void()> fn) {
  if (state_ != State::kStreaming) return;
  std::shared_ptr<Connection> live = LiveConnection();
  if (live == nullptr) return;
  live->WhenQueuedAtMost(max_queued_bytes, std::move(fn));
}

void ConnectionResponseWriter::PeerGone() {
  if (peer_gone_) return;
  peer_gone_ = true;
  if (state_ != State::kDone && on_close_) {
    std::function<void()> fn = std::move(on_close_);
    on_close_ = nullptr;
    fn();
  }
}

}  // namespace tokenmill::http
