// KvBlockManager on pages (an executor on a KvArena): blocks present only
// while their page is, pages given back only when nothing needs them, the
// quota base.
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/kv/kv_block_manager.h"
#include "tests/kv/kv_test_util.h"

namespace tokenmill::kv {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

using testing::kBlock;
using testing::kPerPage;
using testing::Tokens;

// Starts a sequence of `tenant` with `prompt` and covers it with blocks.
absl::Status Start(KvBlockManager& m, uint64_t id, const std::string& tenant,
                   const std::vector<int32_t>& prompt) {
  absl::StatusOr<SeqAlloc> a = m.StartSequence(id, tenant, tenant, prompt);
  if (!a.ok()) return a.status();
  return m.EnsureCapacity(id, static_cast<int64_t>(prompt.size()));
}

TEST(KvPagesTest, PagedManagerStartsWithNoBlocks) {
  std::unique_ptr<KvBlockManager> m = KvBlockManager::Paged(10, kBlock, kPerPage);
  EXPECT_EQ(m->num_blocks(), 12u);  // whole pages
  EXPECT_EQ(m->blocks_per_page(), kPerPage);
  EXPECT_EQ(m->present_blocks(), 0u);
  KvStats s = m->Stats();
  EXPECT_EQ(s.blocks_total, 0u);
  EXPECT_EQ(s.pages, 0u);
  EXPECT_EQ(Start(*m, 1, "a", Tokens(3, 1)).code(), absl::StatusCode::kResourceExhausted);

  ASSERT_TRUE(m->AddPage(1).ok());
  EXPECT_TRUE(m->page_present(1));
  EXPECT_FALSE(m->page_present(0));
  s = m->Stats();
  EXPECT_EQ(s.blocks_total, kPerPage);
  EXPECT_EQ(s.blocks_free, kPerPage);
  EXPECT_EQ(s.pages, 1u);
  ASSERT_TRUE(m->EnsureCapacity(1, 9).ok());
  EXPECT_THAT(m->BlockTable(1), ElementsAre(4u, 5u, 6u));  // slot 1's blocks, lowest first
  EXPECT_TRUE(m->CheckInvariants().ok()) << m->CheckInvariants();
}

TEST(KvPagesTest, AddPageChecksTheSlot) {
  std::unique_ptr<KvBlockManager> m = KvBlockManager::Paged(12, kBlock, kPerPage);
  EXPECT_EQ(m->AddPage(3).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(m->AddPage(2).ok());
  EXPECT_EQ(m->AddPage(2).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(m->RemovePage(0, true));  // absent
  EXPECT_FALSE(m->RemovePage(7, true));  // out of range

  KvBlockManager whole(12, kBlock);
  EXPECT_EQ(whole.blocks_per_page(), 0u);
  EXPECT_EQ(whole.AddPage(0).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(whole.RemovePage(0, true));
  EXPECT_THAT(whole.ReleasablePages(true), IsEmpty());
  EXPECT_EQ(whole.Stats().blocks_total, 12u);
  EXPECT_EQ(whole.Stats().pages, 0u);
}

TEST(KvPagesTest, LowestFirstAllocationLeavesHighPagesReleasable) {
  std::unique_ptr<KvBlockManager> m = KvBlockManager::Paged(16, kBlock, kPerPage);
  for (uint32_t slot : {0u, 1u, 2u}) ASSERT_TRUE(m->AddPage(slot).ok());
  ASSERT_TRUE(Start(*m, 1, "a", Tokens(10, 1)).ok());  // 3 blocks
  ASSERT_TRUE(Start(*m, 2, "a", Tokens(7, 50)).ok());  // 2 blocks
  EXPECT_THAT(m->BlockTable(1), ElementsAre(0u, 1u, 2u));
  EXPECT_THAT(m->BlockTable(2), ElementsAre(3u, 4u));
  EXPECT_THAT(m->ReleasablePages(false), ElementsAre(2u));
  EXPECT_FALSE(m->RemovePage(0, true));  // used
  EXPECT_FALSE(m->RemovePage(1, true));  // block 4 is used
  EXPECT_TRUE(m->CheckInvariants().ok());

  ASSERT_TRUE(m->RemovePage(2, false));  // free blocks only
  KvStats s = m->Stats();
  EXPECT_EQ(s.pages, 2u);
  EXPECT_EQ(s.blocks_total, 8u);
  EXPECT_EQ(s.blocks_used, 5u);
  EXPECT_EQ(s.blocks_free, 3u);
  EXPECT_TRUE(m->CheckInvariants().ok()) << m->CheckInvariants();

  // Blocks of a removed page are never handed out again until it is back.
  ASSERT_TRUE(Start(*m, 3, "a", Tokens(12, 90)).ok());
  for (uint32_t b : m->BlockTable(3)) EXPECT_LT(b, 8u);
  EXPECT_EQ(Start(*m, 4, "a", Tokens(1, 200)).code(), absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE(m->AddPage(2).ok());
  ASSERT_TRUE(m->EnsureCapacity(4, 1).ok());
  EXPECT_THAT(m->BlockTable(4), ElementsAre(8u));
  EXPECT_TRUE(m->CheckInvariants().ok()) << m->CheckInvariants();
}

TEST(KvPagesTest, CachedBlocksHoldAPageUnlessEvicted) {
  std::unique_ptr<KvBlockManager> m = KvBlockManager::Paged(8, kBlock, kPerPage);
  ASSERT_TRUE(m->AddPage(0).ok());
  ASSERT_TRUE(m->AddPage(1).ok());
  const std::vector<int32_t> prompt = Tokens(9, 1);  // 2 full blocks + 1 token
  ASSERT_TRUE(Start(*m, 1, "a", prompt).ok());
  m->CommitFullBlocks(1, prompt);
  m->FreeSequence(1);
  EXPECT_EQ(m->Stats().blocks_cached, 2u);
  EXPECT_THAT(m->ReleasablePages(false), ElementsAre(1u));
  EXPECT_THAT(m->ReleasablePages(true), ElementsAre(0u, 1u));
  EXPECT_FALSE(m->RemovePage(0, false));
  EXPECT_EQ(m->Stats().blocks_cached, 2u);  // refused: nothing changed

  // Still a hit before the page goes, a miss after.
  ASSERT_TRUE(m->StartSequence(2, "a", "a", prompt).ok());
  EXPECT_THAT(m->BlockTable(2), ElementsAre(0u, 1u));
  m->FreeSequence(2);
  ASSERT_TRUE(m->RemovePage(0, true));
  KvStats s = m->Stats();
  EXPECT_EQ(s.blocks_cached, 0u);
  EXPECT_EQ(s.blocks_total, 4u);
  EXPECT_EQ(s.evictions, 0u);  // dropped with the page, not reused
  absl::StatusOr<SeqAlloc> miss = m->StartSequence(3, "a", "a", prompt);
  ASSERT_TRUE(miss.ok());
  EXPECT_EQ(miss->cached_tokens, 0);
  EXPECT_TRUE(m->CheckInvariants().ok()) << m->CheckInvariants();
}

TEST(KvPagesTest, QuotaFractionsApplyToTheQuotaBase) {
  std::unique_ptr<KvBlockManager> m = KvBlockManager::Paged(40, kBlock, kPerPage);
  for (uint32_t slot = 0; slot < 10; ++slot) ASSERT_TRUE(m->AddPage(slot).ok());
  EXPECT_EQ(m->quota_base(), 40u);
  ASSERT_TRUE(m->SetTenantQuota("a", 0, 0.5).ok());
  ASSERT_EQ(m->TenantUsage().size(), 1u);
  EXPECT_EQ(m->TenantUsage()[0].max_blocks, 20u);

  m->SetQuotaBase(10);
  EXPECT_EQ(m->TenantUsage()[0].max_blocks, 5u);
  ASSERT_TRUE(m->StartSequence(7, "b", "b", Tokens(1, 1)).ok());  // new tenant: cap 1.0
  EXPECT_EQ(m->TenantUsage()[1].max_blocks, 10u);
  EXPECT_EQ(Start(*m, 1, "a", Tokens(6 * kBlock, 1)).code(), absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE(m->EnsureCapacity(1, 5 * kBlock).ok());
  EXPECT_EQ(m->TenantUsedBlocks("a"), 5u);

  m->SetQuotaBase(30);  // raised again: a may grow to 15
  ASSERT_TRUE(m->EnsureCapacity(1, 15 * kBlock).ok());
  EXPECT_EQ(m->EnsureCapacity(1, 16 * kBlock).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(m->CheckInvariants().ok()) << m->CheckInvariants();
}

}  // namespace
}  // namespace tokenmill::kv
