#include "runtime/grammar/grammar_cache.h"

#include "absl/strings/str_cat.h"

namespace tokenmill::grammar {

GrammarCache::GrammarCache(std::shared_ptr<const TokenVocabulary> vocabulary,
                           JsonSchemaOptions options, size_t max_bytes)
    : vocabulary_(std::move(vocabulary)), options_(options), max_bytes_(max_bytes) {}

std::string GrammarCache::Key(const OutputConstraint& constraint) {
  // Lengths first, so no two constraints share a key.
  std::string key = absl::StrCat(constraint.prefix.size(), ":", constraint.prefix,
                                 constraint.suffix.size(), ":", constraint.suffix);
  key += constraint.kind == OutputConstraint::Kind::kJsonObject
             ? std::string("object")
             : (constraint.strict ? "strict:" : "schema:") + constraint.schema;
  return key;
}

CompiledGrammarPtr GrammarCache::FindKey(const std::string& key) {
  absl::MutexLock lock(&mu_);
  auto it = index_.find(key);
  if (it == index_.end()) return nullptr;
  lru_.splice(lru_.begin(), lru_, it->second);
  return it->second->second;
}

CompiledGrammarPtr GrammarCache::Find(const OutputConstraint& constraint) {
  return FindKey(Key(constraint));
}

absl::StatusOr<CompiledGrammarPtr> GrammarCache::Get(const OutputConstraint& constraint) {
  std::string key = Key(constraint);
  if (CompiledGrammarPtr cached = FindKey(key)) return cached;
  JsonSchemaOptions options = options_;
  options.strict = constraint.strict;
  options.prefix = constraint.prefix;
  options.suffix = constraint.suffix;
  absl::StatusOr<CompiledGrammarPtr> compiled =
      constraint.kind == OutputConstraint::Kind::kJsonObject
          ? CompileJsonObjectGrammar(options, vocabulary_)
          : CompileJsonSchemaGrammar(constraint.schema, options, vocabulary_);
  if (!compiled.ok()) return compiled.status();
  absl::MutexLock lock(&mu_);
  auto it = index_.find(key);
  if (it != index_.end()) return it->second->second;  // another thread won
  lru_.emplace_front(key, *compiled);
  index_.emplace(std::move(key), lru_.begin());
  bytes_ += (*compiled)->memory_bytes();
  while (bytes_ > max_bytes_ && lru_.size() > 1) {
    bytes_ -= lru_.back().second->memory_bytes();
    index_.erase(lru_.back().first);
    lru_.pop_back();
  }
  return *compiled;
}

size_t GrammarCache::cached_bytes() const {
  absl::MutexLock lock(&mu_);
  return bytes_;
}

size_t GrammarCache::size() const {
  absl::MutexLock lock(&mu_);
  return lru_.size();
}

}  // namespace tokenmill::grammar
