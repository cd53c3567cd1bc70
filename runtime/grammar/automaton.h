// Byte-level pushdown automata for constrained decoding: an NFA builder with
// Thompson-style fragments and rule calls, and its determinised form (one DFA
// per rule, rules calling rules through a stack) that matchers run.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace tokenmill::grammar {

// Bounds on what a client-supplied schema may compile to, so that a hostile
// schema fails with a clear error instead of exhausting memory or time.
struct GrammarLimits {
  // NFA states while building (each literal byte or range is about one).
  int32_t max_nfa_states = 200000;
  // DFA states over all rules, before minimising (a bounded string costs
  // about 20 per character of maxLength).
  int32_t max_dfa_states = 16384;
  // Rules ($ref targets and the any-value rules).
  int32_t max_rules = 256;
  // Nesting of subschemas the compiler descends into.
  int32_t max_schema_depth = 64;
  // Stack frames a matcher may hold (nesting of recursive values at runtime).
  int32_t max_stack_depth = 64;
  // Automaton steps spent walking the vocabulary at compile time (a few ns
  // each; about 0.5M per state that accepts most of a 128K vocabulary).
  int64_t max_precompute_steps = 400'000'000;
};

// Builds one NFA shared by every rule. Fragments have one entry and one exit
// state, the entry with no edge into it and the exit with no edge out of it
// from inside the fragment; combinators join them with epsilon edges. States past
// max_nfa_states are not created (overflow() turns true and fragments become
// meaningless), so callers check overflow() before using the result.
class NfaBuilder {
 public:
  struct Frag {
    int32_t start = 0;
    int32_t end = 0;
  };
  struct Edge {
    enum Kind : uint8_t { kEpsilon, kBytes, kCall } kind = kEpsilon;
    uint8_t lo = 0;
    uint8_t hi = 0;
    int32_t rule = -1;  // kCall: the rule called
    int32_t to = 0;
  };

  explicit NfaBuilder(int32_t max_states) : max_states_(max_states) {}

  bool overflow() const { return overflow_; }
  int32_t num_states() const { return static_cast<int32_t>(edges_.size()); }
  const std::vector<Edge>& edges(int32_t state) const { return edges_[state]; }

  // Matches the empty string (a fresh state: also how to get a join point).
  Frag Empty();
  // An epsilon edge from one state to another, for shapes the combinators
  // do not cover (several entries into one fragment).
  void Connect(int32_t from, int32_t to) { AddEdge(from, {Edge::kEpsilon, 0, 0, -1, to}); }
  // A byte edge in [lo, hi] between existing states (for product
  // constructions over a fragment's states).
  void ConnectBytes(int32_t from, uint8_t lo, uint8_t hi, int32_t to) {
    AddEdge(from, {Edge::kBytes, lo, hi, -1, to});
  }
  // One byte in [lo, hi].
  Frag ByteRange(uint8_t lo, uint8_t hi);
  // Exactly these bytes.
  Frag Literal(std::string_view bytes);
  // A complete match of `rule` (pushes a frame at runtime).
  Frag Call(int32_t rule);
  Frag Seq(Frag a, Frag b);
  Frag Seq(const std::vector<Frag>& parts);
  // Any one of the alternatives; an empty list matches nothing.
  Frag Alt(const std::vector<Frag>& alternatives);
  Frag Optional(Frag f);
  Frag Star(Frag f);
  // min to max copies of what `make` builds (max < 0: unbounded); `make` is
  // called once per copy since a fragment can be used only once.
  Frag Repeat(const std::function<Frag()>& make, int32_t min, int32_t max);

 private:
  int32_t NewState();
  void AddEdge(int32_t from, Edge edge);

  int32_t max_states_;
  bool overflow_ = false;
  std::vector<std::vector<Edge>> edges_;
};

// A rule of the grammar: its body fragment in the builder's NFA.
struct RuleSpec {
  std::string name;
  NfaBuilder::Frag body;
};

// Rule call out of a DFA state: push `rule`'s start, return to `return_state`.
struct DfaCall {
  int32_t rule = 0;
  int32_t return_state = 0;
};

// The determinised grammar. DFA states of all rules share one numbering, so a
// stack frame is just a state id. Immutable once built.
struct ByteAutomaton {
  int32_t num_classes = 0;
  // Bytes the grammar never tells apart share a class.
  std::array<uint8_t, 256> byte_class{};
  // next[state * num_classes + class]: the state after the byte, or -1.
  std::vector<int32_t> next;
  std::vector<uint8_t> accepting;  // per state: the rule may end here
  // Calls of state s are calls[call_begin[s] .. call_begin[s + 1]).
  std::vector<uint32_t> call_begin;
  std::vector<DfaCall> calls;
  std::vector<int32_t> state_rule;  // per state: the rule it belongs to
  std::vector<uint8_t> live;        // per state: reachable and can reach its rule's end
  // Per state: no calls and no possible return to a caller, so one byte moves
  // the top frame only (the matcher's fast path).
  std::vector<uint8_t> simple;
  // Per state: fewest bytes that complete the rule from here.
  std::vector<int32_t> min_bytes;
  std::vector<int32_t> rule_start;   // per rule: its start state
  std::vector<uint8_t> rule_called;  // per rule: some state calls it
  std::vector<std::string> rule_names;
  int32_t root_rule = 0;

  int32_t num_states() const { return static_cast<int32_t>(accepting.size()); }
  int32_t Next(int32_t state, uint8_t byte) const {
    return next[static_cast<size_t>(state) * num_classes + byte_class[byte]];
  }
};

// Determinises each rule (subset construction over byte classes and calls),
// drops dead states, refuses left recursion (a rule reaching itself through
// calls without consuming a byte) and empty languages, and bounds the size.
// Errors are kInvalidArgument.
absl::StatusOr<ByteAutomaton> BuildAutomaton(const NfaBuilder& nfa,
                                             const std::vector<RuleSpec>& rules, int32_t root_rule,
                                             const GrammarLimits& limits);

}  // namespace tokenmill::grammar
