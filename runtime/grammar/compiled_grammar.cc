#include "runtime/grammar/compiled_grammar.h"

#include <cstring>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "runtime/grammar/stack_walk.h"

namespace tokenmill::grammar {

std::shared_ptr<const CompiledGrammar> CompiledGrammar::Create(
    ByteAutomaton automaton, std::shared_ptr<const TokenVocabulary> vocabulary,
    int32_t max_stack_depth) {
  std::shared_ptr<CompiledGrammar> g(new CompiledGrammar());
  g->automaton_ = std::move(automaton);
  g->vocabulary_ = std::move(vocabulary);
  g->max_stack_depth_ = max_stack_depth;
  const ByteAutomaton& a = g->automaton_;
  const TokenVocabulary& v = *g->vocabulary_;
  const size_t words = v.mask_words();
  const int32_t n = a.num_states();
  g->mask_index_.assign(n, 0);
  g->max_push_.assign(n, 1);
  g->undecided_begin_.assign(n + 1, 0);
  // Mask 0 is the empty mask (dead states use it).
  g->masks_.assign(words, 0);
  absl::flat_hash_map<std::string, int32_t> mask_ids;
  mask_ids.emplace(std::string(words * 4, '\0'), 0);

  TokenWalker walker(a, max_stack_depth);
  const std::span<const int32_t> ids(v.sorted_ids());
  const std::span<const uint16_t> lcps(v.sorted_lcp());
  const auto bytes = [&](size_t i) { return v.sorted_bytes(i); };
  std::vector<uint32_t> mask(words);
  StackSet start;
  for (int32_t s = 0; s < n; ++s) {
    g->undecided_begin_[s] = static_cast<uint32_t>(g->undecided_ids_.size());
    if (!a.live[s]) continue;
    std::fill(mask.begin(), mask.end(), 0);
    start.Clear();
    start.Add({&s, 1});
    int32_t last_undecided = -1;
    int32_t max_depth = 1;
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
    g->max_push_[s] = max_depth;
    std::string key(reinterpret_cast<const char*>(mask.data()), words * 4);
    auto [it, inserted] =
        mask_ids.try_emplace(std::move(key), static_cast<int32_t>(mask_ids.size()));
    if (inserted) g->masks_.insert(g->masks_.end(), mask.begin(), mask.end());
    g->mask_index_[s] = it->second;
  }
  g->undecided_begin_[n] = static_cast<uint32_t>(g->undecided_ids_.size());
  return g;
}

absl::StatusOr<CompiledGrammarPtr> CompileJsonSchemaGrammar(
    std::string_view schema_json, const JsonSchemaOptions& options,
    std::shared_ptr<const TokenVocabulary> vocabulary) {
  absl::StatusOr<ByteAutomaton> automaton = CompileJsonSchema(schema_json, options);
  if (!automaton.ok()) return automaton.status();
  return CompiledGrammar::Create(*std::move(automaton), std::move(vocabulary),
                                 options.limits.max_stack_depth);
}

absl::StatusOr<CompiledGrammarPtr> CompileJsonObjectGrammar(
    const JsonSchemaOptions& options, std::shared_ptr<const TokenVocabulary> vocabulary) {
  absl::StatusOr<ByteAutomaton> automaton = CompileAnyJsonObject(options);
  if (!automaton.ok()) return automaton.status();
  return CompiledGrammar::Create(*std::move(automaton), std::move(vocabulary),
                                 options.limits.max_stack_depth);
}

}  // namespace tokenmill::grammar
