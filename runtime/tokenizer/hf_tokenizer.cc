#include "runtime/tokenizer/hf_tokenizer.h"

#include <map>
#include <string>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "runtime/tokenizer/sentencepiece_bpe.h"

namespace tokenmill::tokenizer {
namespace {

using Json = nlohmann::json;

absl::StatusOr<Json> ParseJson(std::string_view text, const char* what) {
  Json doc = Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat(what, " is not valid JSON"));
  }
  if (!doc.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(what, " is not a JSON object"));
  }
  return doc;
}

std::string StringField(const Json& node, const char* key) {
  auto it = node.find(key);
  return it != node.end() && it->is_string() ? it->get<std::string>() : std::string();
}

bool BoolField(const Json& node, const char* key, bool fallback) {
  auto it = node.find(key);
  return it != node.end() && it->is_boolean() ? it->get<bool>() : fallback;
}

// Calls fn on every component of `node` (a Sequence's members included).
template <typename Fn>
void ForEachComponent(const Json& node, const Fn& fn) {
  if (!node.is_object()) return;
  fn(node);
  for (const char* list : {"pretokenizers", "normalizers", "decoders"}) {
    auto items = node.find(list);
    if (items == node.end() || !items->is_array()) continue;
    for (const Json& item : *items) ForEachComponent(item, fn);
  }
}

// Whether `node` is a component of `type`, or a Sequence holding one.
bool HasComponent(const Json& node, std::string_view type) {
  bool found = false;
  ForEachComponent(node, [&](const Json& component) {
    found = found || StringField(component, "type") == type;
  });
  return found;
}

// The Split pre-tokenizer's regex names the pre-tokenizer kind.
PreTokenizer PreTokenizerFromPattern(const std::string& pattern) {
  if (pattern.find("\\p{N}{1,3}") != std::string::npos) return PreTokenizer::kLlama3;
  if (pattern.find("[^\\r\\n\\p{L}\\p{N}]?\\p{L}+") != std::string::npos &&
      pattern.find("\\p{N}") != std::string::npos) {
    return PreTokenizer::kQwen2;
  }
  return PreTokenizer::kGpt2;
}

PreTokenizer DetectPreTokenizer(const Json& pre_tokenizer) {
  std::vector<std::string> patterns;
  ForEachComponent(pre_tokenizer, [&](const Json& component) {
    if (StringField(component, "type") != "Split") return;
    auto it = component.find("pattern");
    if (it != component.end() && it->is_object()) patterns.push_back(StringField(*it, "Regex"));
  });
  // DeepSeek-V3: digits, CJK runs, then letters with their combining marks.
  if (patterns.size() == 3 && patterns[0] == "\\p{N}{1,3}" &&
      patterns[2].find("[\\p{L}\\p{M}]+") != std::string::npos) {
    return PreTokenizer::kDeepSeekV3;
  }
  return PreTokenizerFromPattern(patterns.empty() ? std::string() : patterns.front());
}

// Normalisers and pre-tokenizers that spell spaces "▁" mark SentencePiece
// style; the second member says whether they also prefix one.
std::pair<bool, bool> DetectMetaspace(const Json& doc) {
  bool metaspace = false;
  bool prefix = false;
  auto visit = [&](const Json& component) {
    const std::string type = StringField(component, "type");
    if (type == "Metaspace") {
      metaspace = true;
      const std::string scheme = StringField(component, "prepend_scheme");
      if (scheme == "always" || scheme == "first" ||
          BoolField(component, "add_prefix_space", false)) {
        prefix = true;
      }
    } else if (type == "Replace" && StringField(component, "content") == kSentencePieceSpace) {
      metaspace = true;
    } else if (type == "Prepend" && StringField(component, "prepend") == kSentencePieceSpace) {
      prefix = true;
    }
  };
  for (const char* key : {"normalizer", "pre_tokenizer"}) {
    auto it = doc.find(key);
    if (it != doc.end()) ForEachComponent(*it, visit);
  }
  return {metaspace, prefix};
}

// Whether any string inside `node` equals `text` (the post-processor names
// the special tokens it adds).
bool MentionsString(const Json& node, const std::string& text) {
  if (node.is_string()) return node.get<std::string>() == text;
  if (node.is_object() || node.is_array()) {
    for (const Json& item : node) {
      if (MentionsString(item, text)) return true;
    }
  }
  return false;
}

