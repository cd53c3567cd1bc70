#include "runtime/tokenizer/sentencepiece_bpe.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "runtime/tokenizer/unicode_text.h"

namespace tokenmill::tokenizer {
namespace {

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// Heap order: highest score first, then leftmost.
bool LaterPieceCandidate(const SentencePieceScratch::Candidate& a,
                         const SentencePieceScratch::Candidate& b) {
  if (a.score != b.score) return a.score < b.score;
  return a.left > b.left;
}

TokenType TypeOf(const TokenizerSpec& spec, size_t id) {
  return spec.token_types.empty() ? TokenType::kNormal : spec.token_types[id];
}

}  // namespace

int ParseByteTokenText(std::string_view text) {
  if (text.size() != 6 || text.substr(0, 3) != "<0x" || text[5] != '>') return -1;
  const int high = HexDigit(text[3]);
  const int low = HexDigit(text[4]);
  if (high < 0 || low < 0) return -1;
  return high * 16 + low;
}

absl::StatusOr<std::unique_ptr<SentencePieceBpe>> SentencePieceBpe::Build(
    const TokenizerSpec& spec) {
  if (spec.scores.size() != spec.tokens.size()) {
    return absl::InvalidArgumentError(absl::StrCat("SentencePiece vocabulary has ",
                                                   spec.tokens.size(), " tokens but ",
                                                   spec.scores.size(), " scores"));
  }
  auto bpe = std::unique_ptr<SentencePieceBpe>(new SentencePieceBpe());
  bpe->scores_ = spec.scores;
  bpe->byte_ids_.fill(-1);
  int byte_tokens = 0;
  for (size_t id = 0; id < spec.tokens.size(); ++id) {
    const TokenType type = TypeOf(spec, id);
    const int32_t id32 = static_cast<int32_t>(id);
    if (type == TokenType::kByte ||
        (spec.token_types.empty() && ParseByteTokenText(spec.tokens[id]) >= 0)) {
      const int b = ParseByteTokenText(spec.tokens[id]);
      if (b < 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "token ", id, " '", spec.tokens[id], "' has type byte but is not spelled <0xAB>"));
      }
      if (bpe->byte_ids_[b] < 0) {
        bpe->byte_ids_[b] = id32;
        ++byte_tokens;
      }
    } else if (type == TokenType::kNormal || type == TokenType::kUserDefined) {
      bpe->piece_ids_.try_emplace(spec.tokens[id], id32);
    }
  }
  bpe->byte_fallback_ = byte_tokens == 256;
  if (spec.unk_id) bpe->unk_id_ = *spec.unk_id;
  if (!bpe->byte_fallback_ && bpe->unk_id_ < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("SentencePiece vocabulary has ", byte_tokens,
                     " of 256 byte tokens and no unknown token: some text could not be encoded"));
  }
  return bpe;
}

void SentencePieceBpe::PushCandidate(int32_t left, SentencePieceScratch* scratch) const {
  if (left < 0) return;
  const auto& symbols = scratch->symbols;
  const int32_t right = symbols[left].next;
  if (right < 0) return;
  const size_t length = symbols[left].length + symbols[right].length;
  const std::string_view text =
      std::string_view(scratch->normalized).substr(symbols[left].start, length);
  auto it = piece_ids_.find(absl::string_view(text.data(), text.size()));
  if (it == piece_ids_.end()) return;
  scratch->heap.push_back(
      SentencePieceScratch::Candidate{scores_[it->second], left, right, length});
  std::push_heap(scratch->heap.begin(), scratch->heap.end(), LaterPieceCandidate);
}

void SentencePieceBpe::AppendSymbol(std::string_view piece, std::vector<int32_t>* ids) const {
  auto it = piece_ids_.find(absl::string_view(piece.data(), piece.size()));
  if (it != piece_ids_.end()) {
    ids->push_back(it->second);
  } else if (byte_fallback_) {
    for (char c : piece) ids->push_back(byte_ids_[static_cast<uint8_t>(c)]);
  } else {
    ids->push_back(unk_id_);
  }
}

void SentencePieceBpe::EncodeFragment(std::string_view text, bool add_space_prefix,
                                      SentencePieceScratch* scratch,
                                      std::vector<int32_t>* ids) const {
  if (text.empty()) return;
  std::string& normalized = scratch->normalized;
  normalized.clear();
  if (add_space_prefix) normalized.append(kSentencePieceSpace);
  for (char c : text) {
    if (c == ' ') {
      normalized.append(kSentencePieceSpace);
    } else {
      normalized.push_back(c);
    }
  }

  auto& symbols = scratch->symbols;
  auto& heap = scratch->heap;
  symbols.clear();
  heap.clear();
  for (size_t pos = 0; pos < normalized.size();) {
    int32_t cp = 0;
    const size_t length = DecodeUtf8(normalized, pos, &cp);
    const int32_t index = static_cast<int32_t>(symbols.size());
    symbols.push_back(SentencePieceScratch::Symbol{pos, length, index - 1, -1});
    if (index > 0) symbols[index - 1].next = index;
    pos += length;
  }
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) {
    PushCandidate(i, scratch);
  }

  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), LaterPieceCandidate);
    const SentencePieceScratch::Candidate top = heap.back();
    heap.pop_back();
    SentencePieceScratch::Symbol& left = symbols[top.left];
    SentencePieceScratch::Symbol& right = symbols[top.right];
    // Stale when either side has merged since it was queued.
    if (left.length == 0 || right.length == 0 || left.next != top.right ||
        left.length + right.length != top.length) {
      continue;
    }
    left.length += right.length;
    right.length = 0;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.left;
    PushCandidate(left.prev, scratch);
    PushCandidate(top.left, scratch);
  }

  const std::string_view all(normalized);
  for (int32_t i = symbols.empty() ? -1 : 0; i >= 0; i = symbols[i].next) {
    AppendSymbol(all.substr(symbols[i].start, symbols[i].length), ids);
  }
}

}  // namespace tokenmill::tokenizer
