// Tenant quotas and the preemption choice of KvBlockManager.
#include <vector>

#include "gtest/gtest.h"
#include "runtime/kv/kv_block_manager.h"
#include "tests/kv/kv_test_util.h"

namespace tokenmill::kv {
namespace {

using testing::kBlock;

// Starts a sequence of `tenant` holding `blocks` fresh blocks.
absl::Status Hold(KvBlockManager& m, uint64_t id, const std::string& tenant, int blocks) {
  std::vector<int32_t> prompt(1, static_cast<int32_t>(id));
  absl::StatusOr<SeqAlloc> a = m.StartSequence(id, tenant, tenant, prompt);
  if (!a.ok()) return a.status();
  return m.EnsureCapacity(id, static_cast<int64_t>(blocks) * kBlock);
}

TEST(KvQuotaTest, TenantAtItsMaxCannotAllocate) {
  KvBlockManager m(10, kBlock);
  ASSERT_TRUE(m.SetTenantQuota("a", 0, 0.3).ok());
  ASSERT_TRUE(Hold(m, 1, "a", 3).ok());
  absl::Status s = m.EnsureCapacity(1, 3 * kBlock + 1);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_EQ(m.BlockTable(1).size(), 3u);  // all or nothing
  EXPECT_EQ(Hold(m, 2, "a", 1).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(m.TenantUsedBlocks("a"), 3u);
  EXPECT_TRUE(Hold(m, 3, "b", 7).ok());  // others are not affected
  EXPECT_TRUE(m.CheckInvariants().ok());
}

TEST(KvQuotaTest, CannotTakeAnotherTenantsUnusedReservation) {
  KvBlockManager m(10, kBlock);
  ASSERT_TRUE(m.SetTenantQuota("b", 4, 1.0).ok());
  EXPECT_EQ(Hold(m, 1, "a", 7).code(), absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE(Hold(m, 2, "a", 6).ok());
  // b still gets its reservation even though a holds everything else.
  ASSERT_TRUE(Hold(m, 3, "b", 2).ok());
  EXPECT_EQ(m.EnsureCapacity(2, 7 * kBlock).code(), absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE(m.EnsureCapacity(3, 4 * kBlock).ok());
  EXPECT_EQ(m.Stats().blocks_free, 0u);
  EXPECT_TRUE(m.CheckInvariants().ok());
}

TEST(KvQuotaTest, CachedBlocksCountAsAvailable) {
  KvBlockManager m(4, kBlock);
  std::vector<int32_t> prompt = {1, 2, 3, 4, 5, 6, 7, 8};
  ASSERT_TRUE(m.StartSequence(1, "a", "a", prompt).ok());
  ASSERT_TRUE(m.EnsureCapacity(1, 8).ok());
  m.CommitFullBlocks(1, prompt);
  m.FreeSequence(1);
  EXPECT_EQ(m.Stats().blocks_cached, 2u);
  EXPECT_TRUE(Hold(m, 2, "b", 4).ok());
  EXPECT_EQ(m.Stats().evictions, 2u);
  EXPECT_TRUE(m.CheckInvariants().ok());
}

TEST(KvQuotaTest, RejectsBadQuotas) {
  KvBlockManager m(10, kBlock);
  EXPECT_EQ(m.SetTenantQuota("a", 0, 0.0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(m.SetTenantQuota("a", 0, 1.5).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(m.SetTenantQuota("a", 11, 1.0).code(), absl::StatusCode::kInvalidArgument);
}

TEST(KvQuotaTest, PreemptionVictimIsFurthestOverAndNeverInsideReservation) {
  KvBlockManager m(20, kBlock);
  ASSERT_TRUE(m.SetTenantQuota("a", 2, 1.0).ok());
  ASSERT_TRUE(m.SetTenantQuota("b", 4, 1.0).ok());
  ASSERT_TRUE(Hold(m, 1, "b", 4).ok());  // exactly its reservation
  EXPECT_EQ(m.PreemptionVictim("a"), std::nullopt);

  ASSERT_TRUE(Hold(m, 2, "a", 3).ok());  // a: 1 over
  ASSERT_TRUE(Hold(m, 3, "c", 2).ok());  // c: 2 over
  EXPECT_EQ(m.PreemptionVictim("a"), 3u);
  ASSERT_TRUE(Hold(m, 4, "a", 2).ok());  // a: 3 over; 4 is its newest
  EXPECT_EQ(m.PreemptionVictim("b"), 4u);
  // The needing tenant competes too: a is furthest over, so it loses its own.
  EXPECT_EQ(m.PreemptionVictim("a"), 4u);

  m.FreeSequence(4);
  m.FreeSequence(3);
  m.FreeSequence(2);
  // Only b is left, inside its reservation.
  EXPECT_EQ(m.PreemptionVictim("c"), std::nullopt);
}

TEST(KvQuotaTest, PreemptionTieGoesToNewestSequence) {
  KvBlockManager m(20, kBlock);
  ASSERT_TRUE(Hold(m, 1, "a", 2).ok());
  ASSERT_TRUE(Hold(m, 2, "b", 2).ok());
  ASSERT_TRUE(Hold(m, 3, "a", 0).ok());  // newest, but holds no block
  EXPECT_EQ(m.PreemptionVictim("c"), 2u);
}

}  // namespace
}  // namespace tokenmill::kv
