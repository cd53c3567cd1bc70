// The scheduler against KV limits: tenant caps and reservations, preemption
// by recompute, grow() on exhaustion, and a randomized run with every check
// of the simulated engine after each step.
#include <algorithm>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/sched/scheduler.h"
#include "tests/sched/sched_sim.h"

namespace tokenmill::sched::testing {
namespace {

// (used - reserved) of every tenant, before a step.
std::vector<std::pair<std::string, int64_t>> Overage(const kv::KvBlockManager& kv) {
  std::vector<std::pair<std::string, int64_t>> out;
  for (const kv::TenantKvUsage& u : kv.TenantUsage()) {
    out.emplace_back(u.tenant, static_cast<int64_t>(u.used_blocks) - u.reserved_blocks);
  }
  return out;
}

TEST(SchedulerKvTest, CappedTenantCannotTakeAnotherTenantsReservation) {
  // 20 blocks; a may hold 80% but b reserves 8, so a gets at most 12.
  SchedSim sim(20, kBlock, Options(256, 16));
  ASSERT_TRUE(sim.sched().SetTenant("a", TenantShare{.kv_max_fraction = 0.8}).ok());
  ASSERT_TRUE(sim.sched().SetTenant("b", TenantShare{.kv_reserved_blocks = 8}).ok());
  for (uint64_t id = 1; id <= 10; ++id) ASSERT_TRUE(sim.Add(id, "a", MakePrompt(7, id), 9).ok());
  uint32_t a_peak = 0;
  for (int i = 0; i < 6; ++i) {
    sim.Step();
    a_peak = std::max(a_peak, sim.kv().TenantUsedBlocks("a"));
  }
  EXPECT_EQ(a_peak, 12u);
  EXPECT_GT(sim.sched().Service("a").waiting, 0u);  // a wants more than it may have

  // b arrives later and gets its reserved blocks at once: prompt of 30
  // tokens + 2 output = 8 blocks, admitted in the next step without waiting
  // for a to finish anything.
  ASSERT_TRUE(sim.Add(100, "b", MakePrompt(30, 100), 2).ok());
  const StepPlan& plan = sim.PlanAndCheck();
  bool b_admitted = false;
  for (const PlannedSequence& ps : plan.seqs) b_admitted |= ps.seq_id == 100;
  EXPECT_TRUE(b_admitted);
  EXPECT_GE(sim.kv().TenantUsedBlocks("b"), 8u);
  EXPECT_LE(sim.kv().TenantUsedBlocks("a"), 12u);
  sim.Commit(plan);
  sim.RunUntilIdle(500);
  EXPECT_EQ(sim.finished().size(), 11u);
}

TEST(SchedulerKvTest, TenantAtItsMaxFractionWaits) {
  SchedSim sim(20, kBlock, Options(256, 16));
  ASSERT_TRUE(sim.sched().SetTenant("a", TenantShare{.kv_max_fraction = 0.5}).ok());
  for (uint64_t id = 1; id <= 6; ++id) ASSERT_TRUE(sim.Add(id, "a", MakePrompt(7, id), 9).ok());
  ASSERT_TRUE(sim.Add(50, "b", MakePrompt(7, 50), 9).ok());
  while (sim.sched().HasWork()) {
    sim.Step();
    EXPECT_LE(sim.kv().TenantUsedBlocks("a"), 10u);
  }
  EXPECT_EQ(sim.finished().size(), 7u);
}

TEST(SchedulerKvTest, PreemptsTenantFurthestOverItsReservation) {
  // 16 blocks; b reserves 8 and stays inside it; a's two sequences (6
  // blocks each at the end) cannot both fit in the 8 left, so a preempts its
  // own newest, never b's.
  SchedSim sim(16, kBlock, Options(256, 8));
  ASSERT_TRUE(sim.sched().SetTenant("b", TenantShare{.kv_reserved_blocks = 8}).ok());
  ASSERT_TRUE(sim.Add(1, "a", MakePrompt(4, 1), 20).ok());
  ASSERT_TRUE(sim.Add(2, "a", MakePrompt(4, 2), 20).ok());
  ASSERT_TRUE(sim.Add(3, "b", MakePrompt(4, 3), 28).ok());
  int preempting_steps = 0;
  while (sim.sched().HasWork()) {
    const auto before = Overage(sim.kv());
    const StepPlan& plan = sim.PlanAndCheck();
    if (!plan.preempted.empty()) {
      ++preempting_steps;
      // The first victim belongs to the tenant furthest over, which is over.
      int64_t worst = 0;
      for (const auto& [t, over] : before) worst = std::max(worst, over);
      const std::string victim_tenant = plan.preempted[0] == 3 ? "b" : "a";
      for (const auto& [t, over] : before) {
        if (t == victim_tenant) {
          EXPECT_GT(over, 0);
          EXPECT_EQ(over, worst);
        }
      }
    }
    for (uint64_t id : plan.preempted) EXPECT_NE(id, 3u) << "b is inside its reservation";
    sim.Commit(plan);
  }
  EXPECT_GT(preempting_steps, 0);
  EXPECT_GE(sim.preemptions().count(2), 1u);  // the newest of a
  EXPECT_EQ(sim.preemptions().count(1), 0u);
  EXPECT_EQ(sim.preemptions().count(3), 0u);
  ASSERT_EQ(sim.finished().size(), 3u);
  // The preempted sequence was recomputed from prompt + generated tokens and
  // went on to produce exactly the tokens it would have without preemption.
  EXPECT_EQ(sim.finished().at(2), sim.ExpectedFinal(2, MakePrompt(4, 2)));
  EXPECT_EQ(sim.finished().at(1), sim.ExpectedFinal(1, MakePrompt(4, 1)));
}

TEST(SchedulerKvTest, RecomputeChargesNoPromptTwice) {
  SchedSim sim(8, kBlock, Options(256, 8));
  // Three sequences of 4-5 blocks each at the end in 8 blocks: some are
  // preempted and recomputed, yet every prompt token is charged once.
  ASSERT_TRUE(sim.Add(1, "a", MakePrompt(6, 1), 10).ok());
  ASSERT_TRUE(sim.Add(2, "a", MakePrompt(6, 2), 14).ok());
  ASSERT_TRUE(sim.Add(3, "a", MakePrompt(6, 3), 10).ok());
  bool saw_recompute = false;
  while (sim.sched().HasWork()) {
    const StepPlan& plan = sim.PlanAndCheck();
    for (const PlannedSequence& ps : plan.seqs) {
      if (ps.recompute) {
        saw_recompute = true;
        EXPECT_TRUE(ps.prefill);
      }
    }
    sim.Commit(plan);
  }
  EXPECT_TRUE(saw_recompute);
  EXPECT_FALSE(sim.preemptions().empty());
  const TenantService a = sim.sched().Service("a");
  EXPECT_EQ(a.prompt_tokens, 18u);
  EXPECT_EQ(a.generated_tokens, 34u);
  EXPECT_DOUBLE_EQ(a.weighted_tokens, 18 * 1.0 + 34 * 2.0);
  for (uint64_t id = 1; id <= 3; ++id) {
    EXPECT_EQ(sim.finished().at(id), sim.ExpectedFinal(id, MakePrompt(6, id))) << id;
  }
}

TEST(SchedulerKvTest, GrowAddsPagesBeforeAnyPreemption) {
  // A paged manager with one of four pages present; grow() brings the next.
  std::unique_ptr<kv::KvBlockManager> paged = kv::KvBlockManager::Paged(16, kBlock, 4);
  kv::KvBlockManager* kv = paged.get();
  ASSERT_TRUE(kv->AddPage(0).ok());
  uint32_t next_slot = 1;
  int grows = 0;
  SchedSim sim(std::move(paged), Options(256, 8), [&] {
    if (next_slot >= 4) return false;
    ++grows;
    return kv->AddPage(next_slot++).ok();
  });
  // Two sequences of 4 blocks each at the end: 8 blocks, two pages.
  ASSERT_TRUE(sim.Add(1, "a", MakePrompt(4, 1), 12).ok());
  ASSERT_TRUE(sim.Add(2, "a", MakePrompt(4, 2), 12).ok());
  sim.RunUntilIdle(100);
  EXPECT_EQ(grows, 1);
  EXPECT_EQ(kv->present_blocks(), 8u);
  EXPECT_TRUE(sim.preemptions().empty());
  EXPECT_EQ(sim.finished().size(), 2u);

  // Past the last page, preemption takes over.
  for (uint64_t id = 3; id <= 8; ++id) {
    ASSERT_TRUE(sim.Add(id, "a", MakePrompt(4, static_cast<int32_t>(id)), 12).ok());
  }
  sim.RunUntilIdle(500);
  EXPECT_EQ(kv->present_blocks(), 16u);
  EXPECT_FALSE(sim.preemptions().empty());
  EXPECT_EQ(sim.finished().size(), 8u);
}

TEST(SchedulerKvTest, CappedTenantDoesNotGrowTheArena) {
  std::unique_ptr<kv::KvBlockManager> paged = kv::KvBlockManager::Paged(16, kBlock, 4);
  kv::KvBlockManager* kv = paged.get();
  ASSERT_TRUE(kv->AddPage(0).ok());
  uint32_t next_slot = 1;
  int grows = 0;
  SchedSim sim(std::move(paged), Options(256, 8), [&] {
    if (next_slot >= 4) return false;
    ++grows;
    return kv->AddPage(next_slot++).ok();
  });
  // a may hold 4 blocks (a quarter of the 16-block id space): one page.
  ASSERT_TRUE(sim.sched().SetTenant("a", TenantShare{.kv_max_fraction = 0.25}).ok());
  for (uint64_t id = 1; id <= 3; ++id) {
    ASSERT_TRUE(sim.Add(id, "a", MakePrompt(8, static_cast<int32_t>(id)), 4).ok());
  }
  sim.RunUntilIdle(200);
  EXPECT_EQ(grows, 0);
  EXPECT_EQ(kv->present_blocks(), 4u);
  EXPECT_EQ(sim.finished().size(), 3u);
}

class SchedulerRandomTest : public ::testing::TestWithParam<uint32_t> {};

TEST_P(SchedulerRandomTest, KeepsEveryInvariant) {
  // Small KV, several tenants with quotas, arrivals, cancels and chunked
  // prefill: the simulated engine checks every step.
  SchedSim sim(40, kBlock, Options(24, 6));
  ASSERT_TRUE(sim.sched().SetTenant("a", TenantShare{.weight = 2.0, .max_running = 3}).ok());
  ASSERT_TRUE(sim.sched().SetTenant("b", TenantShare{.kv_reserved_blocks = 6}).ok());
  ASSERT_TRUE(sim.sched().SetTenant("c", TenantShare{.kv_max_fraction = 0.5}).ok());
  const std::vector<std::string> tenants = {"a", "b", "c", "d"};
  std::mt19937 rng(GetParam());
  uint64_t next_id = 1;
  std::vector<uint64_t> added;
  int removed = 0;
  for (int step = 0; step < 600; ++step) {
    if (step < 450 && rng() % 2 == 0) {
      const std::string& t = tenants[rng() % tenants.size()];
      const int32_t prompt = 1 + static_cast<int32_t>(rng() % 30);
      const int32_t out = 1 + static_cast<int32_t>(rng() % 40);
      // Share prompts now and then so the prefix cache is exercised.
      const int32_t seed = rng() % 4 == 0 ? 1 : static_cast<int32_t>(next_id);
      ASSERT_TRUE(sim.Add(next_id, t, MakePrompt(prompt, seed), out).ok());
      added.push_back(next_id++);
    }
    if (rng() % 25 == 0 && !added.empty()) {
      const uint64_t victim = added[rng() % added.size()];
      if (!sim.sched().Tokens(victim).empty()) ++removed;
      sim.sched().Remove(victim);
      ASSERT_TRUE(sim.kv().CheckInvariants().ok());
    }
    sim.Step();
  }
  sim.RunUntilIdle(5000);
  EXPECT_FALSE(sim.sched().HasWork());
  EXPECT_EQ(sim.finished().size() + removed, added.size());
  for (const auto& [id, tokens] : sim.finished()) {
    const int32_t generated = static_cast<int32_t>(tokens.size());
    ASSERT_GT(generated, 0);
  }
  EXPECT_EQ(sim.kv().Stats().blocks_used, 0u);
  EXPECT_TRUE(sim.kv().CheckInvariants().ok());
  EXPECT_GT(sim.kv().Stats().prefix_hit_blocks, 0u);
  EXPECT_GT(sim.preemptions().size(), 0u);
  std::printf(
      "randomized: %zu sequences, %zu finished, %d removed, %zu preempted, %lu hit blocks\n",
      added.size(), sim.finished().size(), removed, sim.preemptions().size(),
      static_cast<unsigned long>(sim.kv().Stats().prefix_hit_blocks));
}

INSTANTIATE_TEST_SUITE_P(Seeds, SchedulerRandomTest, ::testing::Values(7u, 8u, 9u, 10u));

}  // namespace
}  // namespace tokenmill::sched::testing