// generation_config.json's eos_token_id: a number, a list of numbers, or
// absent / null (no ids).
absl::StatusOr<std::vector<int32_t>> GenerationEosIds(std::string_view text, size_t vocab_size) {
  absl::StatusOr<Json> config = ParseJson(text, "generation_config.json");
  if (!config.ok()) return config.status();
  std::vector<int32_t> ids;
  auto it = config->find("eos_token_id");
  if (it == config->end() || it->is_null()) return ids;
  const Json list = it->is_array() ? *it : Json::array({*it});
  for (const Json& id : list) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 ||
        id.get<int64_t>() >= static_cast<int64_t>(vocab_size)) {
      return absl::InvalidArgumentError(
          absl::StrCat("generation_config.json: eos_token_id ", id.dump(),
                       " is not a token id of the vocabulary of ", vocab_size, " tokens"));
    }
    ids.push_back(static_cast<int32_t>(id.get<int64_t>()));
  }
  return ids;
}

struct Vocabulary {
  std::map<int64_t, std::pair<std::string, TokenType>> entries;
  absl::flat_hash_map<std::string, int32_t> ids;  // text -> lowest id
};

absl::Status AddEntry(Vocabulary* vocab, int64_t id, const std::string& text, TokenType type) {
  auto [it, inserted] = vocab->entries.try_emplace(id, text, type);
  if (!inserted) {
    if (it->second.first != text) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", id, " is used by both '",
                                                     it->second.first, "' and '", text, "'"));
    }
    it->second.second = type;  // an added token restating a vocab entry sets its type
  }
  return absl::OkStatus();
}

// A token named by tokenizer_config.json: a string, {"content": ...} or null.
absl::StatusOr<std::optional<int32_t>> ConfigTokenId(const Json& config, const char* key,
                                                     const Vocabulary& vocab) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return std::optional<int32_t>();
  std::string text;
  if (it->is_string()) {
    text = it->get<std::string>();
  } else if (it->is_object()) {
    text = StringField(*it, "content");
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer_config.json: ", key, " is neither a string nor {content}"));
  }
  auto id = vocab.ids.find(text);
  if (id == vocab.ids.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer_config.json: ", key, " '", text, "' is not in the vocabulary"));
  }
  return std::optional<int32_t>(id->second);
}

absl::StatusOr<std::string> ChatTemplate(const Json& config) {
  auto it = config.find("chat_template");
  if (it == config.end() || it->is_null()) return std::string();
  if (it->is_string()) return it->get<std::string>();
  if (it->is_array()) {
    for (const Json& entry : *it) {
      if (entry.is_object() && StringField(entry, "name") == "default") {
        return StringField(entry, "template");
      }
    }
    return std::string();
  }
  return absl::InvalidArgumentError(
      "tokenizer_config.json: chat_template is neither a string nor a list of {name, template}");
}

// Merges as "left right", each part and their concatenation checked against
// the vocabulary.
absl::StatusOr<std::vector<std::string>> ParseMerges(const Json& model, const Vocabulary& vocab) {
  std::vector<std::string> merges;
  auto it = model.find("merges");
  if (it == model.end() || it->is_null()) return merges;
  if (!it->is_array()) return absl::InvalidArgumentError("model.merges is not a list");
  merges.reserve(it->size());
  for (const Json& entry : *it) {
    const size_t rank = merges.size();
    std::string left, right;
    if (entry.is_string()) {
      const std::string text = entry.get<std::string>();
      const size_t space = text.find(' ');
      if (space == std::string::npos || text.find(' ', space + 1) != std::string::npos) {
        return absl::InvalidArgumentError(
            absl::StrCat("merge ", rank, " '", text, "' is not two tokens separated by a space"));
      }
      left = text.substr(0, space);
      right = text.substr(space + 1);
    } else if (entry.is_array() && entry.size() == 2 && entry[0].is_string() &&
               entry[1].is_string()) {
      left = entry[0].get<std::string>();
      right = entry[1].get<std::string>();
      if (left.find(' ') != std::string::npos || right.find(' ') != std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat(
            "merge ", rank, " has a token with a space, which a TokenizerSpec cannot hold"));
      }
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("merge ", rank, " is neither \"a b\" nor [a, b]"));
    }
    for (const std::string& part : {left, right, left + right}) {
      if (part.empty() || !vocab.ids.contains(part)) {
        return absl::InvalidArgumentError(absl::StrCat("merge ", rank, " '", left, " ", right,
                                                       "' names unknown token '", part, "'"));
      }
    }
    merges.push_back(absl::StrCat(left, " ", right));
  }
  return merges;
}

