#include "runtime/tokenizer/tokenizer.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "runtime/tokenizer/byte_level_bpe.h"
#include "runtime/tokenizer/pre_tokenizer.h"
#include "runtime/tokenizer/sentencepiece_bpe.h"
#include "runtime/tokenizer/unicode_text.h"

namespace tokenmill::tokenizer {
namespace {

bool IsKnownType(TokenType type) {
  const int32_t value = static_cast<int32_t>(type);
  return value >= static_cast<int32_t>(TokenType::kNormal) &&
         value <= static_cast<int32_t>(TokenType::kByte);
}

// Types that carry no text of their own: decoded as their name unless skipped.
bool IsSpecial(TokenType type) {
  return type == TokenType::kControl || type == TokenType::kUnknown || type == TokenType::kUnused;
}

absl::Status CheckId(const std::optional<int32_t>& id, const char* what, size_t vocab_size) {
  if (id && (*id < 0 || static_cast<size_t>(*id) >= vocab_size)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " id ", *id, " is outside the vocabulary of ", vocab_size, " tokens"));
  }
  return absl::OkStatus();
}

std::string SentencePieceTextToBytes(std::string_view text) {
  std::string bytes;
  bytes.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) {
    if (text.substr(pos).starts_with(kSentencePieceSpace)) {
      bytes.push_back(' ');
      pos += kSentencePieceSpace.size();
    } else {
      bytes.push_back(text[pos++]);
    }
  }
  return bytes;
}

}  // namespace

