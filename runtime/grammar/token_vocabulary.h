// A model's vocabulary as the grammar engine walks it: each token's bytes,
// the tokens sorted by bytes with the common prefix of neighbours (a trie in
// a flat array), and the end-of-sequence tokens.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/tokenizer/tokenizer.h"

namespace tokenmill::grammar {

// Built once per model instance; immutable and thread-safe afterwards.
class TokenVocabulary {
 public:
  // token_bytes[id]: the bytes token id stands for ("" for control tokens,
  // which are never allowed); eos_ids: allowed exactly when the grammar is
  // complete (their bytes are ignored).
  TokenVocabulary(std::vector<std::string> token_bytes, std::vector<int32_t> eos_ids);
  // From TokenBytes and IsEos of every id of the tokenizer.
  static std::shared_ptr<const TokenVocabulary> FromTokenizer(const tokenizer::Tokenizer& tok);

  // Ids in a mask: bit i of word i / 32 is token i.
  int32_t size() const { return static_cast<int32_t>(bytes_.size()); }
  int32_t mask_words() const { return (size() + 31) / 32; }
  std::string_view bytes(int32_t id) const { return bytes_[id]; }
  const std::vector<int32_t>& eos_ids() const { return eos_ids_; }
  // Tokens with bytes and not EOS, sorted by bytes.
  const std::vector<int32_t>& sorted_ids() const { return sorted_ids_; }
  // sorted_lcp()[i]: bytes sorted_ids()[i] shares with sorted_ids()[i - 1]
  // (0 for i = 0).
  const std::vector<uint16_t>& sorted_lcp() const { return sorted_lcp_; }
  // Bytes of sorted_ids()[i], from one contiguous block in sorted order (a
  // walk over the sorted vocabulary reads memory in order).
  std::string_view sorted_bytes(size_t i) const {
    return {sorted_blob_.data() + sorted_offsets_[i], sorted_offsets_[i + 1] - sorted_offsets_[i]};
  }
  size_t max_token_bytes() const { return max_token_bytes_; }
  // A token that is exactly byte b (the lowest such id; byte-level BPE
  // vocabularies have one per byte, SentencePiece ones their <0xNN> pieces),
  // or -1.
  int32_t byte_token(uint8_t b) const { return byte_tokens_[b]; }
  // The first sorted position after i whose token shares fewer than `depth`
  // bytes with sorted token i (sorted_ids().size() if none): every token in
  // between has sorted token i's first `depth` bytes. O(log n).
  size_t SkipSubtree(size_t i, size_t depth) const;

 private:
  std::vector<std::string> bytes_;
  std::vector<int32_t> eos_ids_;
  std::vector<int32_t> sorted_ids_;
  std::vector<uint16_t> sorted_lcp_;
  std::string sorted_blob_;
  std::vector<uint32_t> sorted_offsets_;
  // lcp_min_[k][i]: the least sorted_lcp_ over [i, i + 2^k).
  std::vector<std::vector<uint16_t>> lcp_min_;
  size_t max_token_bytes_ = 0;
  std::array<int32_t, 256> byte_tokens_;
};

// Bytes a and b share at the start.
uint16_t CommonPrefix(std::string_view a, std::string_view b);

}  // namespace tokenmill::grammar
