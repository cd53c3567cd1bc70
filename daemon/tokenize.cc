#include "daemon/tokenize.h"

#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "daemon/api_errors.h"
#include "daemon/openai_protocol.h"

namespace tokenmill::daemon {
namespace {

using nlohmann::json;

absl::Status InvalidField(std::string_view param, std::string message) {
  return WithErrorParam(absl::InvalidArgumentError(std::move(message)), param);
}

// An optional boolean field; absent or null keeps *out.
absl::Status OptionalBool(const nlohmann::ordered_json& body, const char* key, bool* out) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_boolean()) return InvalidField(key, absl::StrCat("'", key, "' must be a boolean"));
  *out = it->get<bool>();
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<TokenizeRequest> ParseTokenizeRequest(bool detokenize, std::string_view body) {
  // In the client's member order (a chat's tool-call arguments render in it).
  const nlohmann::ordered_json parsed =
      nlohmann::ordered_json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) return InvalidField("", "the request body is not valid JSON");
  if (!parsed.is_object()) return InvalidField("", "the request body must be a JSON object");
  TokenizeRequest r;
  r.detokenize = detokenize;
  if (auto model = parsed.find("model"); model != parsed.end() && !model->is_null()) {
    if (!model->is_string()) return InvalidField("model", "'model' must be a string");
    r.model = model->get<std::string>();
  }
  if (detokenize) {
    auto tokens = parsed.find("tokens");
    if (tokens == parsed.end() || !tokens->is_array()) {
      return InvalidField("tokens", "'tokens' is required and must be an array of token ids");
    }
    if (tokens->size() > kMaxDetokenizeTokens) {
      return InvalidField("tokens", absl::StrCat("'tokens' holds ", tokens->size(),
                                                 " ids; at most ", kMaxDetokenizeTokens));
    }
    r.tokens.reserve(tokens->size());
    for (const auto& id : *tokens) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 ||
          id.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
        return InvalidField("tokens", "'tokens' must hold token ids >= 0");
      }
      r.tokens.push_back(static_cast<int32_t>(id.get<int64_t>()));
    }
    return r;
  }
  int given = 0;
  for (const char* key : {"prompt", "content"}) {
    auto text = parsed.find(key);
    if (text == parsed.end() || text->is_null()) continue;
    if (!text->is_string()) return InvalidField(key, absl::StrCat("'", key, "' must be a string"));
    r.text = text->get<std::string>();
    ++given;
  }
  if (auto messages = parsed.find("messages"); messages != parsed.end() && !messages->is_null()) {
    if (absl::Status s = ParseChatMessages(*messages, r.messages); !s.ok()) return s;
    ++given;
  }
  if (given != 1) {
    return InvalidField("prompt",
                        "give exactly one of 'prompt', 'content' (text) or 'messages' (a chat)");
  }
  for (auto [key, out] : {std::pair{"add_special_tokens", &r.add_special_tokens},
                          std::pair{"add_special", &r.add_special_tokens},
                          std::pair{"add_generation_prompt", &r.add_generation_prompt}}) {
    if (absl::Status s = OptionalBool(parsed, key, out); !s.ok()) return s;
  }
  return r;
}

absl::StatusOr<json> RunTokenize(const TokenizeRequest& request,
                                 const tokenizer::Tokenizer& tokenizer,
                                 const chat::ChatTemplate& chat_template, int32_t context,
                                 absl::Time now) {
  if (request.detokenize) {
    for (int32_t id : request.tokens) {
      if (id >= tokenizer.vocab_size()) {
        return InvalidField("tokens",
                            absl::StrCat("token id ", id, " is outside the vocabulary of ",
                                         tokenizer.vocab_size(), " tokens"));
      }
    }
    const std::string text = tokenizer.Decode(request.tokens);
    return json{{"prompt", text}, {"content", text}};
  }
  std::vector<int32_t> tokens;
  if (request.text) {
    tokenizer::Tokenizer::EncodeOptions options;
    options.add_bos = request.add_special_tokens;
    options.add_eos = false;
    options.parse_special = false;
    tokens = tokenizer.Encode(*request.text, options);
  } else {
    chat::ChatRenderOptions options;
    options.add_generation_prompt = request.add_generation_prompt;
    options.now = now;
    absl::StatusOr<std::vector<int32_t>> encoded =
        chat_template.Encode(request.messages, tokenizer, options);
    if (!encoded.ok()) return WithErrorParam(encoded.status(), "messages");
    tokens = std::move(*encoded);
  }
  const size_t count = tokens.size();
  return json{{"tokens", std::move(tokens)}, {"count", count}, {"max_model_len", context}};
}

}  // namespace tokenmill::daemon