// Scratch space of one Encode call.
struct Tokenizer::EncodeScratch {
  std::vector<TextUnit> units;
  std::vector<std::string_view> words;
  std::string normalized;
  BpeScratch bpe;
  SentencePieceScratch sentencepiece;
};

Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Create(const TokenizerSpec& spec) {
  const size_t n = spec.tokens.size();
  if (n == 0) return absl::InvalidArgumentError("vocabulary has no tokens");
  if (n > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return absl::InvalidArgumentError(absl::StrCat("vocabulary of ", n, " tokens is too large"));
  }
  if (!spec.token_types.empty() && spec.token_types.size() != n) {
    return absl::InvalidArgumentError(absl::StrCat("vocabulary has ", n, " tokens but ",
                                                   spec.token_types.size(), " token types"));
  }
  if (!spec.scores.empty() && spec.scores.size() != n) {
    return absl::InvalidArgumentError(
        absl::StrCat("vocabulary has ", n, " tokens but ", spec.scores.size(), " scores"));
  }
  for (const absl::Status& status :
       {CheckId(spec.bos_id, "bos", n), CheckId(spec.eos_id, "eos", n),
        CheckId(spec.unk_id, "unk", n), CheckId(spec.pad_id, "pad", n)}) {
    if (!status.ok()) return status;
  }
  for (int32_t id : spec.extra_eos_ids) {
    if (absl::Status status = CheckId(id, "extra eos", n); !status.ok()) return status;
  }

  auto tokenizer = std::unique_ptr<Tokenizer>(new Tokenizer());
  Tokenizer& t = *tokenizer;
  t.kind_ = spec.kind;
  t.pre_ = spec.pre;
  t.tokens_ = spec.tokens;
  t.types_ =
      spec.token_types.empty() ? std::vector<TokenType>(n, TokenType::kNormal) : spec.token_types;
  t.bos_id_ = spec.bos_id;
  t.eos_id_ = spec.eos_id;
  t.unk_id_ = spec.unk_id;
  t.pad_id_ = spec.pad_id;
  t.extra_eos_ids_ = spec.extra_eos_ids;
  t.add_bos_ = spec.add_bos;
  t.add_eos_ = spec.add_eos;
  t.add_space_prefix_ = spec.kind == TokenizerKind::kSentencePieceBpe && spec.add_space_prefix;
  t.chat_template_ = spec.chat_template;
  t.normalizer_ = spec.normalizer;

  t.token_ids_.reserve(n);
  for (size_t id = 0; id < n; ++id) {
    if (!IsKnownType(t.types_[id])) {
      return absl::InvalidArgumentError(absl::StrCat("token ", id, " '", t.tokens_[id],
                                                     "' has unknown type ",
                                                     static_cast<int32_t>(t.types_[id])));
    }
    auto [it, inserted] = t.token_ids_.try_emplace(t.tokens_[id], static_cast<int32_t>(id));
    // Repeated special or unused entries occur in real vocabularies and are
    // harmless (the lowest id wins); a repeated normal token makes merges
    // ambiguous.
    if (!inserted && t.types_[id] == TokenType::kNormal &&
        t.types_[it->second] == TokenType::kNormal) {
      return absl::InvalidArgumentError(absl::StrCat(
          "token '", t.tokens_[id], "' appears twice (ids ", it->second, " and ", id, ")"));
    }
  }

  if (spec.kind == TokenizerKind::kByteLevelBpe) {
    auto bpe = ByteLevelBpe::Build(
        spec, t.token_ids_,
        /*use_whole_words=*/spec.ignore_merges.value_or(spec.pre == PreTokenizer::kLlama3));
    if (!bpe.ok()) return bpe.status();
    t.byte_level_ = *std::move(bpe);
  } else {
    auto bpe = SentencePieceBpe::Build(spec);
    if (!bpe.ok()) return bpe.status();
    t.sentencepiece_ = *std::move(bpe);
  }

  t.token_bytes_.resize(n);
  for (size_t id = 0; id < n; ++id) {
    const TokenType type = t.types_[id];
    const std::string& text = t.tokens_[id];
    std::string& bytes = t.token_bytes_[id];
    if (IsSpecial(type)) continue;
    if (type == TokenType::kUserDefined) {
      // Hugging Face runs added tokens through the decoder too: Gemma's
      // "▁▁▁▁" indentation tokens are spaces.
      bytes = spec.kind == TokenizerKind::kSentencePieceBpe ? SentencePieceTextToBytes(text) : text;
    } else if (type == TokenType::kByte && ParseByteTokenText(text) >= 0) {
      bytes.assign(1, static_cast<char>(ParseByteTokenText(text)));
    } else if (spec.kind == TokenizerKind::kByteLevelBpe) {
      // Tokens outside the byte alphabet are plain text.
      if (!DecodeByteLevelText(text, &bytes)) bytes = text;
    } else {
      bytes = SentencePieceTextToBytes(text);
    }
  }

  for (size_t id = 0; id < n; ++id) {
    const TokenType type = t.types_[id];
    if (type == TokenType::kControl || type == TokenType::kUnknown ||
        type == TokenType::kUserDefined) {
      t.specials_.Add(t.tokens_[id], static_cast<int32_t>(id), type != TokenType::kUserDefined);
    }
  }
  t.specials_.Finish();
  return tokenizer;
}

std::vector<int32_t> Tokenizer::Encode(std::string_view text) const {
  return Encode(text, EncodeOptions{});
}

std::vector<int32_t> Tokenizer::Encode(std::string_view text, const EncodeOptions& options) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 2);
  if (options.add_bos && add_bos_ && bos_id_) ids.push_back(*bos_id_);

  EncodeScratch scratch;
  size_t plain_start = 0;
  size_t next_literal = 0;  // first literal span that may reach past pos
  if (!specials_.empty()) {
    for (size_t pos = 0; pos < text.size();) {
      if (!specials_.MayStartWith(static_cast<uint8_t>(text[pos]))) {
        ++pos;
        continue;
      }
      SpecialTokenMatcher::Match match = specials_.MatchAt(text, pos, options.parse_special);
      if (match.id >= 0 && options.parse_special && !options.literal_spans.empty() &&
          types_[match.id] == TokenType::kControl) {
        // A control token overlapping literal text is not parsed there.
        while (next_literal < options.literal_spans.size() &&
               options.literal_spans[next_literal].second <= pos) {
          ++next_literal;
        }
        if (next_literal < options.literal_spans.size() &&
            options.literal_spans[next_literal].first < pos + match.length) {
          match = specials_.MatchAt(text, pos, /*include_control=*/false);
        }
      }
      if (match.id < 0) {
        ++pos;
        continue;
      }
      if (pos > plain_start) {
        EncodePlain(text.substr(plain_start, pos - plain_start), &scratch, &ids);
      }
      ids.push_back(match.id);
      pos += match.length;
      plain_start = pos;
    }
  }
  if (plain_start < text.size()) {
    EncodePlain(text.substr(plain_start), &scratch, &ids);
  }

  if (options.add_eos && add_eos_ && eos_id_) ids.push_back(*eos_id_);
  return ids;
}

