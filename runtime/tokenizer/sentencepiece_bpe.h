// SentencePiece-style BPE (Llama 2): spaces are spelled "▁" (U+2581), text
// starts as one symbol per character and the adjacent pair whose
// concatenation is the vocabulary token with the highest score merges first.
// Characters left outside the vocabulary fall back to <0xAB> byte tokens, or
// to the unknown token when the vocabulary has no byte tokens.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "runtime/tokenizer/tokenizer_spec.h"

namespace tokenmill::tokenizer {

// "▁", the SentencePiece spelling of a space.
inline constexpr std::string_view kSentencePieceSpace = "\xE2\x96\x81";

// The byte that a "<0xAB>" token stands for, or -1 for other text.
int ParseByteTokenText(std::string_view text);

// Per-call scratch space so that encoding allocates per call, not per piece.
struct SentencePieceScratch {
  struct Symbol {
    size_t start = 0;   // byte offset in the normalised text
    size_t length = 0;  // bytes; 0 once merged into its left neighbour
    int32_t prev = -1;
    int32_t next = -1;
  };
  struct Candidate {
    float score = 0;
    int32_t left = 0;
    int32_t right = 0;
    size_t length = 0;  // bytes of the concatenation, to detect stale candidates
  };
  std::string normalized;
  std::vector<Symbol> symbols;
  std::vector<Candidate> heap;
};

// Scores and byte tokens of a validated SentencePiece-style vocabulary.
// Immutable after Build, so EncodeFragment may run on many threads at once.
class SentencePieceBpe {
 public:
  // Fails with kInvalidArgument when scores do not match the tokens, or when
  // the vocabulary has neither all 256 byte tokens nor an unknown token.
  static absl::StatusOr<std::unique_ptr<SentencePieceBpe>> Build(const TokenizerSpec& spec);

  // Appends the ids of a piece of text that holds no special token. With
  // `add_space_prefix` the text is encoded as if it started with a space.
  void EncodeFragment(std::string_view text, bool add_space_prefix, SentencePieceScratch* scratch,
                      std::vector<int32_t>* ids) const;

 private:
  void PushCandidate(int32_t left, SentencePieceScratch* scratch) const;
  void AppendSymbol(std::string_view piece, std::vector<int32_t>* ids) const;

  // Text -> id of the tokens merges may produce (normal and user-defined).
  absl::flat_hash_map<std::string, int32_t> piece_ids_;
  std::vector<float> scores_;
  std::array<int32_t, 256> byte_ids_{};  // -1 where the vocabulary lacks the byte
  bool byte_fallback_ = false;           // all 256 byte tokens exist
  int32_t unk_id_ = -1;
};

}  // namespace tokenmill::tokenizer
