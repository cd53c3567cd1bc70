// A real byte-level BPE vocabulary for synthetic models: the 256 byte tokens
// in the GPT-2 byte-to-unicode alphabet, merges learned by plain BPE on a
// small built-in English corpus, then deterministic extra merges up to the
// requested size, then Llama 3 style special tokens.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "absl/status/statusor.h"
#include "runtime/tokenizer/tokenizer_spec.h"

namespace tokenmill::model {

// Special tokens at the end of every synthetic vocabulary, in this order.
inline constexpr const char* kSynthSpecialTokens[] = {"<|begin_of_text|>", "<|end_of_text|>",
                                                      "<|eot_id|>", "<|start_header_id|>",
                                                      "<|end_header_id|>"};
inline constexpr int32_t kSynthSpecialCount = 5;

// The GPT-2 byte-to-unicode spelling of byte b (UTF-8).
std::string ByteToUnicode(uint8_t b);

// The vocabulary of `vocab_size` tokens (>= 256 + kSynthSpecialCount +
// extra_control.size() + 1): kByteLevelBpe with `pre`, bos
// <|begin_of_text|>, eos <|end_of_text|>, extra eos <|eot_id|>, add_bos, a
// Llama 3 style chat template; `extra_control` (for example a tool-call
// marker such as <|python_tag|>) follow kSynthSpecialTokens as control
// tokens, in place of as many normal ones. The same arguments give the same
// vocabulary on every machine; cost is linear in the size (128256 tokens
// take well under a second).
absl::StatusOr<tokenizer::TokenizerSpec> BuildSynthVocabulary(
    int32_t vocab_size, tokenizer::PreTokenizer pre,
    std::span<const std::string> extra_control = {});

}  // namespace tokenmill::model
