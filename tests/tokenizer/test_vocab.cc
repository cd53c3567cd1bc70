#include "tests/tokenizer/test_vocab.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "absl/container/flat_hash_map.h"
#include "runtime/tokenizer/byte_level_bpe.h"
#include "runtime/tokenizer/pre_tokenizer.h"
#include "runtime/tokenizer/unicode_text.h"

namespace tokenmill::tokenizer::testing {
namespace {

void AssignSpecialIds(TokenizerSpec* spec) {
  for (size_t id = 0; id < spec->tokens.size(); ++id) {
    if (spec->token_types[id] != TokenType::kControl) continue;
    const std::string& text = spec->tokens[id];
    const int32_t id32 = static_cast<int32_t>(id);
    if (text == "<s>" || text == "<|begin_of_text|>") spec->bos_id = id32;
    if (text == "</s>" || text == "<|end_of_text|>") spec->eos_id = id32;
    if (text == "<|eot_id|>" || text == "<|im_end|>") spec->extra_eos_ids.push_back(id32);
  }
  spec->add_bos = spec->bos_id.has_value();
}

}  // namespace

std::string ByteLevelSpelling(std::string_view raw) {
  std::string out;
  for (char c : raw) AppendUtf8(ByteToCodePoint(static_cast<uint8_t>(c)), &out);
  return out;
}

TokenizerSpec ByteLevelSpec(PreTokenizer pre,
                            const std::vector<std::pair<std::string, std::string>>& merges,
                            const std::vector<std::string>& control,
                            const std::vector<std::string>& user_defined) {
  TokenizerSpec spec;
  spec.kind = TokenizerKind::kByteLevelBpe;
  spec.pre = pre;
  std::map<std::string, int32_t> raw_ids;
  auto add = [&](const std::string& raw) {
    if (raw_ids.contains(raw)) return;
    raw_ids[raw] = static_cast<int32_t>(spec.tokens.size());
    spec.tokens.push_back(ByteLevelSpelling(raw));
    spec.token_types.push_back(TokenType::kNormal);
  };
  for (int b = 0; b < 256; ++b) add(std::string(1, static_cast<char>(b)));
  for (const auto& [left, right] : merges) {
    spec.merges.push_back(ByteLevelSpelling(left) + " " + ByteLevelSpelling(right));
    add(left + right);
  }
  for (const std::string& text : control) {
    spec.tokens.push_back(text);
    spec.token_types.push_back(TokenType::kControl);
  }
  for (const std::string& text : user_defined) {
    spec.tokens.push_back(text);
    spec.token_types.push_back(TokenType::kUserDefined);
  }
  AssignSpecialIds(&spec);
  return spec;
}

TokenizerSpec TrainByteLevelSpec(const std::string& corpus, PreTokenizer pre, int num_merges,
                                 const std::vector<std::string>& control) {
  // Words as symbol id sequences, with their frequencies.
  std::vector<TextUnit> units;
  std::vector<std::string_view> pieces;
  SplitWords(corpus, pre, &units, &pieces);
  std::map<std::string_view, int64_t> counts;
  for (std::string_view piece : pieces) ++counts[piece];

  std::vector<std::string> symbol_text;
  for (int b = 0; b < 256; ++b) symbol_text.emplace_back(1, static_cast<char>(b));
  std::vector<std::pair<std::vector<int32_t>, int64_t>> words;
  for (const auto& [piece, count] : counts) {
    std::vector<int32_t> symbols;
    for (char c : piece) symbols.push_back(static_cast<uint8_t>(c));
    words.emplace_back(std::move(symbols), count);
  }
  absl::flat_hash_map<std::string, int32_t> known;
  for (int b = 0; b < 256; ++b) known[symbol_text[b]] = b;

  std::vector<std::pair<std::string, std::string>> merges;
  absl::flat_hash_map<uint64_t, int64_t> pair_counts;
  for (int m = 0; m < num_merges; ++m) {
    pair_counts.clear();
    for (const auto& [symbols, count] : words) {
      for (size_t i = 0; i + 1 < symbols.size(); ++i) {
        pair_counts[(static_cast<uint64_t>(symbols[i]) << 32) |
                    static_cast<uint32_t>(symbols[i + 1])] += count;
      }
    }
    uint64_t best = 0;
    int64_t best_count = 1;  // a pair seen once is not worth a merge
    for (const auto& [key, count] : pair_counts) {
      if (count > best_count || (count == best_count && best_count > 1 && key < best)) {
        best = key;
        best_count = count;
      }
    }
    if (best_count <= 1) break;
    const int32_t left = static_cast<int32_t>(best >> 32);
    const int32_t right = static_cast<int32_t>(best & 0xFFFFFFFFu);
    const std::string merged = symbol_text[left] + symbol_text[right];
    int32_t merged_id;
    if (auto it = known.find(merged); it != known.end()) {
      merged_id = it->second;
    } else {
      merged_id = static_cast<int32_t>(symbol_text.size());
      symbol_text.push_back(merged);
      known[merged] = merged_id;
    }
    merges.emplace_back(symbol_text[left], symbol_text[right]);
    for (auto& [symbols, count] : words) {
      size_t out = 0;
      for (size_t i = 0; i < symbols.size(); ++i) {
        if (i + 1 < symbols.size() && symbols[i] == left && symbols[i + 1] == right) {
          symbols[out++] = merged_id;
          ++i;
        } else {
          symbols[out++] = symbols[i];
        }
      }
      symbols.resize(out);
    }
  }
  return ByteLevelSpec(pre, merges, control);
}

TokenizerSpec SentencePieceSpec(const std::vector<std::string>& pieces, bool byte_tokens,
                                bool add_space_prefix) {
  TokenizerSpec spec;
  spec.kind = TokenizerKind::kSentencePieceBpe;
  spec.add_space_prefix = add_space_prefix;
  auto add = [&](std::string text, TokenType type, float score) {
    spec.tokens.push_back(std::move(text));
    spec.token_types.push_back(type);
    spec.scores.push_back(score);
  };
  add("<unk>", TokenType::kUnknown, 0);
  add("<s>", TokenType::kControl, 0);
  add("</s>", TokenType::kControl, 0);
  if (byte_tokens) {
    static const char kHex[] = "0123456789ABCDEF";
    for (int b = 0; b < 256; ++b) {
      add(std::string("<0x") + kHex[b >> 4] + kHex[b & 15] + ">", TokenType::kByte, 0);
    }
  }
  for (size_t i = 0; i < pieces.size(); ++i) {
    std::string text;
    for (char c : pieces[i]) {
      if (c == ' ') {
        text += "\xE2\x96\x81";
      } else {
        text.push_back(c);
      }
    }
    add(text, TokenType::kNormal, -static_cast<float>(i));
  }
  spec.unk_id = 0;
  spec.bos_id = 1;
  spec.eos_id = 2;
  spec.add_bos = true;
  return spec;
}

std::string RandomBytes(std::mt19937& rng, size_t max_length) {
  static const char kCommon[] = " \r\n\t'aZz09.,<|";
  std::uniform_int_distribution<size_t> length(0, max_length);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_int_distribution<size_t> common(0, sizeof(kCommon) - 2);
  std::string out(length(rng), '\0');
  for (char& c : out) {
    c = rng() % 2 ? static_cast<char>(byte(rng)) : kCommon[common(rng)];
  }
  return out;
}

std::string RandomText(std::mt19937& rng, size_t max_pieces) {
  static const std::vector<std::string> kPieces = {"hello",    "World",
                                                   "the",      "I",
                                                   "don",      "'s",
                                                   "'T",       "'re",
                                                   "'LL",      "'",
                                                   " ",        "  ",
                                                   "   ",      "\t",
                                                   "\n",       "\r\n",
                                                   "\n\n",     " \n",
                                                   "1",        "23",
                                                   "4567",     "3.14",
                                                   "-",        ".",
                                                   ",",        "!?",
                                                   "...",      "\"",
                                                   "(",        ")",
                                                   "<",        "|",
                                                   "日本語",   "中文",
                                                   "한국어",   "😀",
                                                   "👋🏽", "👨‍👩‍👧",
                                                   "e\u0301",  "n\u0303",
                                                   "שלום",     "مرحبا",
                                                   "١٢٣",      "\u00a0",
                                                   "\u3000",   "\u2028",
                                                   "½",        "Ⅻ",
                                                   "ǅ",        "ß",
                                                   "—",        "€",
                                                   "\u200b",   "Ωmega"};
  std::uniform_int_distribution<size_t> count(0, max_pieces);
  std::uniform_int_distribution<size_t> pick(0, kPieces.size() - 1);
  std::uniform_int_distribution<int32_t> code_point(0x20, 0x10FFFF);
  std::string out;
  const size_t n = count(rng);
  for (size_t i = 0; i < n; ++i) {
    if (rng() % 8 == 0) {
      int32_t cp = code_point(rng);
      if ((cp >= 0xD800 && cp <= 0xDFFF) || cp == 0x2581) cp = 'x';
      AppendUtf8(cp, &out);
    } else {
      out += kPieces[pick(rng)];
    }
  }
  return out;
}

std::string EnglishLikeText(size_t bytes, uint32_t seed) {
  static const std::vector<std::string> kSyllables = {
      "the", "an",  "in", "er", "on",  "re",  "at",  "en",   "ti",   "es", "or", "ing", "al", "st",
      "ar",  "le",  "ed", "to", "com", "pro", "con", "ment", "tion", "ly", "be", "de",  "ex", "ma",
      "per", "ver", "un", "o",  "a",   "i",   "ca",  "go",   "sa",   "mo", "di", "ter"};
  std::mt19937 rng(seed);
  std::vector<std::string> words = {"the", "of",  "and", "to",   "a",  "in", "is",  "it",  "that",
                                    "was", "for", "on",  "with", "as", "he", "she", "they"};
  std::uniform_int_distribution<size_t> syllable(0, kSyllables.size() - 1);
  while (words.size() < 3000) {
    std::string word;
    const int n = 1 + static_cast<int>(rng() % 4);
    for (int i = 0; i < n; ++i) word += kSyllables[syllable(rng)];
    words.push_back(word);
  }
  std::vector<double> weights;
  for (size_t i = 0; i < words.size(); ++i) weights.push_back(1.0 / static_cast<double>(i + 1));
  std::discrete_distribution<size_t> zipf(weights.begin(), weights.end());

  std::string text;
  text.reserve(bytes + 128);
  while (text.size() < bytes) {
    const int length = 6 + static_cast<int>(rng() % 12);
    for (int i = 0; i < length; ++i) {
      std::string word = words[zipf(rng)];
      if (i == 0) word[0] = static_cast<char>(word[0] - 'a' + 'A');
      if (rng() % 40 == 0) word = std::to_string(rng() % 5000);
      if (i > 0) text += ' ';
      text += word;
      if (i + 1 < length && rng() % 10 == 0) text += ',';
    }
    text += rng() % 8 == 0 ? "?" : ".";
    text += rng() % 6 == 0 ? "\n\n" : " ";
  }
  return text;
}

bool IsValidUtf8(std::string_view text) {
  size_t i = 0;
  const auto* b = reinterpret_cast<const uint8_t*>(text.data());
  while (i < text.size()) {
    const uint8_t c = b[i];
    size_t n = 0;
    uint32_t cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      n = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      n = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      n = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + n > text.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      if ((b[i + k] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (b[i + k] & 0x3F);
    }
    const uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n;
  }
  return true;
}

}  // namespace tokenmill::tokenizer::testing
