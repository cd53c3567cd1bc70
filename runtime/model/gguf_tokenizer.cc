// tokenizer.ggml.* metadata -> TokenizerSpec (declared in gguf_loader.h).
#include <limits>
#include <optional>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "runtime/model/gguf_loader.h"

namespace tokenmill::model {
namespace {

using tokenizer::Normalizer;
using tokenizer::PreTokenizer;
using tokenizer::TokenizerKind;
using tokenizer::TokenizerSpec;
using tokenizer::TokenType;

class TokenizerKeys {
 public:
  explicit TokenizerKeys(const GgufFile& file) : file_(file) {}

  absl::Status Error(const std::string& key, const std::string& what) const {
    return absl::InvalidArgumentError(
        absl::StrCat(file_.path().string(), ": metadata key '", key, "': ", what));
  }

  // A string array of `key` (null when absent).
  absl::StatusOr<const std::vector<std::string>*> Strings(const std::string& key) const {
    const GgufValue* v = file_.Find(key);
    if (v == nullptr) return nullptr;
    if (v->type != GgufType::kArray || v->item_type != GgufType::kString) {
      return Error(key, "expected an array of strings");
    }
    return &v->strings;
  }

  // A token id in [0, vocab) or nullopt when absent.
  absl::StatusOr<std::optional<int32_t>> TokenId(const std::string& key, size_t vocab) const {
    const GgufValue* v = file_.Find(key);
    if (v == nullptr) return std::optional<int32_t>();
    const std::optional<int64_t> id = v->AsInt();
    if (!id || *id < 0 || static_cast<uint64_t>(*id) >= vocab) {
      return Error(key, absl::StrCat(v->AsText().value_or("an array"),
                                     " is not a token id below the vocabulary size ", vocab));
    }
    return std::optional<int32_t>(static_cast<int32_t>(*id));
  }

  absl::StatusOr<bool> Bool(const std::string& key, bool fallback) const {
    const GgufValue* v = file_.Find(key);
    if (v == nullptr) return fallback;
    if (v->type != GgufType::kBool) return Error(key, "expected a bool");
    return v->b;
  }

