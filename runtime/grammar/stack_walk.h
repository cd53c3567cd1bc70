// Running the pushdown automaton: sets of stacks stepped one byte at a time,
// and a walk of many tokens at once that shares the work of common prefixes
// (tokens sorted by bytes). Internal to runtime/grammar.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "runtime/grammar/automaton.h"

namespace tokenmill::grammar {

// Most stacks a StackSet keeps after a step (see StackStepper::Step).
inline constexpr size_t kMaxStacks = 32;

// Stacks of DFA states (bottom first), stored flat; no duplicates.
class StackSet {
 public:
  void Clear() {
    frames_.clear();
    ends_.clear();
  }
  bool empty() const { return ends_.empty(); }
  size_t size() const { return ends_.size(); }
  std::span<const int32_t> stack(size_t i) const {
    const uint32_t begin = i == 0 ? 0 : ends_[i - 1];
    return {frames_.data() + begin, ends_[i] - begin};
  }
  // Adds the stack unless already present.
  void Add(std::span<const int32_t> stack);
  // Keeps the first n stacks.
  void Truncate(size_t n) {
    if (n >= ends_.size()) return;
    ends_.resize(n);
    frames_.resize(n == 0 ? 0 : ends_.back());
  }
  // Exactly one stack of one frame: its state, else -1.
  int32_t SingleFrame() const { return ends_.size() == 1 && ends_[0] == 1 ? frames_[0] : -1; }

 private:
  std::vector<int32_t> frames_;
  std::vector<uint32_t> ends_;
};

// Steps stacks through bytes. Scratch space is kept between calls, so one
// stepper per thread (each matcher owns one).
class StackStepper {
 public:
  StackStepper(const ByteAutomaton& automaton, int32_t max_depth)
      : a_(&automaton), max_depth_(max_depth) {}

  // Every stack of `in` after `byte` into `out` (cleared first). With
  // bottom_is_context, the bottom frame stands for an unknown caller: a
  // path that would return from it (or push past max_depth) sets *undecided
  // instead of continuing; with ignore_bottom_return too, a return from the
  // bottom is dropped instead (the matcher covers a return before the first
  // byte by masking from the caller's frame as well). Without
  // bottom_is_context, the bottom frame is the real bottom.
  void Step(const StackSet& in, uint8_t byte, bool bottom_is_context, StackSet* out,
            bool* undecided, bool ignore_bottom_return = false);

 private:
  void StepTop(int32_t cls, bool bottom_is_context, StackSet* out, bool* undecided);

  const ByteAutomaton* a_;
  int32_t max_depth_;
  bool ignore_bottom_return_ = false;
  std::vector<int32_t> scratch_;
};

// Result of walking one token.
enum class TokenFate : uint8_t { kRejected, kAccepted, kUndecided };

// Walks a list of tokens (in byte order, with each one's common prefix with
// the previous) from a set of stacks, stepping each shared prefix once and
// skipping every token under a dead prefix. With bottom_is_context, a
// return from the bottom frame before the first byte is not followed (see
// StackStepper::Step).
class TokenWalker {
 public:
  TokenWalker(const ByteAutomaton& automaton, int32_t max_depth)
      : a_(&automaton), stepper_(automaton, max_depth) {}

  // Calls fate(i, TokenFate) in order for each i in [0, ids.size()) whose
  // token is accepted or undecided (rejected ones are skipped silently).
  // bytes(i) gives the bytes of the token at position i; skip(i, depth) the first position after
  // i whose token shares fewer than depth bytes with token i (a linear scan
  // of lcps when null). max_local_depth, if not null, is raised to the
  // deepest stack seen.
  template <typename BytesFn, typename FateFn, typename SkipFn>
  void Walk(const StackSet& start, bool bottom_is_context, std::span<const int32_t> ids,
            std::span<const uint16_t> lcps, const BytesFn& bytes, const FateFn& fate,
            const SkipFn& skip, int32_t* max_local_depth = nullptr);
  // Bytes stepped over all walks so far.
  int64_t steps() const { return steps_; }
  template <typename BytesFn, typename FateFn>
  void Walk(const StackSet& start, bool bottom_is_context, std::span<const int32_t> ids,
            std::span<const uint16_t> lcps, const BytesFn& bytes, const FateFn& fate) {
    Walk(start, bottom_is_context, ids, lcps, bytes, fate, [&](size_t i, size_t depth) {
      size_t j = i + 1;
      while (j < ids.size() && lcps[j] >= depth) ++j;
      return j;
    });
  }

 private:
  struct Level {
    int32_t single = -1;  // one stack of one frame: its state; else `set`
    StackSet set;
    bool empty = false;
    bool undecided = false;  // some path left the walk's context on the way
  };
  void StepLevel(const Level& from, uint8_t byte, bool bottom_is_context, bool first_byte,
                 Level* to);

  const ByteAutomaton* a_;
  StackStepper stepper_;
  std::vector<Level> levels_;
  StackSet single_scratch_;
  int64_t steps_ = 0;
};

template <typename BytesFn, typename FateFn, typename SkipFn>
void TokenWalker::Walk(const StackSet& start, bool bottom_is_context, std::span<const int32_t> ids,
                       std::span<const uint16_t> lcps, const BytesFn& bytes, const FateFn& fate,
                       const SkipFn& skip, int32_t* max_local_depth) {
  if (levels_.empty()) levels_.resize(1);
  {
    Level& root = levels_[0];
    root.single = start.SingleFrame();
    root.set = start;
    root.empty = start.empty();
    root.undecided = false;
  }
  // Levels [0, valid] hold the current token's path.
  size_t valid = 0;
  for (size_t i = 0; i < ids.size();) {
    const std::string_view token = bytes(i);
    const size_t lcp = i == 0 ? 0 : lcps[i];
    valid = std::min(valid, lcp);
    if (levels_.size() < token.size() + 1) levels_.resize(token.size() + 1);
    size_t d = valid;
    steps_ += static_cast<int64_t>(token.size() - d);
    for (; d < token.size(); ++d) {
      StepLevel(levels_[d], static_cast<uint8_t>(token[d]), bottom_is_context, d == 0,
                &levels_[d + 1]);
      if (max_local_depth != nullptr) {
        const Level& l = levels_[d + 1];
        for (size_t k = 0; l.single < 0 && k < l.set.size(); ++k) {
          *max_local_depth =
              std::max(*max_local_depth, static_cast<int32_t>(l.set.stack(k).size()));
        }
      }
      if (levels_[d + 1].empty) {
        ++d;
        break;
      }
    }
    valid = d;
    const Level& last = levels_[d];
    if (!last.empty) {
      fate(i, TokenFate::kAccepted);
      ++i;
      continue;
    }
    // Every token sharing the dead prefix shares this token's fate.
    const size_t end = skip(i, d);
    if (last.undecided) {
      for (size_t j = i; j < end; ++j) fate(j, TokenFate::kUndecided);
    }
    i = end;
  }
}

}  // namespace tokenmill::grammar
