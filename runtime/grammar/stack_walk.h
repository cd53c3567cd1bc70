// Running the pushdown automaton: sets of stacks stepped one byte at a time,
// and a walk of many tokens at once that shares the work of common prefixes
// (tokens sorted by bytes). Internal to runtime/grammar.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "runtime/grammar/automaton.h"

namespace tokenmill::grammar {

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
  // instead of continuing. Without it, the bottom frame is the real bottom.
  void Step(const StackSet& in, uint8_t byte, bool bottom_is_context, StackSet* out,
            bool* undecided);

 private:
  void StepTop(int32_t cls, bool bottom_is_context, StackSet* out, bool* undecided);

  const ByteAutomaton* a_;
  int32_t max_depth_;
  std::vector<int32_t> scratch_;
};

// Result of walking one token.
enum class TokenFate : uint8_t { kRejected, kAccepted, kUndecided };

// Walks a list of tokens (in byte order, with each one's common prefix with
// the previous) from a set of stacks, stepping each shared prefix once and
// skipping every token under a dead prefix.
class TokenWalker {
 public:
  TokenWalker(const ByteAutomaton& automaton, int32_t max_depth)
      : a_(&automaton), stepper_(automaton, max_depth) {}

  // Calls fate(i, TokenFate) for each i in [0, ids.size()) in order.
  // bytes(id) gives a token's bytes. max_local_depth, if not null, is raised
  // to the deepest stack seen.
  template <typename BytesFn, typename FateFn>
  void Walk(const StackSet& start, bool bottom_is_context, std::span<const int32_t> ids,
            std::span<const uint16_t> lcps, const BytesFn& bytes, const FateFn& fate,
            int32_t* max_local_depth = nullptr);

 private:
  struct Level {
    int32_t single = -1;  // one stack of one frame: its state; else `set`
    StackSet set;
    bool empty = false;
    bool undecided = false;  // some path left the walk's context on the way
  };
  void StepLevel(const Level& from, uint8_t byte, bool bottom_is_context, Level* to);

  const ByteAutomaton* a_;
  StackStepper stepper_;
  std::vector<Level> levels_;
  StackSet single_scratch_;
};

template <typename BytesFn, typename FateFn>
void TokenWalker::Walk(const StackSet& start, bool bottom_is_context, std::span<const int32_t> ids,
                       std::span<const uint16_t> lcps, const BytesFn& bytes, const FateFn& fate,
                       int32_t* max_local_depth) {
  if (levels_.empty()) levels_.resize(1);
  Level& root = levels_[0];
  root.single = start.SingleFrame();
  root.set = start;
  root.empty = start.empty();
  root.undecided = false;
  // valid: levels [0, valid] hold the current path's prefix.
  size_t valid = 0;
  // The path died (or became undecided) at this depth: tokens under it
  // share its fate without stepping.
  size_t stop_depth = SIZE_MAX;
  for (size_t i = 0; i < ids.size(); ++i) {
    const std::string_view token = bytes(ids[i]);
    const size_t lcp = i == 0 ? 0 : lcps[i];
    if (lcp < valid) valid = lcp;
    if (stop_depth != SIZE_MAX) {
      if (lcp >= stop_depth) {
        fate(i, levels_[stop_depth].undecided ? TokenFate::kUndecided : TokenFate::kRejected);
        continue;
      }
      stop_depth = SIZE_MAX;
    }
    if (levels_.size() < token.size() + 1) levels_.resize(token.size() + 1);
    size_t d = valid;
    for (; d < token.size(); ++d) {
      StepLevel(levels_[d], static_cast<uint8_t>(token[d]), bottom_is_context, &levels_[d + 1]);
      if (max_local_depth != nullptr) {
        const Level& l = levels_[d + 1];
        if (l.single >= 0) {
          *max_local_depth = std::max(*max_local_depth, int32_t{1});
        } else {
          for (size_t k = 0; k < l.set.size(); ++k) {
            *max_local_depth =
                std::max(*max_local_depth, static_cast<int32_t>(l.set.stack(k).size()));
          }
        }
      }
      if (levels_[d + 1].empty) {
        ++d;
        break;
      }
    }
    valid = d;
    const Level& last = levels_[d];
    if (last.empty) {
      stop_depth = d;
      fate(i, last.undecided ? TokenFate::kUndecided : TokenFate::kRejected);
    } else {
      fate(i, TokenFate::kAccepted);
    }
  }
}

}  // namespace tokenmill::grammar
