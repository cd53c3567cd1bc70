// Per-sequence state of constrained decoding: which tokens may come next
// (a bitmask over the vocabulary), advancing by the sampled token, and
// masking logits before sampling.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "runtime/grammar/compiled_grammar.h"
#include "runtime/grammar/stack_walk.h"

namespace tokenmill::grammar {

// One per constrained sequence; not thread-safe. Cheap to create (no
// vocabulary-sized allocation); after the first steps, no allocation per
// step. Copyable (a copy continues independently from the same point).
class GrammarMatcher {
 public:
  explicit GrammarMatcher(CompiledGrammarPtr grammar);

  // Sets bit i of words (bit i % 32 of word i / 32) iff token i may come
  // next; words.size() must be vocabulary().mask_words(). EOS tokens are
  // set exactly when IsComplete(); control tokens never.
  void FillNextTokenBitmask(std::span<uint32_t> words);

  // Advances by one token: kInvalidArgument (state unchanged) when the mask
  // would not allow it. After an EOS token nothing more is accepted.
  absl::Status AcceptToken(int32_t id);

  // A whole value has been produced: EOS may come now.
  bool IsComplete() const;
  // Complete and no byte can follow: only EOS may come (a caller may end the
  // sequence here without sampling). Uses the matcher's scratch space.
  bool IsTerminated();
  // An EOS token has been accepted.
  bool finished() const { return finished_; }
  // Fewest bytes that complete the value from here (0 when complete); lets
  // a caller with a length budget steer towards the end.
  int32_t MinBytesToComplete() const;

  const CompiledGrammar& grammar() const { return *grammar_; }

 private:
  bool StepBytes(std::string_view bytes);
  // ORs into words the tokens allowed from one stack (no return from its top
  // before the first byte: the caller adds the caller's frames for that).
  void MaskFromStack(std::span<const int32_t> stack, std::span<uint32_t> words);

  CompiledGrammarPtr grammar_;
  StackSet stacks_;
  StackSet next_;
  StackSet single_;
  StackStepper stepper_;
  TokenWalker walker_;
  std::vector<int32_t> masked_tops_;  // states whose mask words already holds
  bool finished_ = false;
};

// logits[i] = -inf wherever bit i of words is clear (and past the mask's
// end, for models with more output rows than tokens).
void ApplyBitmask(std::span<float> logits, std::span<const uint32_t> words);

}  // namespace tokenmill::grammar
