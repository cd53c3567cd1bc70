// ChatTemplate: turns chat messages into the prompt a model was trained on,
// by rendering the Jinja chat template the model ships (GGUF
// tokenizer.chat_template, tokenizer_config.json chat_template) with
// tokenmill's Jinja interpreter (jinja_template.h), as Hugging Face does. A
// model without a template gets the plain format:
//   "<role>: <content>\n" per message, then "assistant:".
//
// Compiled once per model instance (Create), rendered on the encode threads;
// immutable, so Render and Encode may run on many threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "runtime/chat/jinja_template.h"
#include "runtime/chat/tool_calls.h"
#include "runtime/tokenizer/tokenizer.h"

namespace tokenmill::chat {

struct ChatMessage {
  // "system", "developer" (rendered as "system"), "user", "assistant", "tool".
  std::string role = "";
  std::string content = "";   // content parts joined
  bool content_null = false;  // content absent or null (assistant with tool_calls)
  // The message's other fields as the client sent them (tool_calls with
  // arguments parsed to objects where they are JSON, tool_call_id, name,
  // reasoning_content, ...): an object, or null when there are none.
  nlohmann::ordered_json fields = nullptr;
};

// What a render takes besides the messages.
struct ChatRenderOptions {
  bool add_generation_prompt = true;
  // The `tools` variable (an array of OpenAI tool objects), or null: unset.
  nlohmann::ordered_json tools = nullptr;
  absl::Time now = absl::UnixEpoch();  // what strftime_now() formats
};

// A rendered prompt: the text, and the byte spans of it that came from the
// messages (where control-token text is not parsed).
struct ChatPrompt {
  std::string text;
  std::vector<std::pair<size_t, size_t>> literal_spans;
};

class ChatTemplate {
 public:
  // The template for `tokenizer`'s chat_template text; "" gives the plain
  // format. kInvalidArgument: the template does not parse (the reason with
  // line and column), so that a model is never served a silently different
  // prompt.
  static absl::StatusOr<std::shared_ptr<const ChatTemplate>> Create(
      const tokenizer::Tokenizer& tokenizer);
  // The same from template text and the bos/eos token texts it may print.
  static absl::StatusOr<std::shared_ptr<const ChatTemplate>> Create(std::string_view jinja,
                                                                    std::string bos_token,
                                                                    std::string eos_token);

  // "model" (the model's template) or "plain" (none shipped).
  std::string_view source() const { return jinja_ ? "model" : "plain"; }
  // The format the template writes tool calls in (DetectToolCallFormat);
  // kNone: requests with tools are refused for this model.
  ToolCallFormat tool_call_format() const { return tool_call_format_; }

  // The prompt text. kInvalidArgument: no messages, an unknown role, or the
  // template refused the conversation (raise_exception, a runtime error, a
  // render limit), with the template position.
  absl::StatusOr<ChatPrompt> Render(std::span<const ChatMessage> messages,
                                    const ChatRenderOptions& options = {}) const;
  // Token ids of the prompt. Control-token text is parsed where the
  // template wrote it and never inside message content (user text cannot
  // forge a control token). A model's template writes its own BOS (as
  // Hugging Face's apply_chat_template encodes without special tokens); the
  // plain format gets the BOS the tokenizer's spec asks for.
  absl::StatusOr<std::vector<int32_t>> Encode(std::span<const ChatMessage> messages,
                                              const tokenizer::Tokenizer& tokenizer,
                                              const ChatRenderOptions& options = {}) const;

 private:
  ChatTemplate() = default;
  std::unique_ptr<jinja::JinjaTemplate> jinja_;  // null: the plain format
  ToolCallFormat tool_call_format_ = ToolCallFormat::kNone;
  std::string bos_token_;
  std::string eos_token_;
};

using ChatTemplatePtr = std::shared_ptr<const ChatTemplate>;

}  // namespace tokenmill::chat
