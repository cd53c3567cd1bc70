// The compiled grammars of one model instance, keyed by what requests ask
// for (`response_format` json_object, or a JSON Schema text with its strict
// flag), so that repeated schemas compile once. For the encode pool threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "runtime/grammar/compiled_grammar.h"

namespace tokenmill::grammar {

// What a request constrains its output to.
struct OutputConstraint {
  enum class Kind { kJsonObject, kJsonSchema };
  Kind kind = Kind::kJsonObject;
  std::string schema;  // kJsonSchema: the schema as JSON text
  bool strict = false;
  // Literal text around the value (JsonSchemaOptions::prefix / suffix).
  std::string prefix;
  std::string suffix;
};

// Thread-safe. Least recently used grammars are dropped once the cached
// ones hold more than max_bytes (a grammar in use stays alive through its
// shared pointer). Two threads asking for the same new schema at once may
// both compile it; one result is kept.
class GrammarCache {
 public:
  GrammarCache(std::shared_ptr<const TokenVocabulary> vocabulary, JsonSchemaOptions options,
               size_t max_bytes = size_t{256} << 20);

  // The grammar for `constraint` (options' strict, prefix and suffix
  // replaced by the constraint's); kInvalidArgument for a schema the compiler refuses
  // (not cached).
  absl::StatusOr<CompiledGrammarPtr> Get(const OutputConstraint& constraint);
  // The cached grammar for `constraint` (and it becomes the most recent);
  // nullptr when Get would compile.
  CompiledGrammarPtr Find(const OutputConstraint& constraint);

  const TokenVocabulary& vocabulary() const { return *vocabulary_; }
  size_t cached_bytes() const;
  size_t size() const;

 private:
  using Entry = std::pair<std::string, CompiledGrammarPtr>;

  static std::string Key(const OutputConstraint& constraint);
  CompiledGrammarPtr FindKey(const std::string& key);

  std::shared_ptr<const TokenVocabulary> vocabulary_;
  JsonSchemaOptions options_;
  size_t max_bytes_;
  mutable absl::Mutex mu_;
  std::list<Entry> lru_ ABSL_GUARDED_BY(mu_);  // most recent first
  absl::flat_hash_map<std::string, std::list<Entry>::iterator> index_ ABSL_GUARDED_BY(mu_);
  size_t bytes_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace tokenmill::grammar
