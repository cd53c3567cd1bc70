// Randomized operations on KvBlockManager with a check after every one: the
// manager's own invariants, quotas, and that every cached block served holds
// exactly the prefix (and salt) the new sequence asked for. The paged runs
// also add and remove pages (as an instance on a KvArena does), and a removed
// page's content is lost.
#include <algorithm>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/kv/kv_block_manager.h"
#include "tests/kv/kv_test_util.h"

namespace tokenmill::kv {
namespace {

using testing::kBlock;
using testing::kPerPage;
constexpr uint32_t kBlocks = 48;

// Cuts the default hash to 3 bits so that collisions are everyday events.
uint64_t WeakHash(uint64_t parent, std::span<const int32_t> tokens, std::string_view salt) {
  return DefaultPrefixHash(parent, tokens, salt) & 7;
}

struct ShadowSeq {
  std::string tenant;
  std::string salt;
  std::vector<int32_t> tokens;
  bool covered = false;  // its table covers all tokens (they are "written")
};

// What the KV of a block holds: the salt and the whole token prefix up to
// the block's end, as written by the sequence that computed it.
struct Content {
  std::string salt;
  std::vector<int32_t> prefix;
};

void RunRandom(PrefixHashFn hash, uint32_t seed, bool paged) {
  std::unique_ptr<KvBlockManager> owned =
      paged ? KvBlockManager::Paged(kBlocks, kBlock, kPerPage, hash)
            : std::make_unique<KvBlockManager>(kBlocks, kBlock, hash);
  KvBlockManager& m = *owned;
  if (paged) {
    for (uint32_t slot = 0; slot < kBlocks / kPerPage / 2; ++slot)
      ASSERT_TRUE(m.AddPage(slot).ok());
  }
  const std::vector<std::string> tenants = {"t0", "t1", "t2", "t3"};
  const std::map<std::string, std::string> salt = {{"t0", PrefixSalt("t0", "g")},
                                                   {"t1", PrefixSalt("t1", "g")},
                                                   {"t2", PrefixSalt("t2", "")},
                                                   {"t3", PrefixSalt("t3", "")}};
  ASSERT_TRUE(m.SetTenantQuota("t0", 6, 0.5).ok());
  ASSERT_TRUE(m.SetTenantQuota("t2", 4, 0.75).ok());
  ASSERT_TRUE(m.SetTenantQuota("t3", 0, 0.25).ok());

  std::mt19937 rng(seed);
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<uint32_t>(n)); };
  // A few shared prompt stems so that prefixes repeat.
  std::vector<std::vector<int32_t>> stems;
  for (int i = 0; i < 6; ++i) {
    std::vector<int32_t> s(4 + pick(12));
    for (int32_t& t : s) t = pick(3);
    stems.push_back(s);
  }
  std::map<uint64_t, ShadowSeq> seqs;
  std::vector<Content> content(kBlocks);
  uint64_t next_id = 1;
  uint64_t hits = 0;
  uint64_t pages_removed = 0;
  // Like an instance's grow callback: a page when the manager is short.
  auto ensure = [&](uint64_t id, int64_t tokens) {
    absl::Status s = m.EnsureCapacity(id, tokens);
    for (uint32_t slot = 0; paged && !s.ok() && slot < kBlocks / kPerPage; ++slot) {
      if (!m.page_present(slot) && pick(2) == 0) {
        EXPECT_TRUE(m.AddPage(slot).ok());
        s = m.EnsureCapacity(id, tokens);
      }
    }
    return s;
  };

  auto commit = [&](uint64_t id, ShadowSeq& s) {
    std::span<const uint32_t> table = m.BlockTable(id);
    const size_t full = s.tokens.size() / kBlock;
    for (size_t i = 0; i < full; ++i) {
      const uint32_t b = table[i];
      Content want{s.salt, {s.tokens.begin(), s.tokens.begin() + (i + 1) * kBlock}};
      // A block this sequence shares already holds this content; one it
      // owns alone gets written now.
      Content& c = content[b];
      if (c.salt != want.salt || c.prefix != want.prefix) c = want;
    }
    m.CommitFullBlocks(id, s.tokens);
  };

