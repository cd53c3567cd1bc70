// TokenizerSpec: a vocabulary as model files carry it (GGUF tokenizer.ggml.*
// keys or a Hugging Face tokenizer.json), before a Tokenizer is built from it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace tokenmill::tokenizer {

enum class TokenizerKind {
  kByteLevelBpe,  // GPT-2 / Llama 3 / Qwen: tokens spelled in the GPT-2 byte-to-unicode alphabet,
                  // merges by rank
  kSentencePieceBpe,  // Llama 2: "▁" for spaces, scores rank merges, <0xAB> byte fallback tokens
};

// How text is split before BPE (byte-level only).
enum class PreTokenizer {
  kGpt2,        // GPT-2 regex
  kLlama3,      // Llama 3 regex (also "llama-bpe", "smaug-bpe")
  kQwen2,       // Qwen2 regex (Llama 3's with single digits)
  kDeepSeekV3,  // DeepSeek-V3: digits, then CJK runs, then a third regex (pre_tokenizer.h)
};

// Text normalisation before pre-tokenizing (Hugging Face "normalizer").
enum class Normalizer {
  kNone,
  kNfc,  // Unicode NFC (Qwen2 / Qwen3)
};

// Token types as GGUF stores them (tokenizer.ggml.token_type).
enum class TokenType : int32_t {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,      // special tokens: <|begin_of_text|>, <s>, ...
  kUserDefined = 4,  // added tokens matched verbatim in text
  kUnused = 5,
  kByte = 6,  // <0x41> byte fallback (SentencePiece)
};

struct TokenizerSpec {
  TokenizerKind kind = TokenizerKind::kByteLevelBpe;
  PreTokenizer pre = PreTokenizer::kLlama3;
  std::vector<std::string> tokens;     // id -> token text (as stored in the file)
  std::vector<TokenType> token_types;  // empty = all normal
  std::vector<float> scores;           // SentencePiece merge scores; empty for byte-level
  std::vector<std::string> merges;     // byte-level: "left right", rank = index
  Normalizer normalizer = Normalizer::kNone;
  // Byte-level: a word that is itself a token is that token, merges or not
  // (Hugging Face ignore_merges). Unset: only for the Llama 3 pre-tokenizer,
  // as llama.cpp does for GGUF files.
  std::optional<bool> ignore_merges;
  std::optional<int32_t> bos_id;
  std::optional<int32_t> eos_id;
  std::vector<int32_t> extra_eos_ids;  // e.g. <|eot_id|>, <|im_end|>
  std::optional<int32_t> unk_id;
  std::optional<int32_t> pad_id;
  bool add_bos = true;  // tokenizer.ggml.add_bos_token
  bool add_eos = false;
  bool add_space_prefix = true;  // SentencePiece: prepend "▁" to the text
  std::string chat_template;     // Jinja text from the file, "" when none
};

}  // namespace tokenmill::tokenizer
