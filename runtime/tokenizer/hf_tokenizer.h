// Hugging Face tokenizer files -> TokenizerSpec.
#pragma once

#include <string_view>

#include "absl/status/statusor.h"
#include "runtime/tokenizer/tokenizer_spec.h"

namespace tokenmill::tokenizer {

// tokenizer.json (model.type "BPE": byte-level with merges, or SentencePiece
// style with byte_fallback), plus tokenizer_config.json when present ("" if
// not) for chat_template, bos/eos tokens and add_bos_token, and
// generation_config.json when present ("" if not): every id its eos_token_id
// names (a number or a list) ends generation too, as Hugging Face's
// generate() stops on each of them.
absl::StatusOr<TokenizerSpec> ParseHfTokenizer(std::string_view tokenizer_json,
                                               std::string_view tokenizer_config_json,
                                               std::string_view generation_config_json = "");

}  // namespace tokenmill::tokenizer
