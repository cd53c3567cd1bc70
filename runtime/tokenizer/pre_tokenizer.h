// Pre-tokenizers of byte-level BPE vocabularies: split text into the pieces
// ("words") that BPE merges never cross. Each is a hand-written scanner over
// code points equivalent to the regex the model's tokenizer was trained with
// (leftmost alternative wins, greedy quantifiers with backtracking), so no
// regex engine runs per request.
#pragma once

#include <string_view>
#include <vector>

#include "runtime/tokenizer/tokenizer_spec.h"
#include "runtime/tokenizer/unicode_text.h"

namespace tokenmill::tokenizer {

// Appends to `words` the pieces of `text` under the `kind` regex, in order;
// together they cover every byte of text exactly once (invalid UTF-8 bytes
// count as "other" characters). `units` is scratch space, reused across calls.
//
// kGpt2:   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// kLlama3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
//          ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
// kQwen2:  kLlama3 with \p{N} instead of \p{N}{1,3}.
// kDeepSeekV3: three Hugging Face Split rules (behavior Isolated), each
//   applied to every piece the one before left: \p{N}{1,3}, then
//   [\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+, then
//   [!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+|
//    ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
//   Text between matches is a piece of its own.
// The case-insensitive contractions fold ASCII letters only.
void SplitWords(std::string_view text, PreTokenizer kind, std::vector<TextUnit>* units,
                std::vector<std::string_view>* words);

}  // namespace tokenmill::tokenizer
