// POST /tokenize and POST /detokenize: a served model's tokenizer for
// clients that count or check tokens, in the shapes vLLM's and llama.cpp's
// servers use.
//
// /tokenize body: "model" (optional: the first ready model the tenant may
// use), then one of "prompt" or "content" (text, encoded as a completion
// prompt is: BOS as the tokenizer says unless "add_special_tokens" (or
// llama.cpp's "add_special") is false; control-token text is not parsed) or
// "messages" (a chat, rendered by the model's chat template as a chat
// completion's prompt is, "add_generation_prompt" default true). Answer:
// {"tokens":[ids],"count":N,"max_model_len":CONTEXT,"model":ID}.
//
// /detokenize body: "model" (as above) and "tokens" (ids in the model's
// vocabulary). Answer: {"prompt":TEXT,"content":TEXT,"model":ID} (vLLM
// reads "prompt", llama.cpp "content").
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "runtime/chat/chat_template.h"
#include "runtime/tokenizer/tokenizer.h"

namespace tokenmill::daemon {

// Most ids one /detokenize request may carry.
inline constexpr size_t kMaxDetokenizeTokens = 1 << 20;

struct TokenizeRequest {
  bool detokenize = false;
  std::string model;                        // "" = the first usable ready model
  std::optional<std::string> text;          // /tokenize: prompt or content
  std::vector<chat::ChatMessage> messages;  // /tokenize: a chat
  bool add_special_tokens = true;
  bool add_generation_prompt = true;
  std::vector<int32_t> tokens;  // /detokenize
};

// kInvalidArgument with the OpenAI "param" attached for a malformed body.
absl::StatusOr<TokenizeRequest> ParseTokenizeRequest(bool detokenize, std::string_view body);

// The answer for `request` with a model's tokenizer, chat template and
// context (see the top of the file; "model" is the caller's to add);
// kInvalidArgument for token ids outside the vocabulary or a chat the
// template refuses. `now` is what the template's strftime_now() formats.
absl::StatusOr<nlohmann::json> RunTokenize(const TokenizeRequest& request,
                                           const tokenizer::Tokenizer& tokenizer,
                                           const chat::ChatTemplate& chat_template, int32_t context,
                                           absl::Time now);

}  // namespace tokenmill::daemon