absl::StatusOr<Vocabulary> ParseVocabulary(const Json& doc, const Json& model) {
  Vocabulary vocab;
  auto it = model.find("vocab");
  if (it == model.end() || !it->is_object()) {
    return absl::InvalidArgumentError("model.vocab is missing or not an object");
  }
  for (const auto& [text, id] : it->items()) {
    if (!id.is_number_integer()) {
      return absl::InvalidArgumentError(
          absl::StrCat("model.vocab: '", text, "' has no integer id"));
    }
    if (absl::Status s = AddEntry(&vocab, id.get<int64_t>(), text, TokenType::kNormal); !s.ok()) {
      return s;
    }
  }
  auto added = doc.find("added_tokens");
  if (added != doc.end() && !added->is_null()) {
    if (!added->is_array()) return absl::InvalidArgumentError("added_tokens is not a list");
    for (const Json& token : *added) {
      auto id = token.is_object() ? token.find("id") : token.end();
      if (!token.is_object() || id == token.end() || !id->is_number_integer() ||
          !token.contains("content") || !token["content"].is_string()) {
        return absl::InvalidArgumentError("added_tokens: an entry lacks an integer id or content");
      }
      const TokenType type =
          BoolField(token, "special", false) ? TokenType::kControl : TokenType::kUserDefined;
      if (absl::Status s =
              AddEntry(&vocab, id->get<int64_t>(), StringField(token, "content"), type);
          !s.ok()) {
        return s;
      }
    }
  }
  // Ids must be exactly 0..N-1: a gap would leave an id without text.
  const int64_t size = static_cast<int64_t>(vocab.entries.size());
  for (const auto& [id, entry] : vocab.entries) {
    if (id < 0 || id >= size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "token id ", id, " ('", entry.first, "') is out of range: the vocabulary has ", size,
          " tokens, so ids must be 0..", size - 1));
    }
    vocab.ids.try_emplace(entry.first, static_cast<int32_t>(id));
  }
  return vocab;
}

