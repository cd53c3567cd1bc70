// Response formatting (status lines, reason phrases, JSON error bodies) and
// ConnectionResponseWriter, the ResponseWriter handed to handlers.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "daemon/http/http_server.h"
#include "daemon/http/loop_task_queue.h"

namespace tokenmill::http {

class Connection;

using HeaderList = std::vector<std::pair<std::string, std::string>>;

// "OK", "Not Found", ...; "Unknown" for codes without a common phrase.
std::string_view ReasonPhrase(int status);

// {"error":{"type":TYPE,"message":MESSAGE}}, strings JSON-escaped.
std::string ErrorJson(std::string_view type, std::string_view message);

// Status line and headers up to and including the blank line. Content-Length
// is written when content_length >= 0. Extra headers whose name or value
// holds CR, LF or NUL are dropped (they would split the response).
std::string FormatResponseHead(int status, std::string_view content_type, int64_t content_length,
                               bool chunked, bool keep_alive, const HeaderList& headers);

// What the writer must know about the request it answers.
struct ResponseContext {
  uint64_t id = 0;          // the connection's request sequence number
  bool head = false;        // HEAD: headers only
  bool http10 = false;      // HTTP/1.0 peer: no chunked encoding
  bool keep_alive = false;  // the connection may serve another request
};

// Writes one response onto its connection. Holds only a weak reference: once
// the connection is gone every call is a no-op and closed() is true. Dropped
// unanswered, it makes the connection answer 500 (from any thread: the
// destructor hops to the loop thread).
class ConnectionResponseWriter final : public ResponseWriter {
 public:
  ConnectionResponseWriter(std::weak_ptr<Connection> connection,
                           std::shared_ptr<LoopTaskQueue> loop, ResponseContext context);
  ~ConnectionResponseWriter() override;

  void Send(int status, std::string_view content_type, std::string body,
            HeaderList headers = {}) override;
  void Start(int status, std::string_view content_type, HeaderList headers = {}) override;
  void Write(std::string chunk) override;
  void End() override;
  bool closed() const override;
  // Runs fn at once when the peer is already gone (and the response unended).
  void OnClose(std::function<void()> fn) override;
  void OnWritable(uint64_t max_queued_bytes, std::function<void()> fn) override;

  // Called by the connection (loop thread) when the peer goes away.
  void PeerGone();
  // True once Send() or Start() was called.
  bool answered() const { return state_ != State::kPending; }

 private:
  enum class State { kPending, kStreaming, kDone };

  std::shared_ptr<Connection> LiveConnection() const;

  std::weak_ptr<Connection> connection_;
  std::shared_ptr<LoopTaskQueue> loop_;
  ResponseContext context_;
  State state_ = State::kPending;
  bool chunked_ = false;
  bool peer_gone_ = false;
  std::function<void()> on_close_;
};

}  // namespace tokenmill::http
