// A grammar compiled for one vocabulary: the byte automaton plus, per
// automaton state, the tokens the state alone accepts (a bitmask) and the
// few whose fate depends on the stack below it (walked at runtime). The
// adaptive token-mask-cache idea of XGrammar, over our own automaton.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/grammar/automaton.h"
#include "runtime/grammar/json_schema.h"
#include "runtime/grammar/token_vocabulary.h"

namespace tokenmill::grammar {

// Immutable after Create; shared by every matcher of requests with the same
// schema (thread-safe to read).
class CompiledGrammar {
 public:
  // Precomputes the per-state masks: one pass over the sorted vocabulary per
  // class of states no token tells apart (up to a few milliseconds each at a
  // 128K vocabulary). kInvalidArgument past limits.max_precompute_steps.
  static absl::StatusOr<std::shared_ptr<const CompiledGrammar>> Create(
      ByteAutomaton automaton, std::shared_ptr<const TokenVocabulary> vocabulary,
      const GrammarLimits& limits);

  const ByteAutomaton& automaton() const { return automaton_; }
  const TokenVocabulary& vocabulary() const { return *vocabulary_; }
  int32_t max_stack_depth() const { return max_stack_depth_; }

  // Tokens accepted from `state` whatever lies below it on the stack
  // (vocabulary().mask_words() words).
  std::span<const uint32_t> AcceptedMask(int32_t state) const {
    const size_t words = vocabulary_->mask_words();
    return {masks_.data() + static_cast<size_t>(mask_index_[state]) * words, words};
  }
  // Tokens that may continue into the caller's frame, in byte order, with
  // each one's common prefix with the previous entry.
  std::span<const int32_t> UndecidedTokens(int32_t state) const {
    return {undecided_ids_.data() + undecided_begin_[state],
            undecided_end_[state] - undecided_begin_[state]};
  }
  std::span<const uint16_t> UndecidedLcp(int32_t state) const {
    return {undecided_lcp_.data() + undecided_begin_[state],
            undecided_end_[state] - undecided_begin_[state]};
  }
  // Deepest stack (in frames, counting the state's own) any token from
  // `state` builds; the accepted mask holds only while the real stack has
  // room for it.
  int32_t max_push(int32_t state) const { return max_push_[state]; }

  // Sizes, for logs and benchmarks.
  size_t distinct_masks() const { return masks_.size() / vocabulary_->mask_words(); }
  size_t undecided_total() const { return undecided_ids_.size(); }
  // Vocabulary walks done at compile time (one per class of states).
  size_t walked_states() const { return walked_states_; }
  // Approximate heap bytes held (masks, lists, automaton tables).
  size_t memory_bytes() const {
    return masks_.size() * 4 + mask_index_.size() * 4 + undecided_begin_.size() * 8 +
           undecided_ids_.size() * 6 + max_push_.size() * 4 + automaton_.next.size() * 4 +
           automaton_.calls.size() * sizeof(DfaCall) + automaton_.accepting.size() * 16;
  }

 private:
  CompiledGrammar() = default;

  ByteAutomaton automaton_;
  std::shared_ptr<const TokenVocabulary> vocabulary_;
  int32_t max_stack_depth_ = 0;
  std::vector<uint32_t> masks_;            // distinct masks, back to back
  std::vector<int32_t> mask_index_;        // per state
  std::vector<uint32_t> undecided_begin_;  // per state
  std::vector<uint32_t> undecided_end_;    // per state
  std::vector<int32_t> undecided_ids_;
  std::vector<uint16_t> undecided_lcp_;
  std::vector<int32_t> max_push_;
  size_t walked_states_ = 0;
};

using CompiledGrammarPtr = std::shared_ptr<const CompiledGrammar>;

// Schema text to a compiled grammar (kInvalidArgument for bad schemas).
absl::StatusOr<CompiledGrammarPtr> CompileJsonSchemaGrammar(
    std::string_view schema_json, const JsonSchemaOptions& options,
    std::shared_ptr<const TokenVocabulary> vocabulary);

// `response_format: json_object`.
absl::StatusOr<CompiledGrammarPtr> CompileJsonObjectGrammar(
    const JsonSchemaOptions& options, std::shared_ptr<const TokenVocabulary> vocabulary);

}  // namespace tokenmill::grammar
