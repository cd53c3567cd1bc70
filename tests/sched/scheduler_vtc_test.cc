// Virtual token counter fair share (Sheng et al., OSDI 2024): weighted
// service of backlogged tenants stays within the VTC bound, and a tenant that
// arrives late is lifted rather than served in a burst.
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/sched/scheduler.h"
#include "tests/sched/sched_sim.h"

namespace tokenmill::sched::testing {
namespace {

constexpr int32_t kMinPrompt = 16;
constexpr int32_t kMaxPrompt = 64;
constexpr int32_t kMinOutput = 8;
constexpr int32_t kMaxOutput = 32;

SchedulerOptions VtcOptions() {
  SchedulerOptions o;
  o.max_batch_tokens = 64;
  o.max_seqs = 8;
  o.context = 256;
  o.vtc_input_weight = 1.0;
  o.vtc_output_weight = 2.0;
  return o;
}

// The paper's bound on |W_a/w_a - W_b/w_b| for backlogged tenants:
// 2 * max(w_in * L_input, w_out * M), with M the output tokens that work
// already running may still produce (max_seqs sequences of at most
// kMaxOutput tokens: the counter of a tenant whose turn has passed can grow
// by that much), divided by the smallest weight for normalized service.
double VtcBound(const SchedulerOptions& o, double min_weight) {
  const double m = static_cast<double>(o.max_seqs) * kMaxOutput;
  return 2.0 * std::max(o.vtc_input_weight * kMaxPrompt, o.vtc_output_weight * m) / min_weight;
}

void AddRequests(SchedSim& sim, const std::string& tenant, uint64_t first_id, int count,
                 std::mt19937& rng) {
  std::uniform_int_distribution<int32_t> prompt_len(kMinPrompt, kMaxPrompt);
  std::uniform_int_distribution<int32_t> output_len(kMinOutput, kMaxOutput);
  for (int i = 0; i < count; ++i) {
    const uint64_t id = first_id + static_cast<uint64_t>(i);
    ASSERT_TRUE(
        sim.Add(id, tenant, MakePrompt(prompt_len(rng), static_cast<int32_t>(id)), output_len(rng))
            .ok());
  }
}

TEST(SchedulerVtcTest, WeightedTenantsShareWithinBound) {
  const SchedulerOptions options = VtcOptions();
  SchedSim sim(512, kBlock, options);
  ASSERT_TRUE(sim.sched().SetTenant("a", TenantShare{.weight = 2.0}).ok());
  ASSERT_TRUE(sim.sched().SetTenant("b", TenantShare{.weight = 1.0}).ok());
  std::mt19937 rng(1234);
  AddRequests(sim, "a", 1, 1200, rng);
  AddRequests(sim, "b", 100000, 1200, rng);

  const double bound = VtcBound(options, 1.0);
  double max_gap = 0.0;
  int steps = 0;
  for (; steps < 2500; ++steps) {
    sim.Step();
    const TenantService a = sim.sched().Service("a");
    const TenantService b = sim.sched().Service("b");
    ASSERT_TRUE(a.waiting > 0 && b.waiting > 0) << "the test must keep both backlogged";
    const double gap = std::fabs(a.weighted_tokens / 2.0 - b.weighted_tokens / 1.0);
    max_gap = std::max(max_gap, gap);
    ASSERT_LE(gap, bound) << "step " << steps;
  }
  const TenantService a = sim.sched().Service("a");
  const TenantService b = sim.sched().Service("b");
  const double ratio = (a.weighted_tokens / 2.0) / (b.weighted_tokens / 1.0);
  EXPECT_NEAR(ratio, 1.0, 0.10);
  EXPECT_GT(b.generated_tokens, 1000u);  // enough work for the ratio to mean something
  EXPECT_EQ(sim.preemptions().size(), 0u);
  RecordProperty("max_normalized_gap", std::to_string(max_gap));
  std::printf(
      "VTC 2:1 after %d steps: a %.0f b %.0f weighted tokens, ratio %.3f, max gap %.1f "
      "(bound %.0f)\n",
      steps, a.weighted_tokens, b.weighted_tokens, ratio, max_gap, bound);
}

TEST(SchedulerVtcTest, LateTenantIsLiftedNotBursted) {
  const SchedulerOptions options = VtcOptions();
  SchedSim sim(512, kBlock, options);
  std::mt19937 rng(99);
  AddRequests(sim, "a", 1, 400, rng);
  AddRequests(sim, "b", 100000, 400, rng);
  for (int i = 0; i < 400; ++i) sim.Step();

  const TenantService a0 = sim.sched().Service("a");
  const TenantService b0 = sim.sched().Service("b");
  ASSERT_GT(std::min(a0.counter, b0.counter), 1000.0);
  AddRequests(sim, "c", 200000, 400, rng);
  const TenantService c0 = sim.sched().Service("c");
  // Lifted to the lowest counter of the backlogged tenants.
  EXPECT_DOUBLE_EQ(c0.counter, std::min(a0.counter, b0.counter));
  EXPECT_EQ(c0.weighted_tokens, 0.0);

  const double bound = VtcBound(options, 1.0);
  for (int i = 0; i < 400; ++i) {
    sim.Step();
    const double ca = sim.sched().Service("a").counter;
    const double cb = sim.sched().Service("b").counter;
    const double cc = sim.sched().Service("c").counter;
    ASSERT_LE(std::fabs(cc - ca), bound) << "step " << i;
    ASSERT_LE(std::fabs(cc - cb), bound) << "step " << i;
  }
  // Everyone was served in the window; c did not take it all.
  const double da = sim.sched().Service("a").weighted_tokens - a0.weighted_tokens;
  const double db = sim.sched().Service("b").weighted_tokens - b0.weighted_tokens;
  const double dc = sim.sched().Service("c").weighted_tokens;
  EXPECT_GT(dc, 0.0);
  EXPECT_NEAR(dc / (da + db + dc), 1.0 / 3.0, 0.1);
}

TEST(SchedulerVtcTest, IdleTenantKeepsItsCounterWhenAlone) {
  SchedSim sim(128, kBlock, VtcOptions());
  ASSERT_TRUE(sim.Add(1, "a", MakePrompt(8, 1), 2).ok());
  sim.RunUntilIdle(10);
  const double after = sim.sched().Service("a").counter;
  EXPECT_DOUBLE_EQ(after, 8.0 * 1.0 + 2 * 2.0);  // 8 prompt tokens, 2 generated
  // Nobody else is backlogged: b starts at 0, a keeps its counter.
  ASSERT_TRUE(sim.Add(2, "b", MakePrompt(8, 2), 2).ok());
  EXPECT_EQ(sim.sched().Service("b").counter, 0.0);
  ASSERT_TRUE(sim.Add(3, "a", MakePrompt(8, 3), 2).ok());
  EXPECT_DOUBLE_EQ(sim.sched().Service("a").counter, after);  // max(own, min) = own
  EXPECT_EQ(sim.sched().Tenants(), (std::vector<std::string>{"a", "b"}));
}

TEST(SchedulerVtcTest, LowestCounterIsAdmittedFirst) {
  SchedulerOptions o = VtcOptions();
  o.max_seqs = 1;
  SchedSim sim(128, kBlock, o);
  // a is served once, so b (counter 0 after a's charge) goes next even though
  // a's request is older.
  ASSERT_TRUE(sim.Add(1, "a", MakePrompt(8, 1), 1).ok());
  ASSERT_TRUE(sim.Add(2, "a", MakePrompt(8, 2), 1).ok());
  ASSERT_TRUE(sim.Add(3, "b", MakePrompt(8, 3), 1).ok());
  const StepPlan& first = sim.PlanAndCheck();
  ASSERT_EQ(first.seqs.size(), 1u);
  EXPECT_EQ(first.seqs[0].seq_id, 1u);  // tie at 0: first seen
  sim.Commit(first);
  const StepPlan& second = sim.PlanAndCheck();
  ASSERT_EQ(second.seqs.size(), 1u);
  EXPECT_EQ(second.seqs[0].seq_id, 3u);
  sim.Commit(second);
  sim.RunUntilIdle(10);
}

}  // namespace
}  // namespace tokenmill::sched::testing
