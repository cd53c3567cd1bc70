#include "daemon/cli/sse.h"

#include <cstdio>

#include "nlohmann/json.hpp"

namespace tokenmill::cli {

void SseLineSplitter::Feed(std::string_view chunk, const EventCallback& on_event) {
  size_t start = 0;
  for (size_t i = 0; i < chunk.size(); ++i) {
    const char c = chunk[i];
    if (c != '\n' && c != '\r') {
      after_cr_ = false;
      continue;
    }
    if (c == '\n' && after_cr_ && i == start && partial_.empty()) {
      // The "\n" of a "\r\n" whose "\r" already ended the line.
      after_cr_ = false;
      start = i + 1;
      continue;
    }
    partial_.append(chunk.substr(start, i - start));
    Line(partial_, on_event);
    partial_.clear();
    after_cr_ = c == '\r';
    start = i + 1;
  }
  partial_.append(chunk.substr(start));
}

void SseLineSplitter::Finish(const EventCallback& on_event) {
  if (!partial_.empty()) {
    Line(partial_, on_event);
    partial_.clear();
  }
  Line("", on_event);
  after_cr_ = false;
}

void SseLineSplitter::Line(std::string_view line, const EventCallback& on_event) {
  if (line.empty()) {
    if (has_data_) {
      std::string data = std::move(data_);
      data_.clear();
      has_data_ = false;
      on_event(data);
    }
    return;
  }
  if (line.substr(0, 5) != "data:") return;  // comments and other fields
  std::string_view value = line.substr(5);
  if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  if (has_data_) data_.push_back('\n');
  data_.append(value);
  has_data_ = true;
}

CompletionEvent ParseCompletionEvent(std::string_view data, bool chat) {
  CompletionEvent event;
  if (data == "[DONE]") {
    event.done = true;
    return event;
  }
  nlohmann::json j = nlohmann::json::parse(data, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    event.error = "unreadable event: " + std::string(data.substr(0, 200));
    return event;
  }
  if (auto it = j.find("error"); it != j.end()) {
    std::string message = it->is_object() ? it->value("message", "") : "";
    if (message.empty()) message = it->is_string() ? it->get<std::string>() : it->dump();
    event.error = message;
    return event;
  }
  if (auto choices = j.find("choices");
      choices != j.end() && choices->is_array() && !choices->empty()) {
    const nlohmann::json& choice = (*choices)[0];
    const nlohmann::json* text = nullptr;
    if (chat) {
      if (auto delta = choice.find("delta"); delta != choice.end() && delta->is_object()) {
        if (auto content = delta->find("content"); content != delta->end()) text = &*content;
      }
    } else if (auto t = choice.find("text"); t != choice.end()) {
      text = &*t;
    }
    if (text && text->is_string()) event.text = text->get<std::string>();
    if (auto finish = choice.find("finish_reason"); finish != choice.end() && finish->is_string()) {
      event.finish_reason = finish->get<std::string>();
    }
  }
  if (auto usage = j.find("usage"); usage != j.end() && usage->is_object()) {
    if (auto n = usage->find("completion_tokens"); n != usage->end() && n->is_number_integer()) {
      event.completion_tokens = n->get<int64_t>();
    }
  }
  return event;
}

GenerationStream::GenerationStream(bool chat, TextCallback on_text)
    : chat_(chat), on_text_(std::move(on_text)) {}

void GenerationStream::Feed(std::string_view chunk) {
  splitter_.Feed(chunk, [this](std::string_view data) { Event(data); });
}

void GenerationStream::Finish() {
  splitter_.Finish([this](std::string_view data) { Event(data); });
}

void GenerationStream::Event(std::string_view data) {
  CompletionEvent event = ParseCompletionEvent(data, chat_);
  if (event.done) {
    done_ = true;
    return;
  }
  if (event.error) {
    if (!error_) error_ = std::move(event.error);
    return;
  }
  if (!event.text.empty()) {
    ++text_events_;
    on_text_(event.text);
  }
  if (event.finish_reason) finish_reason_ = *event.finish_reason;
  if (event.completion_tokens) usage_tokens_ = event.completion_tokens;
}

std::string FormatGenerationSummary(int64_t tokens, double seconds,
                                    const std::string& finish_reason) {
  const double rate = seconds > 0 ? static_cast<double>(tokens) / seconds : 0.0;
  char buf[160];
  std::snprintf(buf, sizeof(buf), "[%lld tokens, %.2f s, %.1f tok/s, finish: %s]",
                static_cast<long long>(tokens), seconds, rate,
                finish_reason.empty() ? "none" : finish_reason.c_str());
  return buf;
}

}  // namespace tokenmill::cli
