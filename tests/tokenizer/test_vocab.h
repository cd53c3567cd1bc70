// Small vocabularies built in code for the tokenizer tests and the throughput
// program: no test downloads a model.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "runtime/tokenizer/tokenizer_spec.h"

namespace tokenmill::tokenizer::testing {

// Byte-level spelling of raw bytes ("Ġworld" for " world").
std::string ByteLevelSpelling(std::string_view raw);

// A byte-level spec: the 256 byte tokens (id = byte value), then one token per
// merge result, merges in the given order (raw byte pairs, spelled for the
// spec here), then `control` tokens and `user_defined` tokens, in order.
TokenizerSpec ByteLevelSpec(PreTokenizer pre,
                            const std::vector<std::pair<std::string, std::string>>& merges,
                            const std::vector<std::string>& control = {},
                            const std::vector<std::string>& user_defined = {});

// Trains `num_merges` byte-level merges on `corpus` (most frequent adjacent
// pair first, within the pre-tokenizer's words) and returns ByteLevelSpec of them.
TokenizerSpec TrainByteLevelSpec(const std::string& corpus, PreTokenizer pre, int num_merges,
                                 const std::vector<std::string>& control = {});

// A SentencePiece-style spec: <unk> 0, <s> 1, </s> 2, then (when
// `byte_tokens`) <0x00>..<0xFF>, then `pieces` (raw text, spaces written " ")
// in merge order: earlier pieces score higher (score = -index), as
// SentencePiece ranks merges. A merged piece must come after its parts.
// unk_id 0, bos 1, eos 2, add_bos true.
TokenizerSpec SentencePieceSpec(const std::vector<std::string>& pieces, bool byte_tokens = true,
                                bool add_space_prefix = true);

// Random test strings. Bytes: any byte values. Text: valid UTF-8 drawn from
// ASCII words, digits, white space runs, CRLF, apostrophes, CJK, emoji with
// modifiers, combining marks, Hebrew and Arabic, NBSP and ideographic space.
std::string RandomBytes(std::mt19937& rng, size_t max_length);
std::string RandomText(std::mt19937& rng, size_t max_pieces);

// English-like text of about `bytes` bytes (Zipf-distributed pseudo-words,
// punctuation, numbers, line breaks), deterministic for a seed.
std::string EnglishLikeText(size_t bytes, uint32_t seed);

// Whether `text` is well-formed UTF-8.
bool IsValidUtf8(std::string_view text);

}  // namespace tokenmill::tokenizer::testing
