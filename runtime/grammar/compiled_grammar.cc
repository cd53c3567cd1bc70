#include "runtime/grammar/compiled_grammar.h"

#include <cstring>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "runtime/grammar/stack_walk.h"

namespace tokenmill::grammar {

namespace {

// Classes of states that no token can tell apart: Moore refinement run for
// `rounds` rounds (a token's bytes at most), over acceptance, whether a
// return to a caller is possible, each byte's successor and the calls (by
// the callee's start and the return state). States of one class get the
// same accepted mask and undecided list, so each class is walked once: the
// positions of a long bounded string share one walk once more characters
// remain than any token holds.
std::vector<int32_t> TokenEquivalentClasses(const ByteAutomaton& a, size_t rounds) {
  const int32_t n = a.num_states();
  std::vector<int32_t> cls(n);
  for (int32_t s = 0; s < n; ++s) {
    cls[s] = (a.accepting[s] ? 1 : 0) + (a.rule_called[a.state_rule[s]] ? 2 : 0);
  }
  size_t count = 0;
  std::vector<int32_t> signature;
  for (size_t round = 0; round <= rounds; ++round) {
    absl::flat_hash_map<std::vector<int32_t>, int32_t> ids;
    std::vector<int32_t> next(n);
    for (int32_t s = 0; s < n; ++s) {
      signature.assign(1, cls[s]);
      for (int32_t c = 0; c < a.num_classes; ++c) {
        const int32_t t = a.next[static_cast<size_t>(s) * a.num_classes + c];
        signature.push_back(t < 0 ? -1 : cls[t]);
      }
      for (uint32_t i = a.call_begin[s]; i < a.call_begin[s + 1]; ++i) {
        signature.push_back(cls[a.rule_start[a.calls[i].rule]]);
        signature.push_back(cls[a.calls[i].return_state]);
      }
      next[s] = ids.try_emplace(signature, static_cast<int32_t>(ids.size())).first->second;
    }
    cls = std::move(next);
    if (ids.size() == count) break;
    count = ids.size();
  }
  return cls;
}

}  // namespace

absl::StatusOr<std::shared_ptr<const CompiledGrammar>> CompiledGrammar::Create(
    ByteAutomaton automaton, std::shared_ptr<const TokenVocabulary> vocabulary,
    const GrammarLimits& limits) {
  std::shared_ptr<CompiledGrammar> g(new CompiledGrammar());
  g->automaton_ = std::move(automaton);
  g->vocabulary_ = std::move(vocabulary);
  g->max_stack_depth_ = limits.max_stack_depth;
  const ByteAutomaton& a = g->automaton_;
  const TokenVocabulary& v = *g->vocabulary_;
  const size_t words = v.mask_words();
  const int32_t n = a.num_states();
  g->mask_index_.assign(n, 0);
  g->max_push_.assign(n, 1);
  g->undecided_begin_.assign(n, 0);
  g->undecided_end_.assign(n, 0);
  // Mask 0 is the empty mask (dead states use it).
  g->masks_.assign(words, 0);
  absl::flat_hash_map<std::string, int32_t> mask_ids;
  mask_ids.emplace(std::string(words * 4, '\0'), 0);

  const std::vector<int32_t> cls = TokenEquivalentClasses(a, v.max_token_bytes() + 1);
  absl::flat_hash_map<int32_t, int32_t> walked;  // class -> the state walked for it
  TokenWalker walker(a, limits.max_stack_depth);
  const std::span<const int32_t> ids(v.sorted_ids());
  const std::span<const uint16_t> lcps(v.sorted_lcp());
  const auto bytes = [&](size_t i) { return v.sorted_bytes(i); };
  std::vector<uint32_t> mask(words);
  StackSet start;
  for (int32_t s = 0; s < n; ++s) {
    if (!a.live[s]) continue;
    auto [same, first] = walked.try_emplace(cls[s], s);
    if (!first) {
      const int32_t r = same->second;
      g->mask_index_[s] = g->mask_index_[r];
      g->max_push_[s] = g->max_push_[r];
      g->undecided_begin_[s] = g->undecided_begin_[r];
      g->undecided_end_[s] = g->undecided_end_[r];
      continue;
    }
    if (walker.steps() > limits.max_precompute_steps) {
      return absl::InvalidArgumentError(
          "schema too expensive to compile for this vocabulary (too many distinct states)");
    }
    std::fill(mask.begin(), mask.end(), 0);
    start.Clear();
    start.Add({&s, 1});
    int32_t last_undecided = -1;
    int32_t max_depth = 1;
    g->undecided_begin_[s] = static_cast<uint32_t>(g->undecided_ids_.size());
    walker.Walk(
        start, /*bottom_is_context=*/true, ids, lcps, bytes,
        [&](size_t i, TokenFate fate) {
          const int32_t id = ids[i];
          if (fate == TokenFate::kAccepted) {
            mask[id >> 5] |= 1u << (id & 31);
          } else if (fate == TokenFate::kUndecided) {
            g->undecided_lcp_.push_back(
                last_undecided < 0 ? 0 : CommonPrefix(v.bytes(last_undecided), v.bytes(id)));
            g->undecided_ids_.push_back(id);
            last_undecided = id;
          }
        },
        [&](size_t i, size_t depth) { return v.SkipSubtree(i, depth); }, &max_depth);
    g->undecided_end_[s] = static_cast<uint32_t>(g->undecided_ids_.size());
    g->max_push_[s] = max_depth;
    std::string key(reinterpret_cast<const char*>(mask.data()), words * 4);
    auto [it, inserted] =
        mask_ids.try_emplace(std::move(key), static_cast<int32_t>(mask_ids.size()));
    if (inserted) g->masks_.insert(g->masks_.end(), mask.begin(), mask.end());
    g->mask_index_[s] = it->second;
  }
  g->walked_states_ = walked.size();
  return std::shared_ptr<const CompiledGrammar>(std::move(g));
}

absl::StatusOr<CompiledGrammarPtr> CompileJsonSchemaGrammar(
    std::string_view schema_json, const JsonSchemaOptions& options,
    std::shared_ptr<const TokenVocabulary> vocabulary) {
  absl::StatusOr<ByteAutomaton> automaton = CompileJsonSchema(schema_json, options);
  if (!automaton.ok()) return automaton.status();
  return CompiledGrammar::Create(*std::move(automaton), std::move(vocabulary), options.limits);
}

absl::StatusOr<CompiledGrammarPtr> CompileJsonObjectGrammar(
    const JsonSchemaOptions& options, std::shared_ptr<const TokenVocabulary> vocabulary) {
  absl::StatusOr<ByteAutomaton> automaton = CompileAnyJsonObject(options);
  if (!automaton.ok()) return automaton.status();
  return CompiledGrammar::Create(*std::move(automaton), std::move(vocabulary), options.limits);
}

}  // namespace tokenmill::grammar
