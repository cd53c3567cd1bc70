// GrammarCache: one compile per distinct constraint, strict keyed apart,
// refusals not cached, least recently used grammars dropped past the bound.
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/grammar/grammar_cache.h"
#include "tests/grammar/grammar_test_util.h"

namespace tokenmill::grammar {
namespace {

using Kind = OutputConstraint::Kind;

OutputConstraint C(Kind kind, std::string schema, bool strict) {
  OutputConstraint c;
  c.kind = kind;
  c.schema = std::move(schema);
  c.strict = strict;
  return c;
}

TEST(GrammarCacheTest, CompilesOncePerConstraint) {
  GrammarCache cache(testing::SmallVocabulary(), {});
  const OutputConstraint a = C(Kind::kJsonSchema, R"({"type":"integer"})", false);
  absl::StatusOr<CompiledGrammarPtr> first = cache.Get(a);
  ASSERT_TRUE(first.ok()) << first.status();
  absl::StatusOr<CompiledGrammarPtr> again = cache.Get(a);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(first->get(), again->get());
  absl::StatusOr<CompiledGrammarPtr> strict = cache.Get(C(Kind::kJsonSchema, a.schema, true));
  ASSERT_TRUE(strict.ok());
  EXPECT_NE(first->get(), strict->get());
  absl::StatusOr<CompiledGrammarPtr> object = cache.Get(C(Kind::kJsonObject, "", false));
  ASSERT_TRUE(object.ok());
  EXPECT_TRUE(testing::AcceptsDocument(*object, "{\"k\":[1]}"));
  OutputConstraint wrapped = a;
  wrapped.prefix = "<tool_call>";
  absl::StatusOr<CompiledGrammarPtr> with_prefix = cache.Get(wrapped);
  ASSERT_TRUE(with_prefix.ok());
  EXPECT_NE(first->get(), with_prefix->get());
  EXPECT_TRUE(testing::AcceptsDocument(*with_prefix, "<tool_call>12"));
  EXPECT_EQ(cache.size(), 4u);
  EXPECT_GT(cache.cached_bytes(), 0u);
}

TEST(GrammarCacheTest, StrictDecidesUnknownKeywordsAndRefusalsAreNotCached) {
  GrammarCache cache(testing::SmallVocabulary(), {});
  const std::string schema = R"({"type":"string","x-vendor":true})";
  EXPECT_TRUE(cache.Get(C(Kind::kJsonSchema, schema, false)).ok());
  absl::StatusOr<CompiledGrammarPtr> strict = cache.Get(C(Kind::kJsonSchema, schema, true));
  ASSERT_FALSE(strict.ok());
  EXPECT_EQ(strict.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cache.size(), 1u);
}

TEST(GrammarCacheTest, DropsLeastRecentlyUsedPastTheBound) {
  const auto vocab = testing::SmallVocabulary();
  GrammarCache probe(vocab, {});
  const size_t one = (*probe.Get(C(Kind::kJsonSchema, R"({"enum":[0]})", false)))->memory_bytes();
  GrammarCache cache(vocab, {}, one * 5 / 2);  // room for two such grammars
  std::vector<CompiledGrammarPtr> held;
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<CompiledGrammarPtr> g =
        cache.Get(C(Kind::kJsonSchema, "{\"enum\":[" + std::to_string(i) + "]}", false));
    ASSERT_TRUE(g.ok());
    held.push_back(*g);
  }
  EXPECT_EQ(cache.size(), 2u);
  // The oldest was dropped (a new compile), the newest kept; holders keep
  // theirs alive either way.
  EXPECT_NE(cache.Get(C(Kind::kJsonSchema, "{\"enum\":[0]}", false))->get(), held[0].get());
  EXPECT_EQ(cache.Get(C(Kind::kJsonSchema, "{\"enum\":[2]}", false))->get(), held[2].get());
  EXPECT_TRUE(testing::AcceptsDocument(held[0], "0"));
}

TEST(GrammarCacheTest, ConcurrentGetsAgree) {
  GrammarCache cache(testing::SmallVocabulary(), {});
  const OutputConstraint c =
      C(Kind::kJsonSchema, R"({"type":"array","items":{"type":"boolean"}})", false);
  std::vector<CompiledGrammarPtr> got(4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] { got[t] = *cache.Get(c); });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(cache.size(), 1u);
  for (const CompiledGrammarPtr& g : got) EXPECT_TRUE(testing::AcceptsDocument(g, "[true,false]"));
}

}  // namespace
}  // namespace tokenmill::grammar
