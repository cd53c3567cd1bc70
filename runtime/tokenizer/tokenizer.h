// Tokenizer: text <-> token ids for a TokenizerSpec (byte-level BPE or
// SentencePiece-style BPE), and StreamDecoder for text that arrives one
// generated token at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "runtime/tokenizer/special_tokens.h"
#include "runtime/tokenizer/tokenizer_spec.h"

namespace tokenmill::tokenizer {

class ByteLevelBpe;
class SentencePieceBpe;

// Immutable after Create: every method is const and safe to call from many
// threads at once (Encode keeps its scratch space on the caller's stack).
class Tokenizer {
 public:
  // Validates the spec (kInvalidArgument naming what is wrong): token types
  // and scores sized like tokens, special ids in range, all 256 byte tokens
  // for byte-level vocabularies, merges naming known tokens, SentencePiece
  // scores plus byte tokens or an unknown token.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Create(const TokenizerSpec& spec);

  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  struct EncodeOptions {
    // Prepend BOS; only takes effect when the spec says add_bos and has a BOS.
    bool add_bos = true;
    // Append EOS; only takes effect when the spec says add_eos and has an EOS.
    bool add_eos = true;
    // true: control-token text in the input ("<|eot_id|>") becomes that token.
    // false: it is encoded as plain text, so user input cannot forge control
    // tokens. User-defined tokens are matched either way (as llama.cpp and
    // Hugging Face tokenizers do).
    bool parse_special = false;
    // With parse_special: byte ranges [first, second) of the text (sorted,
    // disjoint) where control-token text stays text, e.g. the message content
    // inside a rendered chat template. Unused otherwise.
    std::span<const std::pair<size_t, size_t>> literal_spans = {};
  };

  // Token ids of `text`, normalised first when the spec says so (NFC, each
  // stretch between special tokens on its own). Never fails: byte-level
  // vocabularies encode any bytes, SentencePiece ones fall back to byte
  // tokens or the unknown token.
  std::vector<int32_t> Encode(std::string_view text, const EncodeOptions& options) const;
  std::vector<int32_t> Encode(std::string_view text) const;

  // The exact bytes the ids spell, as Hugging Face's decode gives them.
  // Control tokens (and unknown / unused ones) give their text unless
  // skip_special; user-defined tokens always do (SentencePiece: with "▁" as
  // a space). For SentencePiece with add_space_prefix, a space that starts
  // the decoded text is removed (so not the one after a "<s>" written out).
  // Ids outside the vocabulary (models may have more output rows than
  // tokens) give nothing.
  std::string Decode(std::span<const int32_t> ids, bool skip_special = false) const;

  // Raw bytes of one token: "" for control, unknown and unused tokens and for
  // ids outside the vocabulary; no leading-space removal.
  std::string TokenBytes(int32_t id) const;

  // Token text as the vocabulary stores it ("Ġworld", "▁world", "<0x0A>");
  // empty for ids outside the vocabulary. Valid while the tokenizer lives.
  std::string_view TokenText(int32_t id) const;
  // kUnused for ids outside the vocabulary.
  TokenType token_type(int32_t id) const;
  // Exact lookup of stored token text; the lowest id when a text repeats.
  std::optional<int32_t> TokenId(std::string_view token_text) const;

  // EOS or one of the extra end-of-generation tokens.
  bool IsEos(int32_t id) const;

  TokenizerKind kind() const { return kind_; }
  int32_t vocab_size() const { return static_cast<int32_t>(tokens_.size()); }
  std::optional<int32_t> bos_id() const { return bos_id_; }
  std::optional<int32_t> eos_id() const { return eos_id_; }
  std::optional<int32_t> unk_id() const { return unk_id_; }
  std::optional<int32_t> pad_id() const { return pad_id_; }
  const std::vector<int32_t>& extra_eos_ids() const { return extra_eos_ids_; }
  const std::string& chat_template() const { return chat_template_; }

 private:
  friend class StreamDecoder;

  Tokenizer() = default;

  // Appends the bytes of one token for Decode and StreamDecoder. *at_start is
  // true until a text-bearing token has been appended.
  void AppendDecoded(int32_t id, bool skip_special, bool* at_start, std::string* out) const;
  // Encodes text that holds no special token and starts the input or follows
  // a special token.
  struct EncodeScratch;
  void EncodePlain(std::string_view text, EncodeScratch* scratch, std::vector<int32_t>* ids) const;

  TokenizerKind kind_ = TokenizerKind::kByteLevelBpe;
  PreTokenizer pre_ = PreTokenizer::kLlama3;
  Normalizer normalizer_ = Normalizer::kNone;
  std::vector<std::string> tokens_;
  std::vector<TokenType> types_;
  std::vector<std::string> token_bytes_;  // per id, "" for control / unknown / unused
  absl::flat_hash_map<std::string, int32_t> token_ids_;
  std::optional<int32_t> bos_id_;
  std::optional<int32_t> eos_id_;
  std::optional<int32_t> unk_id_;
  std::optional<int32_t> pad_id_;
  std::vector<int32_t> extra_eos_ids_;
  bool add_bos_ = false;
  bool add_eos_ = false;
  bool add_space_prefix_ = false;
  std::string chat_template_;
  SpecialTokenMatcher specials_;
  std::unique_ptr<ByteLevelBpe> byte_level_;
  std::unique_ptr<SentencePieceBpe> sentencepiece_;
};

using TokenizerPtr = std::unique_ptr<Tokenizer>;

// Turns generated ids into text as they come: Push returns the newly complete
// text and holds back a trailing UTF-8 sequence that later tokens may still
// complete (an emoji spread over byte tokens), so no output ever ends inside a
// character. The outputs of all Push calls plus Flush concatenate to
// Decode(ids, skip_special). One per sequence; not thread-safe; the tokenizer
// must outlive it.
class StreamDecoder {
 public:
  // With skip_special, the ids in `kept` still add their text.
  explicit StreamDecoder(const Tokenizer& tokenizer, bool skip_special = false,
                         std::span<const int32_t> kept = {});

  std::string Push(int32_t id);
  // Returns whatever is held back (bytes that never became valid UTF-8) and
  // starts over as for a new sequence.
  std::string Flush();

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_ = false;
  std::vector<int32_t> kept_;  // sorted
  bool at_start_ = true;
  std::string pending_;
};

}  // namespace tokenmill::tokenizer
