// The OpenAI-compatible wire format, without any I/O: request bodies of
// /v1/completions and /v1/chat/completions parsed into an OpenAiRequest
// (every unsupported value refused with the field named), and the response,
// stream chunk, logprobs and SSE shapes built from generation results.
// Pure functions; safe from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "runtime/chat/chat_template.h"
#include "runtime/grammar/grammar_cache.h"
#include "runtime/instance/generation.h"
#include "runtime/sampling/sampling_params.h"
#include "runtime/tokenizer/tokenizer.h"

namespace tokenmill::daemon {

enum class OpenAiEndpoint { kCompletions, kChatCompletions };

// Default max_tokens of /v1/completions (OpenAI's).
inline constexpr int32_t kDefaultCompletionMaxTokens = 16;
// Most top alternatives per token: /v1/completions `logprobs` allows 5,
// /v1/chat/completions `top_logprobs` 20.
inline constexpr int32_t kMaxCompletionLogprobs = 5;

// A parsed request. Unknown fields are ignored, as OpenAI's API does, so that
// clients sending newer optional fields keep working; fields tokenmill knows
// but cannot honour (best_of, suffix, images, ...) are refused.
struct OpenAiRequest {
  OpenAiEndpoint endpoint = OpenAiEndpoint::kCompletions;
  std::string model;
  // /v1/completions: the prompt as text, or as token ids.
  std::optional<std::string> prompt_text;
  std::vector<int32_t> prompt_tokens;
  // /v1/chat/completions: the messages (content parts joined).
  std::vector<chat::ChatMessage> messages;
  // max_tokens / max_completion_tokens; unset = the endpoint's default
  // (completions: 16, chat: what the context leaves after the prompt).
  std::optional<int32_t> max_tokens;
  // Every sampling field; sampling.logprobs = alternatives per token.
  // sampling.max_tokens is set by ResolveMaxTokens.
  sampling::SamplingParams sampling;
  bool logprobs = false;  // report the chosen tokens' logprobs
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  bool ignore_eos = false;     // extension: EOS does not end generation
  // /v1/completions `echo`: the prompt's text precedes each choice's, and
  // with `logprobs` its tokens' logprobs precede the completion's.
  bool echo = false;
  // Choices to generate for the prompt (1..kMaxChoices).
  int32_t n = 1;
  // The client's end-user id, at most kMaxUserBytes; kept in the request's
  // ledger record.
  std::string user;
  // response_format json_object / json_schema (both endpoints); unset for
  // text.
  std::optional<grammar::OutputConstraint> response_format;
  // Chat: `tools` (validated OpenAI function tools; null when none) and
  // `tool_choice`: kNone renders no tools and parses no calls; kAuto (the
  // default with tools) renders them and parses calls out of the output;
  // kRequired and kFunction also force a call by constrained decoding.
  enum class ToolChoice { kNone, kAuto, kRequired, kFunction };
  nlohmann::ordered_json tools = nullptr;
  ToolChoice tool_choice = ToolChoice::kNone;
  std::string tool_choice_name;  // kFunction: the function to call
  bool parallel_tool_calls = true;
};

// Most choices per request (`n`): each is a sequence of its own in the batch.
inline constexpr int32_t kMaxChoices = 16;

// Most tools per request, and the longest function name (OpenAI's limits).
inline constexpr size_t kMaxTools = 128;
inline constexpr size_t kMaxToolNameBytes = 64;

inline constexpr size_t kMaxUserBytes = 256;

// kInvalidArgument with the OpenAI "param" attached (WithErrorParam) naming
// the field, for malformed JSON, wrong types, out-of-range or unsupported
// values.
absl::StatusOr<OpenAiRequest> ParseOpenAiRequest(OpenAiEndpoint endpoint, std::string_view body);

// A chat's "messages" array (roles, content parts joined, tool calls), as
// /v1/chat/completions reads it; errors name the field ("messages[2].role").
absl::Status ParseChatMessages(const nlohmann::ordered_json& messages,
                               std::vector<chat::ChatMessage>& out);

// The max_tokens to generate for a prompt of `prompt_tokens` in `context`:
// the request's, or the endpoint's default. kInvalidArgument (param
// max_tokens, or prompt/messages when the prompt alone fills the context)
// when prompt + max_tokens exceeds the context.
absl::StatusOr<int32_t> ResolveMaxTokens(const OpenAiRequest& request, int32_t prompt_tokens,
                                         int32_t context);

// One generated token for logprobs output and its alternatives. `bytes`:
// what the token adds to the text; `token`: how it is shown (control tokens
// by name, bytes that are not valid UTF-8 on their own as OpenAI writes
// them: "bytes:\\xe2\\x80").
struct LogprobEntry {
  std::string token;
  std::string bytes;
  float logprob = 0.0f;
  struct Alternative {
    std::string token;
    std::string bytes;
    float logprob = 0.0f;
  };
  std::vector<Alternative> top;
};

// The shown text of token `id` (see LogprobEntry::token).
std::string LogprobTokenText(const tokenizer::Tokenizer& tokenizer, int32_t id);
LogprobEntry MakeLogprobEntry(const runtime::GeneratedToken& token,
                              const tokenizer::Tokenizer& tokenizer);

// /v1/completions logprobs: {"tokens","token_logprobs","top_logprobs",
// "text_offset"}; *text_offset is the offset of the first entry's text in
// the completion and advances past the last (streams continue it). An entry
// with a NaN logprob (an echoed prompt's first token) has null for both.
nlohmann::json CompletionLogprobsJson(std::span<const LogprobEntry> entries, int64_t* text_offset);
// /v1/chat/completions logprobs: {"content":[{"token","logprob","bytes",
// "top_logprobs":[{"token","logprob","bytes"}]}]}.
nlohmann::json ChatLogprobsJson(std::span<const LogprobEntry> entries);

// What every response object of one request shares.
struct ResponseMeta {
  OpenAiEndpoint endpoint = OpenAiEndpoint::kCompletions;
  std::string id;       // "cmpl-..." / "chatcmpl-..."
  int64_t created = 0;  // Unix seconds
  std::string model;
};

// OpenAI's finish_reason: "length" for kLength, "stop" otherwise (a deadline
// is "stop" plus "tokenmill_finish":"deadline" on the choice).
std::string OpenAiFinishReason(runtime::FinishReason reason);

// {"prompt_tokens","completion_tokens","total_tokens",
//  "prompt_tokens_details":{"cached_tokens"}}
nlohmann::json UsageJson(const runtime::GenerationUsage& usage);

// One choice of a non-streaming response. `logprobs` is null when not
// requested. `tool_calls` (chat): the calls parsed from the output
// (ToolCallsJson), or null; with calls, the message's content is null when
// empty and a stop is finish_reason "tool_calls".
nlohmann::json ChoiceJson(const ResponseMeta& meta, int32_t index, const std::string& text,
                          runtime::FinishReason reason, nlohmann::json logprobs,
                          nlohmann::json tool_calls = nullptr);
// The non-streaming response: `choices` (ChoiceJson, in index order) and the
// request's usage.
nlohmann::json ResponseJson(const ResponseMeta& meta, nlohmann::json choices,
                            const runtime::GenerationUsage& usage);

// [{"id","type":"function","function":{"name","arguments"}}] of whole calls.
nlohmann::json ToolCallsJson(std::span<const chat::ToolCall> calls);
// A stream's tool_calls delta array: a call's first piece {"index","id",
// "type","function":{"name","arguments"}}, later ones {"index","function":
// {"arguments"}}.
nlohmann::json ToolCallDeltasJson(std::span<const chat::ToolCallDelta> deltas);

// A stream chunk ("text_completion" / "chat.completion.chunk") with one
// choice. Chat: `role_chunk` gives delta {"role":"assistant","content":""};
// otherwise delta {"content":text}, or {} when `finish` is set and text is
// empty. `usage_null` adds "usage":null (stream_options.include_usage).
struct ChunkContent {
  int32_t index = 0;  // the choice
  std::string text;
  bool role_chunk = false;
  std::optional<runtime::FinishReason> finish;
  nlohmann::json logprobs = nullptr;
  // Chat: ToolCallDeltasJson pieces for the delta, or null.
  nlohmann::json tool_calls = nullptr;
  // The request's output held tool calls: a stop is finish_reason "tool_calls".
  bool called_tools = false;
};
nlohmann::json ChunkJson(const ResponseMeta& meta, const ChunkContent& content, bool usage_null);
// The last chunk when include_usage: "choices":[] and the usage.
nlohmann::json UsageChunkJson(const ResponseMeta& meta, const runtime::GenerationUsage& usage);

// "data: JSON\n\n" (invalid UTF-8 replaced).
std::string SseData(const nlohmann::json& value);
inline constexpr std::string_view kSseDone = "data: [DONE]\n\n";

// A client's X-Request-Id we keep: 1 to 128 visible ASCII characters
// (0x21-0x7e; no spaces or controls, which would garble logs and keys).
bool IsClientRequestId(std::string_view id);
// A UUIDv7 text ("0190d7e2-8a4b-7c3d-9e1f-...") from a Unix time and two
// random words (the version and variant bits are set here).
std::string UuidV7(std::chrono::system_clock::time_point now, uint64_t random_a, uint64_t random_b);

// One entry of GET /v1/models. Extension fields: `chat_template`, "model"
// when chats render the model's own template, "plain" when it ships none;
// `tool_calls`, the format tool calls are parsed in ("hermes",
// "llama3_json", "mistral"), "none" when the model takes no tools.
nlohmann::json ModelObjectJson(const std::string& id, int64_t created,
                               const std::string& chat_template, const std::string& tool_calls);

}  // namespace tokenmill::daemon
