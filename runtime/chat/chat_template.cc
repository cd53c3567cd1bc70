#include "runtime/chat/chat_template.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace tokenmill::chat {
namespace {

using jinja::Value;

absl::Status CheckRoles(std::span<const ChatMessage> messages) {
  if (messages.empty()) return absl::InvalidArgumentError("a chat needs at least one message");
  for (const ChatMessage& message : messages) {
    const std::string& role = message.role;
    if (role != "system" && role != "developer" && role != "user" && role != "assistant" &&
        role != "tool") {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown chat role '", role, "' (expected system, developer, user, assistant or tool)"));
    }
  }
  return absl::OkStatus();
}

std::string RoleForTemplate(const std::string& role) {
  // Templates of 2025 and before know no "developer": OpenAI's name for the
  // system prompt.
  return role == "developer" ? "system" : role;
}

// The message as templates read it: {role, content, ...other fields}. Every
// string in it is input (its bytes never become control tokens).
Value MessageValue(const ChatMessage& message) {
  jinja::Object entries;
  // The role is one of a fixed set (CheckRoles), so it is template text: Phi-3
  // style templates build control tokens from it ("<|" + role + "|>").
  entries.emplace_back("role", Value::String(RoleForTemplate(message.role)));
  entries.emplace_back("content",
                       message.content_null ? Value::Null() : Value::InputString(message.content));
  if (message.fields.is_object()) {
    for (const auto& [key, field] : message.fields.items()) {
      if (key == "role" || key == "content") continue;
      entries.emplace_back(key, Value::FromJson(field));
    }
  }
  return Value::MakeObject(std::move(entries));
}

// "role: content" lines, then "assistant:". Content spans are literal.
ChatPrompt RenderPlain(std::span<const ChatMessage> messages) {
  ChatPrompt prompt;
  for (const ChatMessage& message : messages) {
    absl::StrAppend(&prompt.text, RoleForTemplate(message.role), ": ");
    const size_t begin = prompt.text.size();
    prompt.text += message.content;
    if (prompt.text.size() > begin) prompt.literal_spans.emplace_back(begin, prompt.text.size());
    prompt.text += "\n";
  }
  prompt.text += "assistant:";
  return prompt;
}

}  // namespace

absl::StatusOr<ChatTemplatePtr> ChatTemplate::Create(const tokenizer::Tokenizer& tokenizer) {
  auto text = [&](std::optional<int32_t> id) {
    return id ? std::string(tokenizer.TokenText(*id)) : std::string();
  };
  return Create(tokenizer.chat_template(), text(tokenizer.bos_id()), text(tokenizer.eos_id()));
}

absl::StatusOr<ChatTemplatePtr> ChatTemplate::Create(std::string_view jinja, std::string bos_token,
                                                     std::string eos_token) {
  auto tmpl = std::shared_ptr<ChatTemplate>(new ChatTemplate());
  tmpl->bos_token_ = std::move(bos_token);
  tmpl->eos_token_ = std::move(eos_token);
  if (!jinja.empty()) {
    absl::StatusOr<std::unique_ptr<jinja::JinjaTemplate>> parsed =
        jinja::JinjaTemplate::Parse(jinja);
    if (!parsed.ok()) return parsed.status();
    tmpl->jinja_ = *std::move(parsed);
    tmpl->tool_call_format_ = DetectToolCallFormat(jinja);
  }
  return tmpl;
}

absl::StatusOr<ChatPrompt> ChatTemplate::Render(std::span<const ChatMessage> messages,
                                                const ChatRenderOptions& options) const {
  if (absl::Status status = CheckRoles(messages); !status.ok()) return status;
  if (!jinja_) return RenderPlain(messages);
  jinja::Array list;
  list.reserve(messages.size());
  for (const ChatMessage& message : messages) list.push_back(MessageValue(message));
  jinja::Object variables;
  variables.emplace_back("messages", Value::MakeArray(std::move(list)));
  if (!options.tools.is_null()) variables.emplace_back("tools", Value::FromJson(options.tools));
  variables.emplace_back("add_generation_prompt", Value::Bool(options.add_generation_prompt));
  variables.emplace_back("bos_token", Value::String(bos_token_));
  variables.emplace_back("eos_token", Value::String(eos_token_));
  // Qwen 3 and others read it; transformers leaves it undefined (= thinking
  // on), and so do we.
  absl::StatusOr<jinja::RenderedText> rendered = jinja_->Render(variables, options.now);
  if (!rendered.ok()) {
    // A render limit is this request's problem, not the node's capacity
    // (which kResourceExhausted means to the API: 429).
    return absl::InvalidArgumentError(rendered.status().message());
  }
  ChatPrompt prompt;
  prompt.text = std::move(rendered->text);
  for (const jinja::InputSpan& span : rendered->input) {
    prompt.literal_spans.emplace_back(span.begin, span.end);
  }
  return prompt;
}

absl::StatusOr<std::vector<int32_t>> ChatTemplate::Encode(std::span<const ChatMessage> messages,
                                                          const tokenizer::Tokenizer& tokenizer,
                                                          const ChatRenderOptions& options) const {
  absl::StatusOr<ChatPrompt> prompt = Render(messages, options);
  if (!prompt.ok()) return prompt.status();
  return tokenizer.Encode(prompt->text, {.add_bos = !jinja_,
                                         .add_eos = false,
                                         .parse_special = true,
                                         .literal_spans = prompt->literal_spans});
}

}  // namespace tokenmill::chat
