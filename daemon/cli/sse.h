// Reading the OpenAI API's server-sent events as they arrive: a splitter that
// finds complete events across arbitrary chunk boundaries, the fields of one
// completion event, and GenerationStream, which turns a stream of chunks into
// text, a token count and a finish reason for `tokenmill generate`.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace tokenmill::cli {

// Splits an SSE byte stream into events. Lines end with "\n", "\r\n" or
// "\r"; "data:" lines (one leading space dropped) of one event are joined
// with "\n" and the event is handed over at the blank line that ends it.
// Comments (":...") and other fields ("event:", "id:") are ignored. Not
// thread-safe; one per stream.
class SseLineSplitter {
 public:
  using EventCallback = std::function<void(std::string_view data)>;

  // Feeds the next received bytes; calls on_event for each event completed.
  void Feed(std::string_view chunk, const EventCallback& on_event);
  // The stream ended: an event whose blank line never came is handed over.
  void Finish(const EventCallback& on_event);

 private:
  void Line(std::string_view line, const EventCallback& on_event);

  std::string partial_;    // bytes of a line not yet ended
  bool after_cr_ = false;  // the last byte was "\r": a "\n" next belongs to it
  std::string data_;       // data lines of the event so far
  bool has_data_ = false;
};

// One event of /v1/completions or /v1/chat/completions.
struct CompletionEvent {
  bool done = false;  // "[DONE]"
  std::string text;   // choices[0].text, or choices[0].delta.content for chat
  std::optional<std::string> finish_reason;  // null until the last chunk
  std::optional<int64_t> completion_tokens;  // usage.completion_tokens
  std::optional<std::string> error;          // error.message, or why it is unreadable
};
CompletionEvent ParseCompletionEvent(std::string_view data, bool chat);

// The state of one streamed generation. Text goes to on_text as soon as its
// event is complete. Tokens: usage.completion_tokens when the daemon sends
// it, else one per event that carried text.
class GenerationStream {
 public:
  using TextCallback = std::function<void(std::string_view text)>;
  GenerationStream(bool chat, TextCallback on_text);

  void Feed(std::string_view chunk);
  void Finish();

  int64_t tokens() const { return usage_tokens_.value_or(text_events_); }
  const std::string& finish_reason() const { return finish_reason_; }  // "" if none came
  bool done() const { return done_; }                                  // "[DONE]" seen
  const std::optional<std::string>& error() const { return error_; }   // first error event

 private:
  void Event(std::string_view data);

  bool chat_ = false;
  TextCallback on_text_;
  SseLineSplitter splitter_;
  int64_t text_events_ = 0;
  std::optional<int64_t> usage_tokens_;
  std::string finish_reason_;
  bool done_ = false;
  std::optional<std::string> error_;
};

// "[42 tokens, 0.81 s, 51.9 tok/s, finish: length]"
std::string FormatGenerationSummary(int64_t tokens, double seconds,
                                    const std::string& finish_reason);

}  // namespace tokenmill::cli
