// Byte-level BPE (GPT-2, Llama 3, Qwen2): tokens are spelled in the GPT-2
// byte-to-unicode alphabet, words start as one symbol per byte and adjacent
// symbols merge by rank, lowest first.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "runtime/tokenizer/tokenizer_spec.h"

namespace tokenmill::tokenizer {

// The code point that spells byte `b` in byte-level vocabularies (printable
// Latin-1 bytes spell themselves, the others map to U+0100 and up).
int32_t ByteToCodePoint(uint8_t b);

// The byte that code point `cp` spells, or -1 when cp is not in the alphabet.
int ByteFromCodePoint(int32_t cp);

// Raw bytes of a token spelled in the byte alphabet, or false when its text
// holds characters outside it (added tokens are stored as plain text).
bool DecodeByteLevelText(std::string_view text, std::string* bytes);

// Per-call scratch space so that encoding allocates per call, not per word.
struct BpeScratch {
  struct Symbol {
    int32_t id = 0;     // token id; -1 once merged into its left neighbour
    int32_t prev = -1;  // index of the previous live symbol, -1 at the start
    int32_t next = -1;  // index of the next live symbol, -1 at the end
  };
  struct Candidate {
    int32_t rank = 0;
    int32_t left = 0;  // index of the left symbol
    int32_t left_id = 0;
    int32_t right_id = 0;
    int32_t merged_id = 0;
  };
  std::vector<Symbol> symbols;
  std::vector<Candidate> heap;
};

// Merge table of a validated byte-level vocabulary. Immutable after Build, so
// EncodeWord may run on many threads at once.
class ByteLevelBpe {
 public:
  // token_ids maps token text to id (the first id for a text). Fails with
  // kInvalidArgument when a byte token is missing or a merge names a token
  // that is not in the vocabulary. `use_whole_words`: a word that is itself a
  // vocabulary token is taken without merging (Llama 3's ignore_merges).
  static absl::StatusOr<std::unique_ptr<ByteLevelBpe>> Build(
      const TokenizerSpec& spec, const absl::flat_hash_map<std::string, int32_t>& token_ids,
      bool use_whole_words);

  // Appends the ids of one pre-tokenized word given as raw bytes.
  void EncodeWord(std::string_view word, BpeScratch* scratch, std::vector<int32_t>* ids) const;

 private:
  struct Merge {
    int32_t rank = 0;
    int32_t merged_id = 0;
  };
  static uint64_t PairKey(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
           static_cast<uint32_t>(right);
  }
  void PushCandidate(int32_t left, BpeScratch* scratch) const;

  int32_t byte_ids_[256] = {};
  absl::flat_hash_map<uint64_t, Merge> merges_;
  bool use_whole_words_ = false;
  // Raw bytes -> id of normal tokens, for use_whole_words.
  absl::flat_hash_map<std::string, int32_t> word_ids_;
};

}  // namespace tokenmill::tokenizer
