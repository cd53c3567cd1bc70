// ChatTemplate: turns chat messages into the prompt text a model was trained
// on. Models carry a Jinja template (GGUF tokenizer.chat_template,
// tokenizer_config.json); tokenmill does not run Jinja. It recognises the
// template families in use (Llama 3 headers, ChatML as in Qwen, Llama 2 /
// Mistral [INST]) by their markers and renders those formats itself; any other
// or no template gets a plain default ("role: content" lines).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/tokenizer/tokenizer.h"

namespace tokenmill::chat {

struct ChatMessage {
  std::string role = "";  // "system", "user", "assistant" ("developer" counts as system)
  std::string content = "";
};

// A piece of a rendered prompt: template markup (may spell control tokens)
// or message content (must not).
struct ChatSegment {
  std::string text;
  bool markup = false;
};

enum class ChatFormat { kPlain, kLlama3, kChatMl, kLlama2 };

class ChatTemplate {
 public:
  // The format the template text belongs to (kPlain when unknown or empty).
  static ChatTemplate FromJinja(std::string_view jinja);
  explicit ChatTemplate(ChatFormat format) : format_(format) {}

  // The prompt for `messages` as segments, ending where the assistant's
  // reply begins. Markup spells control tokens as text ("<|eot_id|>").
  // kInvalidArgument: no messages, an unknown role.
  absl::StatusOr<std::vector<ChatSegment>> RenderSegments(
      std::span<const ChatMessage> messages) const;
  // The segments joined (for display and tests).
  absl::StatusOr<std::string> Render(std::span<const ChatMessage> messages) const;
  // Token ids of the prompt: markup encoded with control tokens parsed,
  // content with them not parsed (user text cannot forge a control token),
  // BOS added once as the tokenizer's spec asks.
  absl::StatusOr<std::vector<int32_t>> Encode(std::span<const ChatMessage> messages,
                                              const tokenizer::Tokenizer& tokenizer) const;

  ChatFormat format() const { return format_; }
  std::string_view name() const;  // "plain", "llama3", "chatml", "llama2"

 private:
  ChatFormat format_ = ChatFormat::kPlain;
};

}  // namespace tokenmill::chat
