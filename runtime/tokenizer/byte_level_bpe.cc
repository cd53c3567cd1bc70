#include "runtime/tokenizer/byte_level_bpe.h"

#include <algorithm>
#include <array>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "runtime/tokenizer/unicode_text.h"

namespace tokenmill::tokenizer {
namespace {

// Bytes that spell themselves: '!'..'~', '¡'..'¬', '®'..'ÿ'.
bool IsSelfSpelled(int b) {
  return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

struct ByteAlphabet {
  std::array<int32_t, 256> code_points{};
  std::array<int16_t, 512> bytes{};  // code point -> byte, -1 when not in the alphabet
};

ByteAlphabet BuildAlphabet() {
  ByteAlphabet alphabet;
  alphabet.bytes.fill(-1);
  int32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    alphabet.code_points[b] = IsSelfSpelled(b) ? b : next++;
    alphabet.bytes[alphabet.code_points[b]] = static_cast<int16_t>(b);
  }
  return alphabet;
}

const ByteAlphabet& Alphabet() {
  static const ByteAlphabet alphabet = BuildAlphabet();
  return alphabet;
}

// Heap order: lowest rank first, then leftmost, as the reference BPE does.
bool LaterBpeCandidate(const BpeScratch::Candidate& a, const BpeScratch::Candidate& b) {
  if (a.rank != b.rank) return a.rank > b.rank;
  return a.left > b.left;
}

}  // namespace

int32_t ByteToCodePoint(uint8_t b) { return Alphabet().code_points[b]; }

int ByteFromCodePoint(int32_t cp) {
  if (cp < 0 || cp >= static_cast<int32_t>(Alphabet().bytes.size())) return -1;
  return Alphabet().bytes[cp];
}

bool DecodeByteLevelText(std::string_view text, std::string* bytes) {
  bytes->clear();
  size_t pos = 0;
  while (pos < text.size()) {
    int32_t cp = 0;
    pos += DecodeUtf8(text, pos, &cp);
    const int b = ByteFromCodePoint(cp);
    if (b < 0) return false;
    bytes->push_back(static_cast<char>(b));
  }
  return true;
}

absl::StatusOr<std::unique_ptr<ByteLevelBpe>> ByteLevelBpe::Build(
    const TokenizerSpec& spec, const absl::flat_hash_map<std::string, int32_t>& token_ids,
    bool use_whole_words) {
  auto bpe = std::unique_ptr<ByteLevelBpe>(new ByteLevelBpe());
  bpe->use_whole_words_ = use_whole_words;
  for (int b = 0; b < 256; ++b) {
    std::string text;
    AppendUtf8(ByteToCodePoint(static_cast<uint8_t>(b)), &text);
    auto it = token_ids.find(text);
    if (it == token_ids.end()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "byte-level vocabulary lacks the token '%s' for byte 0x%02X; every byte needs one", text,
          b));
    }
    bpe->byte_ids_[b] = it->second;
  }

  bpe->merges_.reserve(spec.merges.size());
  for (size_t rank = 0; rank < spec.merges.size(); ++rank) {
    const std::string& merge = spec.merges[rank];
    const size_t space = merge.find(' ');
    if (space == std::string::npos || space == 0 || space + 1 == merge.size() ||
        merge.find(' ', space + 1) != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("merge ", rank, " '", merge, "' is not two tokens separated by a space"));
    }
    const std::string left = merge.substr(0, space);
    const std::string right = merge.substr(space + 1);
    int32_t ids[3] = {};
    const std::string* parts[3] = {&left, &right, nullptr};
    const std::string merged = left + right;
    parts[2] = &merged;
    for (int k = 0; k < 3; ++k) {
      auto it = token_ids.find(*parts[k]);
      if (it == token_ids.end()) {
        return absl::InvalidArgumentError(
            absl::StrCat("merge ", rank, " '", merge, "' names unknown token '", *parts[k], "'"));
      }
      ids[k] = it->second;
    }
    // A repeated pair keeps its first (lowest) rank.
    bpe->merges_.try_emplace(PairKey(ids[0], ids[1]), Merge{static_cast<int32_t>(rank), ids[2]});
  }

  if (use_whole_words) {
    std::string bytes;
    for (size_t id = 0; id < spec.tokens.size(); ++id) {
      const bool normal = spec.token_types.empty() || spec.token_types[id] == TokenType::kNormal;
      if (normal && DecodeByteLevelText(spec.tokens[id], &bytes)) {
        bpe->word_ids_.try_emplace(bytes, static_cast<int32_t>(id));
      }
    }
  }
  return bpe;
}

void ByteLevelBpe::PushCandidate(int32_t left, BpeScratch* scratch) const {
  const auto& symbols = scratch->symbols;
  const int32_t right = symbols[left].next;
  if (right < 0) return;
  auto it = merges_.find(PairKey(symbols[left].id, symbols[right].id));
  if (it == merges_.end()) return;
  scratch->heap.push_back(BpeScratch::Candidate{it->second.rank, left, symbols[left].id,
                                                symbols[right].id, it->second.merged_id});
  std::push_heap(scratch->heap.begin(), scratch->heap.end(), LaterBpeCandidate);
}

void ByteLevelBpe::EncodeWord(std::string_view word, BpeScratch* scratch,
                              std::vector<int32_t>* ids) const {
  if (word.empty()) return;
  if (word.size() == 1) {
    ids->push_back(byte_ids_[static_cast<uint8_t>(word[0])]);
    return;
  }
  if (use_whole_words_) {
    auto it = word_ids_.find(absl::string_view(word.data(), word.size()));
    if (it != word_ids_.end()) {
      ids->push_back(it->second);
      return;
    }
  }

  auto& symbols = scratch->symbols;
  auto& heap = scratch->heap;
  symbols.resize(word.size());
  heap.clear();
  const int32_t n = static_cast<int32_t>(word.size());
  for (int32_t i = 0; i < n; ++i) {
    symbols[i] =
        BpeScratch::Symbol{byte_ids_[static_cast<uint8_t>(word[i])], i - 1, i + 1 < n ? i + 1 : -1};
  }
  for (int32_t i = 0; i + 1 < n; ++i) PushCandidate(i, scratch);

  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), LaterBpeCandidate);
    const BpeScratch::Candidate top = heap.back();
    heap.pop_back();
    // Stale when either side has merged since: ids only grow, so comparing
    // the two ids is enough.
    BpeScratch::Symbol& left = symbols[top.left];
    if (left.id != top.left_id || left.next < 0) continue;
    BpeScratch::Symbol& right = symbols[left.next];
    if (right.id != top.right_id) continue;
    left.id = top.merged_id;
    right.id = -1;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.left;
    if (left.prev >= 0) PushCandidate(left.prev, scratch);
    PushCandidate(top.left, scratch);
  }
  for (int32_t i = 0; i >= 0; i = symbols[i].next) ids->push_back(symbols[i].id);
}

}  // namespace tokenmill::tokenizer