  for (int op = 0; op < 10000; ++op) {
    const int kind = pick(10);
    if (kind < 3 && seqs.size() < 12) {  // start
      ShadowSeq s;
      s.tenant = tenants[pick(4)];
      s.salt = salt.at(s.tenant);
      s.tokens = stems[pick(static_cast<int>(stems.size()))];
      for (int n = pick(10); n > 0; --n) s.tokens.push_back(pick(3));
      const uint64_t id = next_id++;
      absl::StatusOr<SeqAlloc> a = m.StartSequence(id, s.tenant, s.salt, s.tokens);
      ASSERT_TRUE(a.ok()) << a.status();
      ASSERT_LT(a->cached_tokens, static_cast<int32_t>(s.tokens.size()));
      ASSERT_EQ(a->cached_tokens, static_cast<int32_t>(a->block_table.size()) * kBlock);
      for (size_t i = 0; i < a->block_table.size(); ++i) {
        const Content& c = content[a->block_table[i]];
        ASSERT_EQ(c.salt, s.salt) << "op " << op;
        ASSERT_EQ(c.prefix,
                  std::vector<int32_t>(s.tokens.begin(), s.tokens.begin() + (i + 1) * kBlock))
            << "op " << op;
      }
      hits += a->block_table.size();
      s.covered = ensure(id, static_cast<int64_t>(s.tokens.size())).ok();
      if (s.covered) commit(id, s);
      seqs.emplace(id, std::move(s));
    } else if (kind < 7 && !seqs.empty()) {  // one step: cover, or decode a token
      auto it = std::next(seqs.begin(), pick(static_cast<int>(seqs.size())));
      ShadowSeq& s = it->second;
      if (s.covered) s.tokens.push_back(pick(3));
      if (ensure(it->first, static_cast<int64_t>(s.tokens.size())).ok()) {
        s.covered = true;
        commit(it->first, s);
      } else if (s.covered) {
        s.tokens.pop_back();
      }
    } else if (kind < 9 && !seqs.empty()) {  // finish
      auto it = std::next(seqs.begin(), pick(static_cast<int>(seqs.size())));
      m.FreeSequence(it->first);
      seqs.erase(it);
    } else if (paged && kind == 9 && pick(2) == 0) {  // give a page back
      const bool evict = pick(2) == 0;
      const std::vector<uint32_t> releasable = m.ReleasablePages(evict);
      const auto slot = static_cast<uint32_t>(pick(kBlocks / kPerPage));
      const bool listed = std::find(releasable.begin(), releasable.end(), slot) != releasable.end();
      const KvStats before = m.Stats();
      const bool removed = m.RemovePage(slot, evict);
      ASSERT_EQ(removed, listed) << "op " << op << " slot " << slot;
      if (removed) {
        ++pages_removed;
        ASSERT_EQ(m.Stats().blocks_total, before.blocks_total - kPerPage);
        ASSERT_FALSE(m.page_present(slot));
        // The arena drops the page's bytes.
        for (uint32_t b = slot * kPerPage; b < (slot + 1) * kPerPage; ++b) content[b] = Content{};
      } else {
        ASSERT_EQ(m.Stats().blocks_total, before.blocks_total);
        ASSERT_EQ(m.Stats().blocks_cached, before.blocks_cached);
      }
    } else {  // preempt
      const std::string& needing = tenants[pick(4)];
      std::optional<uint64_t> victim = m.PreemptionVictim(needing);
      if (victim) {
        ASSERT_TRUE(seqs.contains(*victim));
        const std::string& vt = seqs.at(*victim).tenant;
        int64_t victim_over = 0, max_over = 0;
        // Furthest over among tenants with a running sequence that holds
        // blocks (a tenant may be charged for shared blocks of others only).
        for (const TenantKvUsage& u : m.TenantUsage()) {
          bool running = false;
          for (const auto& [id, s] : seqs) {
            running |= s.tenant == u.tenant && !m.BlockTable(id).empty();
          }
          if (!running) continue;
          const int64_t over = int64_t{u.used_blocks} - int64_t{u.reserved_blocks};
          if (u.tenant == vt) victim_over = over;
          max_over = std::max(max_over, over);
        }
        ASSERT_GT(victim_over, 0) << "op " << op;
        ASSERT_EQ(victim_over, max_over) << "op " << op;
        m.FreeSequence(*victim);
        seqs.erase(*victim);
      }
    }

    absl::Status inv = m.CheckInvariants();
    ASSERT_TRUE(inv.ok()) << "op " << op << ": " << inv;
    const KvStats st = m.Stats();
    ASSERT_EQ(st.blocks_used + st.blocks_free + st.blocks_cached, st.blocks_total);
    ASSERT_EQ(st.blocks_total, paged ? st.pages * kPerPage : kBlocks);
    uint32_t charged = 0;
    for (const TenantKvUsage& u : m.TenantUsage()) {
      charged += u.used_blocks;
      ASSERT_LE(u.used_blocks, u.max_blocks) << u.tenant << " op " << op;
    }
    ASSERT_EQ(charged, st.blocks_used) << "op " << op;
    uint32_t in_tables = 0;
    for (const auto& [id, s] : seqs) in_tables += m.BlockTable(id).size();
    ASSERT_GE(in_tables, st.blocks_used);
  }
  EXPECT_GT(hits, 0u);  // the prefix cache was exercised
  EXPECT_GT(m.Stats().evictions, 0u);
  EXPECT_EQ(m.Stats().prefix_hit_blocks, hits);
  if (paged) {
    EXPECT_GT(pages_removed, 0u);
  }
}

TEST(KvRandomTest, InvariantsHoldOverTenThousandOperations) {
  RunRandom(&DefaultPrefixHash, 1, false);
}

TEST(KvRandomTest, InvariantsHoldWithConstantCollisions) { RunRandom(&WeakHash, 2, false); }

TEST(KvRandomTest, InvariantsHoldWhilePagesComeAndGo) { RunRandom(&DefaultPrefixHash, 3, true); }

TEST(KvRandomTest, PagesComeAndGoWithConstantCollisions) { RunRandom(&WeakHash, 4, true); }

}  // namespace
}  // namespace tokenmill::kv
