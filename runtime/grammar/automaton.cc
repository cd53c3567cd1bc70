#include "runtime/grammar/automaton.h"

#include <algorithm>
#include <limits>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"

namespace tokenmill::grammar {

int32_t NfaBuilder::NewState() {
  if (num_states() >= max_states_) {
    overflow_ = true;
    return 0;
  }
  edges_.emplace_back();
  return num_states() - 1;
}

void NfaBuilder::AddEdge(int32_t from, Edge edge) {
  if (overflow_) return;
  edges_[from].push_back(edge);
}

NfaBuilder::Frag NfaBuilder::Empty() {
  const int32_t s = NewState();
  return {s, s};
}

NfaBuilder::Frag NfaBuilder::ByteRange(uint8_t lo, uint8_t hi) {
  const int32_t a = NewState();
  const int32_t b = NewState();
  AddEdge(a, {Edge::kBytes, lo, hi, -1, b});
  return {a, b};
}

NfaBuilder::Frag NfaBuilder::Literal(std::string_view bytes) {
  Frag f = Empty();
  int32_t at = f.start;
  for (const char c : bytes) {
    const int32_t b = NewState();
    const auto u = static_cast<uint8_t>(c);
    AddEdge(at, {Edge::kBytes, u, u, -1, b});
    at = b;
  }
  f.end = at;
  return f;
}

NfaBuilder::Frag NfaBuilder::Call(int32_t rule) {
  const int32_t a = NewState();
  const int32_t b = NewState();
  AddEdge(a, {Edge::kCall, 0, 0, rule, b});
  return {a, b};
}

NfaBuilder::Frag NfaBuilder::Seq(Frag a, Frag b) {
  AddEdge(a.end, {Edge::kEpsilon, 0, 0, -1, b.start});
  return {a.start, b.end};
}

NfaBuilder::Frag NfaBuilder::Seq(const std::vector<Frag>& parts) {
  if (parts.empty()) return Empty();
  Frag f = parts[0];
  for (size_t i = 1; i < parts.size(); ++i) f = Seq(f, parts[i]);
  return f;
}

NfaBuilder::Frag NfaBuilder::Alt(const std::vector<Frag>& alternatives) {
  const int32_t a = NewState();
  const int32_t b = NewState();
  for (const Frag& f : alternatives) {
    AddEdge(a, {Edge::kEpsilon, 0, 0, -1, f.start});
    AddEdge(f.end, {Edge::kEpsilon, 0, 0, -1, b});
  }
  return {a, b};
}

NfaBuilder::Frag NfaBuilder::Optional(Frag f) {
  AddEdge(f.start, {Edge::kEpsilon, 0, 0, -1, f.end});
  return f;
}

NfaBuilder::Frag NfaBuilder::Star(Frag f) {
  // Fresh entry and exit: a fragment's exit must have no edge back into it
  // (nor its entry an edge in from it), or Optional / Seq around it would
  // open paths that skip or repeat the wrong parts.
  const int32_t a = NewState();
  const int32_t b = NewState();
  AddEdge(a, {Edge::kEpsilon, 0, 0, -1, f.start});
  AddEdge(a, {Edge::kEpsilon, 0, 0, -1, b});
  AddEdge(f.end, {Edge::kEpsilon, 0, 0, -1, f.start});
  AddEdge(f.end, {Edge::kEpsilon, 0, 0, -1, b});
  return {a, b};
}

NfaBuilder::Frag NfaBuilder::Repeat(const std::function<Frag()>& make, int32_t min, int32_t max) {
  Frag f = Empty();
  for (int32_t i = 0; i < min && !overflow_; ++i) f = Seq(f, make());
  if (max < 0) return Seq(f, Star(make()));
  // Optional copies nest: (x (x (x)?)?)? keeps the NFA linear.
  const int32_t end = NewState();
  AddEdge(f.end, {Edge::kEpsilon, 0, 0, -1, end});
  int32_t at = f.end;
  for (int32_t i = min; i < max && !overflow_; ++i) {
    const Frag copy = make();
    AddEdge(at, {Edge::kEpsilon, 0, 0, -1, copy.start});
    AddEdge(copy.end, {Edge::kEpsilon, 0, 0, -1, end});
    at = copy.end;
  }
  return {f.start, end};
}

namespace {

using StateSet = std::vector<int32_t>;

// Sorted epsilon closure of `set` (which it replaces).
void Closure(const NfaBuilder& nfa, StateSet* set, std::vector<uint8_t>* seen) {
  std::vector<int32_t> stack(set->begin(), set->end());
  for (const int32_t s : *set) (*seen)[s] = 1;
  while (!stack.empty()) {
    const int32_t s = stack.back();
    stack.pop_back();
    for (const NfaBuilder::Edge& e : nfa.edges(s)) {
      if (e.kind == NfaBuilder::Edge::kEpsilon && !(*seen)[e.to]) {
        (*seen)[e.to] = 1;
        set->push_back(e.to);
        stack.push_back(e.to);
      }
    }
  }
  for (const int32_t s : *set) (*seen)[s] = 0;
  std::sort(set->begin(), set->end());
}

}  // namespace

absl::StatusOr<ByteAutomaton> BuildAutomaton(const NfaBuilder& nfa,
                                             const std::vector<RuleSpec>& rules, int32_t root_rule,
                                             const GrammarLimits& limits) {
  if (nfa.overflow()) {
    return absl::InvalidArgumentError(
        absl::StrCat("schema too large: over ", limits.max_nfa_states, " automaton states"));
  }
  ByteAutomaton a;
  a.root_rule = root_rule;
  // Byte classes: cut [0, 256) at every edge boundary.
  std::array<uint8_t, 257> cut{};
  cut[0] = 1;
  for (int32_t s = 0; s < nfa.num_states(); ++s) {
    for (const NfaBuilder::Edge& e : nfa.edges(s)) {
      if (e.kind != NfaBuilder::Edge::kBytes) continue;
      cut[e.lo] = 1;
      cut[e.hi + 1] = 1;
    }
  }
  std::vector<uint8_t> representative;
  for (int b = 0; b < 256; ++b) {
    if (cut[b]) representative.push_back(static_cast<uint8_t>(b));
    a.byte_class[b] = static_cast<uint8_t>(representative.size() - 1);
  }
  a.num_classes = static_cast<int32_t>(representative.size());

  std::vector<uint8_t> seen(nfa.num_states(), 0);
  absl::flat_hash_map<StateSet, int32_t> ids;
  std::vector<StateSet> sets;
  std::vector<int32_t> nfa_end_of_state;  // per DFA state: its rule's NFA end
  std::vector<std::vector<std::pair<int32_t, int32_t>>> call_edges;  // (rule, target)
  const auto intern = [&](StateSet set, int32_t rule) -> int32_t {
    // Rules never share DFA states: key the set with its rule.
    set.push_back(-1 - rule);
    auto [it, inserted] = ids.try_emplace(set, static_cast<int32_t>(sets.size()));
    if (inserted) {
      set.pop_back();
      sets.push_back(std::move(set));
      a.state_rule.push_back(rule);
      nfa_end_of_state.push_back(rules[rule].body.end);
    }
    return it->second;
  };
  for (size_t r = 0; r < rules.size(); ++r) {
    StateSet start = {rules[r].body.start};
    Closure(nfa, &start, &seen);
    a.rule_start.push_back(intern(std::move(start), static_cast<int32_t>(r)));
    a.rule_names.push_back(rules[r].name);
  }
  for (size_t d = 0; d < sets.size(); ++d) {
    if (static_cast<int32_t>(sets.size()) > limits.max_dfa_states) {
      return absl::InvalidArgumentError(absl::StrCat(
          "schema too large: over ", limits.max_dfa_states, " grammar states after determinising"));
    }
    const int32_t rule = a.state_rule[d];
    a.next.resize((d + 1) * a.num_classes, -1);
    for (int32_t c = 0; c < a.num_classes; ++c) {
      const uint8_t byte = representative[c];
      StateSet moved;
      for (const int32_t s : sets[d]) {
        for (const NfaBuilder::Edge& e : nfa.edges(s)) {
          if (e.kind == NfaBuilder::Edge::kBytes && e.lo <= byte && byte <= e.hi) {
            moved.push_back(e.to);
          }
        }
      }
      if (moved.empty()) continue;
      std::sort(moved.begin(), moved.end());
      moved.erase(std::unique(moved.begin(), moved.end()), moved.end());
      Closure(nfa, &moved, &seen);
      moved.erase(std::unique(moved.begin(), moved.end()), moved.end());
      const int32_t to = intern(std::move(moved), rule);
      a.next[d * a.num_classes + c] = to;
    }
    std::vector<std::pair<int32_t, int32_t>> by_rule;  // (callee, nfa target)
    for (const int32_t s : sets[d]) {
      for (const NfaBuilder::Edge& e : nfa.edges(s)) {
        if (e.kind == NfaBuilder::Edge::kCall) by_rule.emplace_back(e.rule, e.to);
      }
    }
    std::sort(by_rule.begin(), by_rule.end());
    std::vector<std::pair<int32_t, int32_t>> calls;
    for (size_t i = 0; i < by_rule.size();) {
      StateSet targets;
      size_t j = i;
      for (; j < by_rule.size() && by_rule[j].first == by_rule[i].first; ++j) {
        targets.push_back(by_rule[j].second);
      }
      targets.erase(std::unique(targets.begin(), targets.end()), targets.end());
      Closure(nfa, &targets, &seen);
      targets.erase(std::unique(targets.begin(), targets.end()), targets.end());
      calls.emplace_back(by_rule[i].first, intern(std::move(targets), rule));
      i = j;
    }
    call_edges.push_back(std::move(calls));
  }
  int32_t n = static_cast<int32_t>(sets.size());
  a.accepting.assign(n, 0);
  for (int32_t d = 0; d < n; ++d) {
    a.accepting[d] =
        std::binary_search(sets[d].begin(), sets[d].end(), nfa_end_of_state[d]) ? 1 : 0;
  }

  // Liveness: can reach its rule's end, through calls of non-empty rules.
  // Iterate to a fixed point (rules' emptiness depends on each other).
  std::vector<uint8_t> can_end(n, 0);
  for (bool changed = true; changed;) {
    changed = false;
    for (int32_t d = n - 1; d >= 0; --d) {
      if (can_end[d]) continue;
      bool ok = a.accepting[d];
      for (int32_t c = 0; !ok && c < a.num_classes; ++c) {
        const int32_t t = a.next[d * a.num_classes + c];
        ok = t >= 0 && can_end[t];
      }
      for (const auto& [callee, ret] : call_edges[d]) {
        ok = ok || (can_end[a.rule_start[callee]] && can_end[ret]);
      }
      if (ok) {
        can_end[d] = 1;
        changed = true;
      }
    }
  }
  if (!can_end[a.rule_start[root_rule]]) {
    return absl::InvalidArgumentError("schema admits no JSON value");
  }
  // Drop edges into dead states and calls of empty rules.
  for (int32_t d = 0; d < n; ++d) {
    for (int32_t c = 0; c < a.num_classes; ++c) {
      int32_t& t = a.next[d * a.num_classes + c];
      if (t >= 0 && !can_end[t]) t = -1;
    }
    std::erase_if(call_edges[d], [&](const std::pair<int32_t, int32_t>& e) {
      return !can_end[a.rule_start[e.first]] || !can_end[e.second];
    });
  }
  // Minimise (Moore's partition refinement): states of one rule that agree
  // on acceptance, on the class of every byte's successor and on their calls
  // become one. Repeated copies of a value (a string per property) collapse.
  {
    std::vector<int32_t> cls(n);
    {
      absl::flat_hash_map<std::pair<int32_t, int32_t>, int32_t> initial;
      for (int32_t d = 0; d < n; ++d) {
        auto [it, inserted] =
            initial.try_emplace(std::make_pair(a.state_rule[d], int32_t{a.accepting[d]}),
                                static_cast<int32_t>(initial.size()));
        cls[d] = it->second;
      }
    }
    size_t num_classes = 0;
    std::vector<int32_t> signature;
    while (true) {
      absl::flat_hash_map<std::vector<int32_t>, int32_t> ids_of;
      std::vector<int32_t> next_cls(n);
      for (int32_t d = 0; d < n; ++d) {
        signature.clear();
        signature.push_back(cls[d]);
        for (int32_t c = 0; c < a.num_classes; ++c) {
          const int32_t t = a.next[d * a.num_classes + c];
          signature.push_back(t < 0 ? -1 : cls[t]);
        }
        for (const auto& [callee, ret] : call_edges[d]) {
          signature.push_back(callee);
          signature.push_back(cls[ret]);
        }
        auto [it, inserted] = ids_of.try_emplace(signature, static_cast<int32_t>(ids_of.size()));
        next_cls[d] = it->second;
      }
      cls = std::move(next_cls);
      if (ids_of.size() == num_classes) break;
      num_classes = ids_of.size();
    }
    const int32_t m = static_cast<int32_t>(num_classes);
    std::vector<int32_t> new_next(static_cast<size_t>(m) * a.num_classes, -1);
    std::vector<uint8_t> new_accepting(m, 0);
    std::vector<int32_t> new_rule(m, 0);
    std::vector<uint8_t> new_can_end(m, 0);
    std::vector<std::vector<std::pair<int32_t, int32_t>>> new_calls(m);
    std::vector<uint8_t> done(m, 0);
    for (int32_t d = 0; d < n; ++d) {
      const int32_t k = cls[d];
      if (done[k]) continue;
      done[k] = 1;
      for (int32_t c = 0; c < a.num_classes; ++c) {
        const int32_t t = a.next[d * a.num_classes + c];
        new_next[static_cast<size_t>(k) * a.num_classes + c] = t < 0 ? -1 : cls[t];
      }
      new_accepting[k] = a.accepting[d];
      new_rule[k] = a.state_rule[d];
      new_can_end[k] = can_end[d];
      for (const auto& [callee, ret] : call_edges[d]) new_calls[k].emplace_back(callee, cls[ret]);
    }
    for (int32_t& start : a.rule_start) start = cls[start];
    a.next = std::move(new_next);
    a.accepting = std::move(new_accepting);
    a.state_rule = std::move(new_rule);
    can_end = std::move(new_can_end);
    call_edges = std::move(new_calls);
    n = m;
  }
  // Reachability from the root through bytes, calls and returns.
  a.live.assign(n, 0);
  a.rule_called.assign(rules.size(), 0);
  std::vector<int32_t> stack = {a.rule_start[root_rule]};
  a.live[stack[0]] = 1;
  const auto visit = [&](int32_t s) {
    if (s >= 0 && !a.live[s]) {
      a.live[s] = 1;
      stack.push_back(s);
    }
  };
  while (!stack.empty()) {
    const int32_t d = stack.back();
    stack.pop_back();
    for (int32_t c = 0; c < a.num_classes; ++c) visit(a.next[d * a.num_classes + c]);
    for (const auto& [callee, ret] : call_edges[d]) {
      a.rule_called[callee] = 1;
      visit(a.rule_start[callee]);
      visit(ret);
    }
  }
  a.call_begin.assign(n + 1, 0);
  for (int32_t d = 0; d < n; ++d) {
    a.call_begin[d] = static_cast<uint32_t>(a.calls.size());
    for (const auto& [callee, ret] : call_edges[d]) a.calls.push_back({callee, ret});
  }
  a.call_begin[n] = static_cast<uint32_t>(a.calls.size());

  // Left recursion: calls available at a rule's start lead to rules that
  // start with calls, around a cycle without a byte in between.
  {
    const int32_t num_rules = static_cast<int32_t>(rules.size());
    std::vector<uint8_t> mark(num_rules, 0);  // 0 new, 1 on path, 2 done
    std::function<bool(int32_t)> cyclic = [&](int32_t r) {
      mark[r] = 1;
      const int32_t s = a.rule_start[r];
      for (uint32_t i = a.call_begin[s]; i < a.call_begin[s + 1]; ++i) {
        const int32_t callee = a.calls[i].rule;
        if (mark[callee] == 1 || (mark[callee] == 0 && cyclic(callee))) return true;
      }
      mark[r] = 2;
      return false;
    };
    for (int32_t r = 0; r < num_rules; ++r) {
      if (mark[r] == 0 && cyclic(r)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "schema recursion without a byte in between (left recursion) at ", rules[r].name));
      }
    }
  }

  a.simple.assign(n, 0);
  for (int32_t d = 0; d < n; ++d) {
    const bool may_return = a.accepting[d] && a.rule_called[a.state_rule[d]];
    a.simple[d] = (a.call_begin[d] == a.call_begin[d + 1] && !may_return) ? 1 : 0;
  }

  // Fewest bytes to the rule's end: relax until stable (states are numbered
  // roughly in breadth-first order, so reverse order converges fast).
  constexpr int32_t kInf = std::numeric_limits<int32_t>::max() / 4;
  a.min_bytes.assign(n, kInf);
  for (bool changed = true; changed;) {
    changed = false;
    for (int32_t d = n - 1; d >= 0; --d) {
      int32_t best = a.accepting[d] ? 0 : kInf;
      for (int32_t c = 0; c < a.num_classes; ++c) {
        const int32_t t = a.next[d * a.num_classes + c];
        if (t >= 0) best = std::min(best, a.min_bytes[t] + 1);
      }
      for (uint32_t i = a.call_begin[d]; i < a.call_begin[d + 1]; ++i) {
        const DfaCall& call = a.calls[i];
        best =
            std::min(best, a.min_bytes[a.rule_start[call.rule]] + a.min_bytes[call.return_state]);
      }
      if (best < a.min_bytes[d]) {
        a.min_bytes[d] = best;
        changed = true;
      }
    }
  }
  return a;
}

}  // namespace tokenmill::grammar