 private:
  const GgufFile& file_;
};

absl::StatusOr<PreTokenizer> PreTokenizerFor(const TokenizerKeys& keys, const GgufFile& file) {
  const GgufValue* v = file.Find("tokenizer.ggml.pre");
  if (v == nullptr) return PreTokenizer::kGpt2;
  if (v->type != GgufType::kString) return keys.Error("tokenizer.ggml.pre", "expected a string");
  if (v->s == "llama-bpe" || v->s == "llama3" || v->s == "smaug-bpe") return PreTokenizer::kLlama3;
  if (v->s == "qwen2") return PreTokenizer::kQwen2;
  if (v->s == "deepseek-v3") return PreTokenizer::kDeepSeekV3;
  if (v->s == "gpt-2" || v->s == "default") return PreTokenizer::kGpt2;
  return absl::UnimplementedError(
      absl::StrCat(file.path().string(), ": metadata key 'tokenizer.ggml.pre': pre-tokenizer '",
                   v->s, "' is not supported"));
}

}  // namespace

absl::StatusOr<TokenizerSpec> TokenizerFromGguf(const GgufFile& file) {
  const TokenizerKeys keys(file);
  TokenizerSpec spec;
  const GgufValue* model = file.Find("tokenizer.ggml.model");
  if (model == nullptr) return spec;
  if (model->type != GgufType::kString)
    return keys.Error("tokenizer.ggml.model", "expected a string");
  if (model->s == "none") return spec;
  if (model->s == "gpt2") {
    spec.kind = TokenizerKind::kByteLevelBpe;
    auto pre = PreTokenizerFor(keys, file);
    if (!pre.ok()) return pre.status();
    spec.pre = *pre;
    // Qwen2 / Qwen3's tokenizer.json normalises to NFC; GGUF keeps no
    // normaliser, so the pre-tokenizer name stands for it.
    if (spec.pre == PreTokenizer::kQwen2) spec.normalizer = Normalizer::kNfc;
  } else if (model->s == "llama") {
    spec.kind = TokenizerKind::kSentencePieceBpe;
  } else {
    return absl::UnimplementedError(
        absl::StrCat(file.path().string(), ": metadata key 'tokenizer.ggml.model': tokenizer '",
                     model->s, "' is not supported (gpt2, llama are)"));
  }

  auto tokens = keys.Strings("tokenizer.ggml.tokens");
  if (!tokens.ok()) return tokens.status();
  if (*tokens == nullptr || (*tokens)->empty()) {
    return keys.Error("tokenizer.ggml.tokens", "missing or empty");
  }
  spec.tokens = **tokens;
  const size_t vocab = spec.tokens.size();

  if (const GgufValue* types = file.Find("tokenizer.ggml.token_type")) {
    if (types->type != GgufType::kArray || types->ints.size() != vocab) {
      return keys.Error("tokenizer.ggml.token_type",
                        absl::StrCat("expected an integer array of ", vocab, " entries"));
    }
    spec.token_types.reserve(vocab);
    for (size_t k = 0; k < vocab; ++k) {
      const int64_t t = types->ints[k];
      if (t < static_cast<int64_t>(TokenType::kNormal) ||
          t > static_cast<int64_t>(TokenType::kByte)) {
        return keys.Error("tokenizer.ggml.token_type",
                          absl::StrCat("token ", k, " has unknown type ", t));
      }
      spec.token_types.push_back(static_cast<TokenType>(t));
    }
  }
  if (const GgufValue* scores = file.Find("tokenizer.ggml.scores")) {
    if (scores->type != GgufType::kArray || scores->floats.size() != vocab) {
      return keys.Error("tokenizer.ggml.scores",
                        absl::StrCat("expected a float array of ", vocab, " entries"));
    }
    spec.scores.assign(scores->floats.begin(), scores->floats.end());
  }
  auto merges = keys.Strings("tokenizer.ggml.merges");
  if (!merges.ok()) return merges.status();
  if (*merges != nullptr) spec.merges = **merges;
  if (spec.kind == TokenizerKind::kByteLevelBpe && spec.merges.empty()) {
    return keys.Error("tokenizer.ggml.merges", "missing (a gpt2 tokenizer needs merges)");
  }

  const std::pair<const char*, std::optional<int32_t>*> ids[] = {
      {"tokenizer.ggml.bos_token_id", &spec.bos_id},
      {"tokenizer.ggml.eos_token_id", &spec.eos_id},
      {"tokenizer.ggml.unknown_token_id", &spec.unk_id},
      {"tokenizer.ggml.padding_token_id", &spec.pad_id},
  };
  for (const auto& [key, out] : ids) {
    auto id = keys.TokenId(key, vocab);
    if (!id.ok()) return id.status();
    *out = *id;
  }
  auto add_bos = keys.Bool("tokenizer.ggml.add_bos_token", true);
  auto add_eos = keys.Bool("tokenizer.ggml.add_eos_token", false);
  auto add_space =
      keys.Bool("tokenizer.ggml.add_space_prefix", spec.kind == TokenizerKind::kSentencePieceBpe);
  for (const auto* b : {&add_bos, &add_eos, &add_space}) {
    if (!b->ok()) return b->status();
  }
  spec.add_bos = *add_bos;
  spec.add_eos = *add_eos;
  spec.add_space_prefix = *add_space;
  if (const GgufValue* tmpl = file.Find("tokenizer.chat_template")) {
    if (tmpl->type != GgufType::kString)
      return keys.Error("tokenizer.chat_template", "expected a string");
    spec.chat_template = tmpl->s;
  }

  // End-of-turn tokens of chat models also end generation.
  auto add_extra_eos = [&](int32_t id) {
    if (spec.eos_id == id) return;
    for (int32_t e : spec.extra_eos_ids) {
      if (e == id) return;
    }
    spec.extra_eos_ids.push_back(id);
  };
  for (const char* name : {"<|eot_id|>", "<|im_end|>", "<|end_of_text|>"}) {
    for (size_t k = 0; k < vocab; ++k) {
      if (spec.tokens[k] == name) {
        add_extra_eos(static_cast<int32_t>(k));
        break;
      }
    }
  }
  auto eot = keys.TokenId("tokenizer.ggml.eot_token_id", vocab);
  if (!eot.ok()) return eot.status();
  if (eot->has_value()) add_extra_eos(**eot);
  return spec;
}

}  // namespace tokenmill::model