absl::StatusOr<TokenizerSpec> Parse(std::string_view tokenizer_json,
                                    std::string_view tokenizer_config_json,
                                    std::string_view generation_config_json) {
  absl::StatusOr<Json> doc = ParseJson(tokenizer_json, "tokenizer.json");
  if (!doc.ok()) return doc.status();
  auto model_it = doc->find("model");
  if (model_it == doc->end() || !model_it->is_object()) {
    return absl::InvalidArgumentError("tokenizer.json has no model");
  }
  const Json& model = *model_it;
  const std::string model_type = StringField(model, "type");
  if (model_type != "BPE" && !(model_type.empty() && model.contains("merges"))) {
    return absl::UnimplementedError(
        absl::StrCat("tokenizer model type '", model_type, "' is not supported (only BPE)"));
  }

  absl::StatusOr<Vocabulary> vocab = ParseVocabulary(*doc, model);
  if (!vocab.ok()) return vocab.status();
  absl::StatusOr<std::vector<std::string>> merges = ParseMerges(model, *vocab);
  if (!merges.ok()) return merges.status();

  TokenizerSpec spec;
  const Json null_json;
  const Json& pre_tokenizer = doc->contains("pre_tokenizer") ? (*doc)["pre_tokenizer"] : null_json;
  const Json& decoder = doc->contains("decoder") ? (*doc)["decoder"] : null_json;
  const auto [metaspace, prefix] = DetectMetaspace(*doc);
  const bool byte_fallback = BoolField(model, "byte_fallback", false);
  if (doc->contains("normalizer") && HasComponent((*doc)["normalizer"], "NFC")) {
    spec.normalizer = Normalizer::kNfc;
  }
  if (HasComponent(pre_tokenizer, "ByteLevel") || HasComponent(decoder, "ByteLevel")) {
    spec.kind = TokenizerKind::kByteLevelBpe;
    spec.pre = DetectPreTokenizer(pre_tokenizer);
    spec.merges = *std::move(merges);
    spec.ignore_merges = BoolField(model, "ignore_merges", false);
  } else if (byte_fallback || metaspace) {
    spec.kind = TokenizerKind::kSentencePieceBpe;
    spec.add_space_prefix = prefix;
  } else {
    return absl::UnimplementedError(
        "BPE tokenizer is neither byte-level (ByteLevel) nor SentencePiece style "
        "(Metaspace / \"▁\" normaliser / byte_fallback)");
  }

  const size_t n = vocab->entries.size();
  spec.tokens.reserve(n);
  spec.token_types.reserve(n);
  for (auto& [id, entry] : vocab->entries) {
    TokenType type = entry.second;
    if (spec.kind == TokenizerKind::kSentencePieceBpe && type == TokenType::kNormal &&
        byte_fallback && ParseByteTokenText(entry.first) >= 0) {
      type = TokenType::kByte;
    }
    spec.tokens.push_back(entry.first);
    spec.token_types.push_back(type);
  }
  const std::string unk = StringField(model, "unk_token");
  if (!unk.empty()) {
    auto id = vocab->ids.find(unk);
    if (id == vocab->ids.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("model.unk_token '", unk, "' is not in the vocabulary"));
    }
    spec.unk_id = id->second;
    spec.token_types[id->second] = TokenType::kUnknown;
  }
  if (spec.kind == TokenizerKind::kSentencePieceBpe) {
    // Merge rank orders SentencePiece merges: the earlier merge, the higher the
    // score. Tokens no merge produces score below all of them, by vocab order.
    const float unranked = -static_cast<float>(merges->size());
    spec.scores.assign(n, 0.0f);
    for (size_t id = 0; id < n; ++id) spec.scores[id] = unranked - static_cast<float>(id);
    for (size_t rank = merges->size(); rank-- > 0;) {
      const std::string& merge = (*merges)[rank];
      const size_t space = merge.find(' ');
      const int32_t merged = vocab->ids.at(merge.substr(0, space) + merge.substr(space + 1));
      spec.scores[merged] = -static_cast<float>(rank);
    }
  }

  spec.add_bos = false;
  if (!tokenizer_config_json.empty()) {
    absl::StatusOr<Json> config = ParseJson(tokenizer_config_json, "tokenizer_config.json");
    if (!config.ok()) return config.status();
    absl::StatusOr<std::string> chat_template = ChatTemplate(*config);
    if (!chat_template.ok()) return chat_template.status();
    spec.chat_template = *std::move(chat_template);
    for (auto [key, field] :
         {std::pair{"bos_token", &spec.bos_id}, std::pair{"eos_token", &spec.eos_id},
          std::pair{"pad_token", &spec.pad_id}}) {
      absl::StatusOr<std::optional<int32_t>> id = ConfigTokenId(*config, key, *vocab);
      if (!id.ok()) return id.status();
      *field = *id;
    }
    // Without add_bos_token, BOS is added when the post-processor adds it
    // (Llama 3 does it that way).
    const auto post = doc->find("post_processor");
    const bool post_adds_bos =
        spec.bos_id && post != doc->end() && MentionsString(*post, spec.tokens[*spec.bos_id]);
    spec.add_bos = spec.bos_id && BoolField(*config, "add_bos_token", post_adds_bos);
    spec.add_eos = spec.eos_id && BoolField(*config, "add_eos_token", false);
  }

  auto add_extra_eos = [&](int32_t id) {
    if (spec.eos_id == id) return;
    for (int32_t extra : spec.extra_eos_ids) {
      if (extra == id) return;
    }
    spec.extra_eos_ids.push_back(id);
  };
  if (!generation_config_json.empty()) {
    absl::StatusOr<std::vector<int32_t>> ids =
        GenerationEosIds(generation_config_json, spec.tokens.size());
    if (!ids.ok()) return ids.status();
    for (int32_t id : *ids) add_extra_eos(id);
  }
  // End-of-turn tokens of the supported families stop generation too, for
  // models that ship no generation_config.json.
  for (const char* text :
       {"<|eot_id|>", "<|eom_id|>", "<|end_of_text|>", "<|im_end|>", "<|endoftext|>", "</s>",
        "<|end|>", "<eos>", "<end_of_turn>", "<｜end▁of▁sentence｜>"}) {
    auto id = vocab->ids.find(text);
    if (id == vocab->ids.end()) continue;
    if (spec.token_types[id->second] == TokenType::kControl) add_extra_eos(id->second);
  }
  return spec;
}

}  // namespace

absl::StatusOr<TokenizerSpec> ParseHfTokenizer(std::string_view tokenizer_json,
                                               std::string_view tokenizer_config_json,
                                               std::string_view generation_config_json) {
  // Every field is type-checked before use; this only turns a missed check
  // into an error instead of an exception crossing the module boundary.
  try {
    return Parse(tokenizer_json, tokenizer_config_json, generation_config_json);
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer JSON: ", e.what()));
  }
}

}  // namespace tokenmill::tokenizer