void Tokenizer::EncodePlain(std::string_view text, EncodeScratch* scratch,
                            std::vector<int32_t>* ids) const {
  if (normalizer_ == Normalizer::kNfc && NormalizeNfc(text, &scratch->normalized)) {
    text = scratch->normalized;
  }
  if (sentencepiece_) {
    // Plain text starts the input or follows a special token; either way it
    // gets the space prefix, as in SentencePiece and llama.cpp.
    sentencepiece_->EncodeFragment(text, add_space_prefix_, &scratch->sentencepiece, ids);
    return;
  }
  scratch->words.clear();
  SplitWords(text, pre_, &scratch->units, &scratch->words);
  for (std::string_view word : scratch->words) byte_level_->EncodeWord(word, &scratch->bpe, ids);
}

void Tokenizer::AppendDecoded(int32_t id, bool skip_special, bool* at_start,
                              std::string* out) const {
  if (id < 0 || id >= vocab_size()) return;
  const TokenType type = types_[id];
  // As Hugging Face's Strip decoder after Fuse: only the very first
  // character of the decoded text is dropped when it is the prefix space, so
  // a special token written out first keeps the space after it ("<s> Hi").
  if (IsSpecial(type)) {
    if (!skip_special) {
      out->append(tokens_[id]);
      *at_start = false;
    }
    return;
  }
  const std::string& bytes = token_bytes_[id];
  if (bytes.empty()) return;
  const bool strip = *at_start && add_space_prefix_ && bytes.front() == ' ';
  *at_start = false;
  out->append(bytes, strip ? 1 : 0);
}

std::string Tokenizer::Decode(std::span<const int32_t> ids, bool skip_special) const {
  std::string out;
  bool at_start = true;
  for (int32_t id : ids) AppendDecoded(id, skip_special, &at_start, &out);
  return out;
}

std::string Tokenizer::TokenBytes(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return "";
  return token_bytes_[id];
}

std::string_view Tokenizer::TokenText(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return {};
  return tokens_[id];
}

TokenType Tokenizer::token_type(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return TokenType::kUnused;
  return types_[id];
}

std::optional<int32_t> Tokenizer::TokenId(std::string_view token_text) const {
  auto it = token_ids_.find(absl::string_view(token_text.data(), token_text.size()));
  if (it == token_ids_.end()) return std::nullopt;
  return it->second;
}

bool Tokenizer::IsEos(int32_t id) const {
  if (eos_id_ && id == *eos_id_) return true;
  for (int32_t extra : extra_eos_ids_) {
    if (id == extra) return true;
  }
  return false;
}

StreamDecoder::StreamDecoder(const Tokenizer& tokenizer, bool skip_special,
                             std::span<const int32_t> kept)
    : tokenizer_(tokenizer), skip_special_(skip_special), kept_(kept.begin(), kept.end()) {
  std::sort(kept_.begin(), kept_.end());
}

std::string StreamDecoder::Push(int32_t id) {
  const bool skip = skip_special_ && !std::binary_search(kept_.begin(), kept_.end(), id);
  tokenizer_.AppendDecoded(id, skip, &at_start_, &pending_);
  const size_t complete = CompleteUtf8Prefix(pending_);
  std::string out = pending_.substr(0, complete);
  pending_.erase(0, complete);
  return out;
}

std::string StreamDecoder::Flush() {
  std::string out = std::move(pending_);
  pending_.clear();
  at_start_ = true;
  return out;
}

}  // namespace tokenmill::tokenizer
