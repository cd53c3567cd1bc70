// Prefix cache of KvBlockManager: reuse inside a cache group, isolation
// across groups, hash collisions, the last prompt token, LRU and refcounts.
#include <numeric>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/kv/kv_block_manager.h"
#include "tests/kv/kv_test_util.h"

namespace tokenmill::kv {
namespace {

using ::testing::ElementsAreArray;

using testing::kBlock;
using testing::Tokens;

std::vector<int32_t> Concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// Runs a prompt through: start, cover it, commit its full blocks.
SeqAlloc RunPrompt(KvBlockManager& m, uint64_t id, const std::string& tenant,
                   const std::string& salt, const std::vector<int32_t>& prompt) {
  absl::StatusOr<SeqAlloc> a = m.StartSequence(id, tenant, salt, prompt);
  EXPECT_TRUE(a.ok()) << a.status();
  EXPECT_TRUE(m.EnsureCapacity(id, static_cast<int64_t>(prompt.size())).ok());
  m.CommitFullBlocks(id, prompt);
  EXPECT_TRUE(m.CheckInvariants().ok()) << m.CheckInvariants();
  return a.ok() ? *a : SeqAlloc{};
}

TEST(KvPrefixCacheTest, ReusesPrefixInsideCacheGroupOnly) {
  KvBlockManager m(16, kBlock);
  const std::string group = PrefixSalt("a", "g");
  EXPECT_EQ(group, PrefixSalt("b", "g"));
  const std::vector<int32_t> prompt = Tokens(12, 100);
  RunPrompt(m, 1, "a", group, prompt);
  const std::vector<uint32_t> first(m.BlockTable(1).begin(), m.BlockTable(1).end());

  // Same group, another tenant: the three full blocks are served.
  SeqAlloc hit = RunPrompt(m, 2, "b", group, Concat(prompt, {7}));
  EXPECT_EQ(hit.cached_tokens, 12);
  EXPECT_THAT(hit.block_table, ElementsAreArray(first));

  // Another group or a tenant without a group: nothing.
  SeqAlloc other = RunPrompt(m, 3, "c", PrefixSalt("c", "h"), Concat(prompt, {7}));
  EXPECT_EQ(other.cached_tokens, 0);
  SeqAlloc own = RunPrompt(m, 4, "a", PrefixSalt("a", ""), Concat(prompt, {7}));
  EXPECT_EQ(own.cached_tokens, 0);

  KvStats s = m.Stats();
  EXPECT_EQ(s.prefix_hit_blocks, 3u);
  EXPECT_EQ(s.prefix_hit_tokens, 12u);
  EXPECT_EQ(s.prefix_query_blocks, 2u + 3u * 3u);  // 12 tokens -> 2 matchable, then 3 x 13
}

TEST(KvPrefixCacheTest, LastPromptTokenIsNeverServedFromCache) {
  KvBlockManager m(16, kBlock);
  const std::vector<int32_t> prompt = Tokens(12, 5);
  RunPrompt(m, 1, "a", "s", prompt);
  // The identical prompt ends exactly on a block boundary: its last block
  // holds the last token and must be computed again.
  SeqAlloc a = RunPrompt(m, 2, "a", "s", prompt);
  EXPECT_EQ(a.cached_tokens, 8);
  EXPECT_EQ(a.block_table.size(), 2u);
  // A one-block prompt gets nothing.
  SeqAlloc b = RunPrompt(m, 3, "a", "s", Tokens(4, 5));
  EXPECT_EQ(b.cached_tokens, 0);
}

TEST(KvPrefixCacheTest, SkippedLookupMatchesNothingAndIsNotAQuery) {
  KvBlockManager m(16, kBlock);
  const std::vector<int32_t> prompt = Tokens(12, 5);
  RunPrompt(m, 1, "a", "s", prompt);
  const KvStats before = m.Stats();
  absl::StatusOr<SeqAlloc> a = m.StartSequence(2, "a", "s", prompt, PrefixLookup::kSkip);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->cached_tokens, 0);
  EXPECT_TRUE(a->block_table.empty());
  EXPECT_EQ(m.Stats().prefix_query_tokens, before.prefix_query_tokens);
  EXPECT_EQ(m.Stats().prefix_query_blocks, before.prefix_query_blocks);
  // It takes blocks of its own, and the cached ones are still found.
  ASSERT_TRUE(m.EnsureCapacity(2, 12).ok());
  EXPECT_EQ(RunPrompt(m, 3, "a", "s", prompt).cached_tokens, 8);
  EXPECT_TRUE(m.CheckInvariants().ok());
}

uint64_t CollidingHash(uint64_t, std::span<const int32_t>, std::string_view) { return 42; }

TEST(KvPrefixCacheTest, HashCollisionsNeverServeWrongBlocks) {
  KvBlockManager m(32, kBlock, &CollidingHash);
  const std::vector<int32_t> a1 = Tokens(4, 0), a2 = Tokens(4, 10);
  const std::vector<int32_t> b1 = Tokens(4, 20), b2 = Tokens(4, 30);
  RunPrompt(m, 1, "t", "s", Concat(a1, a2));
  RunPrompt(m, 2, "t", "s", Concat(b1, b2));
  const std::vector<uint32_t> ta(m.BlockTable(1).begin(), m.BlockTable(1).end());

  // Different tokens under the same hash: no hit.
  EXPECT_EQ(RunPrompt(m, 3, "t", "s", Concat(Tokens(8, 50), {1})).cached_tokens, 0);
  // Same tokens, other salt: no hit.
  EXPECT_EQ(RunPrompt(m, 4, "t", "other", Concat(Concat(a1, a2), {1})).cached_tokens, 0);
  // a1 then b2: b2's entry exists (same hash, same tokens) but its parent is
  // b1, so only a1 may be served.
  SeqAlloc mixed = RunPrompt(m, 5, "t", "s", Concat(Concat(a1, b2), {1}));
  EXPECT_EQ(mixed.cached_tokens, 4);
  EXPECT_THAT(mixed.block_table, ElementsAreArray({ta[0]}));
  // The true chain still hits in full.
  SeqAlloc full = RunPrompt(m, 6, "t", "s", Concat(Concat(a1, a2), {1}));
  EXPECT_EQ(full.cached_tokens, 8);
  EXPECT_THAT(full.block_table, ElementsAreArray(ta));
}

TEST(KvPrefixCacheTest, EvictsLeastRecentlyUsedCachedBlock) {
  KvBlockManager m(4, kBlock);
  const std::vector<int32_t> pa = Tokens(4, 0), pb = Tokens(4, 10), pc = Tokens(4, 20);
  for (auto [id, p] : {std::pair{1, pa}, std::pair{2, pb}, std::pair{3, pc}}) {
    RunPrompt(m, id, "t", "s", p);
  }
  m.FreeSequence(1);
  m.FreeSequence(2);
  m.FreeSequence(3);  // LRU: a, b, c
  // Touch a: it becomes the most recent (b, c, a).
  EXPECT_EQ(RunPrompt(m, 4, "t", "s", Concat(pa, {1})).cached_tokens, 4);
  m.FreeSequence(4);  // a's block and the fresh one for token 1 (uncached: not full)
  EXPECT_EQ(m.Stats().blocks_cached, 3u);
  EXPECT_EQ(m.Stats().blocks_free, 1u);

  // Two blocks: the free one, then b (least recent) is evicted.
  ASSERT_TRUE(m.StartSequence(5, "t", "s", Tokens(1, 99)).ok());
  ASSERT_TRUE(m.EnsureCapacity(5, 8).ok());
  EXPECT_EQ(m.Stats().evictions, 1u);
  EXPECT_TRUE(m.CheckInvariants().ok());
  // Probe without taking new blocks: b is gone, c and a are still found.
  auto probe = [&](uint64_t id, const std::vector<int32_t>& p) {
    absl::StatusOr<SeqAlloc> a = m.StartSequence(id, "t", "s", Concat(p, {1}));
    m.FreeSequence(id);
    return a.ok() ? a->cached_tokens : -1;
  };
  EXPECT_EQ(probe(6, pb), 0);
  EXPECT_EQ(probe(7, pc), 4);
  EXPECT_EQ(probe(8, pa), 4);
  EXPECT_TRUE(m.CheckInvariants().ok());
}

TEST(KvPrefixCacheTest, SharedBlocksAreRefcountedAndStayChargedToFirstOwner) {
  KvBlockManager m(16, kBlock);
  const std::vector<int32_t> prompt = Tokens(8, 0);
  RunPrompt(m, 1, "a", "g", prompt);
  EXPECT_EQ(m.TenantUsedBlocks("a"), 2u);
  SeqAlloc b = RunPrompt(m, 2, "b", "g", Concat(prompt, {1, 2}));
  EXPECT_EQ(b.cached_tokens, 8);
  EXPECT_EQ(m.TenantUsedBlocks("b"), 1u);  // only its own third block
  EXPECT_EQ(m.Stats().blocks_used, 3u);

  m.FreeSequence(1);  // still referenced by 2: stays used, charged to a
  EXPECT_EQ(m.Stats().blocks_used, 3u);
  EXPECT_EQ(m.Stats().blocks_cached, 0u);
  EXPECT_EQ(m.TenantUsedBlocks("a"), 2u);
  EXPECT_TRUE(m.CheckInvariants().ok());

  m.FreeSequence(2);  // the two named blocks are cached, the partial one free
  KvStats s = m.Stats();
  EXPECT_EQ(s.blocks_used, 0u);
  EXPECT_EQ(s.blocks_cached, 2u);
  EXPECT_EQ(s.blocks_free, 14u);
  EXPECT_EQ(m.TenantUsedBlocks("a"), 0u);
  EXPECT_TRUE(m.CheckInvariants().ok());

  // Reviving an unreferenced cached block charges the new user.
  EXPECT_EQ(RunPrompt(m, 3, "b", "g", Concat(prompt, {1})).cached_tokens, 8);
  EXPECT_EQ(m.TenantUsedBlocks("b"), 3u);
}

TEST(KvPrefixCacheTest, EqualContentCommittedTwiceIsCachedOnce) {
  KvBlockManager m(16, kBlock);
  const std::vector<int32_t> prompt = Tokens(8, 0);
  // Both start before either committed, so both compute the blocks.
  ASSERT_TRUE(m.StartSequence(1, "a", "s", prompt).ok());
  ASSERT_TRUE(m.StartSequence(2, "a", "s", prompt).ok());
  ASSERT_TRUE(m.EnsureCapacity(1, 8).ok());
  ASSERT_TRUE(m.EnsureCapacity(2, 10).ok());
  m.CommitFullBlocks(1, prompt);
  m.CommitFullBlocks(2, Concat(prompt, {1, 2}));
  m.FreeSequence(1);
  m.FreeSequence(2);
  EXPECT_TRUE(m.CheckInvariants().ok());
  EXPECT_EQ(m.Stats().blocks_cached, 2u);
  EXPECT_EQ(m.Stats().blocks_free, 14u);
}

TEST(KvPrefixCacheTest, ErrorsAndUnknownSequences) {
  KvBlockManager m(4, kBlock);
  EXPECT_EQ(m.StartSequence(1, "a", "s", {}).status().code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(m.StartSequence(1, "a", "s", Tokens(3, 0)).ok());
  EXPECT_EQ(m.StartSequence(1, "a", "s", Tokens(3, 0)).status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(m.EnsureCapacity(9, 4).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(m.EnsureCapacity(1, 100).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(m.BlockTable(1).empty());
  EXPECT_TRUE(m.BlockTable(9).empty());
  m.FreeSequence(9);
  m.CommitFullBlocks(9, Tokens(8, 0));
  EXPECT_TRUE(m.CheckInvariants().ok());
}

}  // namespace
}  // namespace tokenmill::kv
