// Continuous batching: decode-first order, chunked prefill under the token and
// sequence budgets, logits flags, block tables, per-tenant max_running, the
// prefix cache, Remove and Add validation.
#include <map>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/sched/scheduler.h"
#include "tests/sched/sched_sim.h"

namespace tokenmill::sched::testing {
namespace {

TEST(SchedulerBatchingTest, ChunkedPrefillThenDecodesFirst) {
  SchedSim sim(64, kBlock, Options(10, 4));
  ASSERT_TRUE(sim.Add(1, "a", MakePrompt(25, 1), 3).ok());
  ASSERT_TRUE(sim.Add(2, "a", MakePrompt(3, 2), 3).ok());

  // Step 1, 2: seq 1 takes the whole budget in chunks of 10, no logits.
  for (int step = 0; step < 2; ++step) {
    const StepPlan& plan = sim.PlanAndCheck();
    ASSERT_EQ(plan.seqs.size(), 1u);
    EXPECT_EQ(plan.seqs[0].seq_id, 1u);
    EXPECT_TRUE(plan.seqs[0].prefill);
    EXPECT_FALSE(plan.seqs[0].samples);
    EXPECT_EQ(plan.batch.seqs[0].tokens.size(), 10u);
    EXPECT_EQ(plan.batch.seqs[0].start_pos, step * 10);
    EXPECT_EQ(plan.batch.seqs[0].logits, devices::LogitsWanted::kNone);
    EXPECT_EQ(plan.prefill_tokens, 10);
    sim.Commit(plan);
  }
  // Step 3: seq 1's last 5 prompt tokens sample; seq 2 fits in the rest.
  {
    const StepPlan& plan = sim.PlanAndCheck();
    ASSERT_EQ(plan.seqs.size(), 2u);
    EXPECT_EQ(plan.seqs[0].seq_id, 1u);
    EXPECT_EQ(plan.batch.seqs[0].tokens.size(), 5u);
    EXPECT_EQ(plan.batch.seqs[0].logits, devices::LogitsWanted::kLast);
    EXPECT_EQ(plan.seqs[1].seq_id, 2u);
    EXPECT_EQ(plan.batch.seqs[1].tokens.size(), 3u);
    EXPECT_TRUE(plan.seqs[1].samples);
    EXPECT_EQ(plan.batch.TokenCount(), 8u);
    sim.Commit(plan);
  }
  // Step 4: both decode, one token each at the next position.
  {
    const StepPlan& plan = sim.PlanAndCheck();
    ASSERT_EQ(plan.seqs.size(), 2u);
    EXPECT_EQ(plan.decode_tokens, 2);
    EXPECT_EQ(plan.prefill_tokens, 0);
    EXPECT_FALSE(plan.seqs[0].prefill);
    EXPECT_EQ(plan.batch.seqs[0].start_pos, 25);
    EXPECT_EQ(plan.batch.seqs[1].start_pos, 3);
    EXPECT_EQ(plan.batch.seqs[0].tokens[0], SampledToken(1, 25));
    sim.Commit(plan);
  }
  // A new long prompt: running decodes come first, the prefill gets the rest.
  ASSERT_TRUE(sim.Add(3, "a", MakePrompt(30, 3), 2).ok());
  {
    const StepPlan& plan = sim.PlanAndCheck();
    ASSERT_EQ(plan.seqs.size(), 3u);
    EXPECT_FALSE(plan.seqs[0].prefill);
    EXPECT_FALSE(plan.seqs[1].prefill);
    EXPECT_TRUE(plan.seqs[2].prefill);
    EXPECT_EQ(plan.batch.seqs[2].tokens.size(), 8u);
    EXPECT_EQ(plan.batch.TokenCount(), 10u);
    sim.Commit(plan);
  }
  sim.RunUntilIdle(100);
  EXPECT_FALSE(sim.sched().HasWork());
  ASSERT_EQ(sim.finished().size(), 3u);
  EXPECT_EQ(sim.finished().at(1), sim.ExpectedFinal(1, MakePrompt(25, 1)));
  EXPECT_EQ(sim.kv().Stats().blocks_used, 0u);
}

// A prompt-logits sequence (echo with logprobs): every prompt chunk asks for
// all its rows, it takes nothing from the prefix cache, and such chunks hold
// at most kMaxPromptLogitRows rows a step between them, whatever the token
// budget; the others are not held back.
TEST(SchedulerBatchingTest, PromptLogitsChunksAskForEveryRowWithinTheirCap) {
  SchedSim sim(1024, kBlock, Options(1024, 8, 1024));
  const std::vector<int32_t> prompt = MakePrompt(300, 7);
  ASSERT_TRUE(sim.Add(1, "a", prompt, 2).ok());
  sim.RunUntilIdle(50);  // the prompt's blocks are in the cache now
  ASSERT_TRUE(sim.Add(2, "a", prompt, 2, /*prompt_logits=*/true).ok());
  ASSERT_TRUE(sim.Add(3, "a", prompt, 2, /*prompt_logits=*/true).ok());
  ASSERT_TRUE(sim.Add(4, "a", prompt, 2).ok());
  std::map<uint64_t, int32_t> logit_rows;
  for (int step = 0; step < 20 && sim.sched().HasWork(); ++step) {
    const StepPlan& plan = sim.PlanAndCheck();
    int32_t rows = 0;
    for (size_t i = 0; i < plan.seqs.size(); ++i) {
      const devices::SequenceStep& s = plan.batch.seqs[i];
      const uint64_t id = plan.seqs[i].seq_id;
      if (plan.seqs[i].all_logits) {
        EXPECT_EQ(s.logits, devices::LogitsWanted::kAll);
        EXPECT_TRUE(id == 2 || id == 3) << id;
        EXPECT_EQ(s.start_pos, logit_rows[id]) << "rows in prompt order, none skipped";
        rows += static_cast<int32_t>(s.tokens.size());
        logit_rows[id] += static_cast<int32_t>(s.tokens.size());
      }
      if (id == 2 || id == 3) {
        EXPECT_EQ(plan.seqs[i].cached_tokens, 0);
      }
      if (id == 4 && plan.seqs[i].prefill) {
        EXPECT_GT(plan.seqs[i].cached_tokens, 0);
      }
    }
    EXPECT_LE(rows, kMaxPromptLogitRows) << "step " << step;
    sim.Commit(plan);
  }
  EXPECT_EQ(logit_rows[2], 300);
  EXPECT_EQ(logit_rows[3], 300);
  sim.RunUntilIdle(50);
  EXPECT_EQ(sim.finished().at(2), sim.ExpectedFinal(2, prompt));
}

TEST(SchedulerBatchingTest, MaxSeqsBoundsStepAndRunningSet) {
  SchedSim sim(128, kBlock, Options(64, 3));
  for (uint64_t id = 1; id <= 8; ++id) ASSERT_TRUE(sim.Add(id, "a", MakePrompt(5, id), 4).ok());
  for (int step = 0; step < 60 && sim.sched().HasWork(); ++step) {
    const StepPlan& plan = sim.PlanAndCheck();
    EXPECT_LE(plan.seqs.size(), 3u);
    EXPECT_LE(sim.sched().running(), 3u);
    sim.Commit(plan);
  }
  EXPECT_EQ(sim.finished().size(), 8u);
}

TEST(SchedulerBatchingTest, SingleTokenBudgetStillProgresses) {
  SchedSim sim(64, kBlock, Options(1, 4));
  ASSERT_TRUE(sim.Add(1, "a", MakePrompt(6, 1), 2).ok());
  ASSERT_TRUE(sim.Add(2, "a", MakePrompt(2, 2), 2).ok());
  EXPECT_LE(sim.RunUntilIdle(100), 20);
  EXPECT_EQ(sim.finished().size(), 2u);
}

TEST(SchedulerBatchingTest, MaxRunningPerTenant) {
  SchedSim sim(128, kBlock, Options(256, 16));
  ASSERT_TRUE(sim.sched().SetTenant("a", TenantShare{.max_running = 2}).ok());
  for (uint64_t id = 1; id <= 6; ++id) ASSERT_TRUE(sim.Add(id, "a", MakePrompt(4, id), 3).ok());
  for (uint64_t id = 11; id <= 13; ++id) ASSERT_TRUE(sim.Add(id, "b", MakePrompt(4, id), 3).ok());
  bool b_ran_alongside = false;
  while (sim.sched().HasWork()) {
    const StepPlan& plan = sim.PlanAndCheck();
    EXPECT_LE(sim.sched().Service("a").running, 2u);
    if (sim.sched().Service("b").running == 3) b_ran_alongside = true;
    sim.Commit(plan);
  }
  EXPECT_TRUE(b_ran_alongside);  // the cap holds a back, not b
  EXPECT_EQ(sim.finished().size(), 9u);
}

TEST(SchedulerBatchingTest, PrefixCacheSharedWithinSaltOnly) {
  SchedSim sim(64, kBlock, Options(64, 4));
  ASSERT_TRUE(sim.sched().SetTenant("c", TenantShare{.cache_salt = "group:x"}).ok());
  ASSERT_TRUE(sim.sched().SetTenant("d", TenantShare{.cache_salt = "group:x"}).ok());
  const std::vector<int32_t> prompt = MakePrompt(18, 7);  // 4 full blocks + 2
  ASSERT_TRUE(sim.Add(1, "a", prompt, 2).ok());
  sim.RunUntilIdle(10);
  ASSERT_EQ(sim.finished().size(), 1u);

  // Same tenant (salt "a"): the 16 cached tokens are skipped.
  ASSERT_TRUE(sim.Add(2, "a", prompt, 2).ok());
  {
    const StepPlan& plan = sim.PlanAndCheck();
    ASSERT_EQ(plan.seqs.size(), 1u);
    EXPECT_EQ(plan.seqs[0].cached_tokens, 16);
    EXPECT_EQ(plan.batch.seqs[0].start_pos, 16);
    EXPECT_EQ(plan.batch.seqs[0].tokens.size(), 2u);
    EXPECT_TRUE(plan.seqs[0].samples);
    sim.Commit(plan);
  }
  sim.RunUntilIdle(10);
  // Cached tokens are not charged: 18 + 2 prompt tokens computed, not 36.
  EXPECT_EQ(sim.sched().Service("a").prompt_tokens, 20u);

  // Another tenant (salt "b") does not see a's blocks.
  ASSERT_TRUE(sim.Add(3, "b", prompt, 2).ok());
  {
    const StepPlan& plan = sim.PlanAndCheck();
    ASSERT_EQ(plan.seqs.size(), 1u);
    EXPECT_EQ(plan.seqs[0].cached_tokens, 0);
    EXPECT_EQ(plan.batch.seqs[0].start_pos, 0);
    sim.Commit(plan);
  }
  sim.RunUntilIdle(10);

  // Tenants of one cache group share.
  ASSERT_TRUE(sim.Add(4, "c", prompt, 2).ok());
  sim.RunUntilIdle(10);
  ASSERT_TRUE(sim.Add(5, "d", prompt, 2).ok());
  const StepPlan& plan = sim.PlanAndCheck();
  ASSERT_EQ(plan.seqs.size(), 1u);
  EXPECT_EQ(plan.seqs[0].cached_tokens, 16);
  sim.Commit(plan);
  sim.RunUntilIdle(10);
  EXPECT_EQ(sim.finished().size(), 5u);
}

TEST(SchedulerBatchingTest, SampledTokenIsNotCachedBeforeItIsComputed) {
  // Seq 1's prompt is 3 tokens; its first sampled token completes block 0
  // but has no KV until the next step. A sequence whose prompt begins with
  // those 4 tokens must not get block 0 from the cache before then.
  SchedSim sim(64, kBlock, Options(64, 4));
  std::vector<int32_t> prompt = MakePrompt(3, 1);
  ASSERT_TRUE(sim.Add(1, "a", prompt, 8).ok());
  sim.Step();  // prefill; samples position 3
  std::vector<int32_t> longer = prompt;
  longer.push_back(SampledToken(1, 3));
  for (int i = 0; i < 6; ++i) longer.push_back(500 + i);
  ASSERT_TRUE(sim.Add(2, "a", longer, 2).ok());
  const StepPlan& plan = sim.PlanAndCheck();  // the fake KV store checks positions
  ASSERT_EQ(plan.seqs.size(), 2u);
  EXPECT_EQ(plan.seqs[1].cached_tokens, 0);
  sim.Commit(plan);
  sim.RunUntilIdle(20);
  // Once computed, the block is shared.
  ASSERT_TRUE(sim.Add(3, "a", longer, 2).ok());
  const StepPlan& again = sim.PlanAndCheck();
  ASSERT_EQ(again.seqs.size(), 1u);
  EXPECT_EQ(again.seqs[0].cached_tokens, 8);
  sim.Commit(again);
  sim.RunUntilIdle(20);
  EXPECT_EQ(sim.finished().size(), 3u);
}

TEST(SchedulerBatchingTest, RemoveFreesBlocksAtOnce) {
  SchedSim sim(64, kBlock, Options(64, 8));
  ASSERT_TRUE(sim.Add(1, "a", MakePrompt(10, 1), 20).ok());
  ASSERT_TRUE(sim.Add(2, "a", MakePrompt(10, 2), 20).ok());
  sim.Step();
  sim.Step();
  EXPECT_EQ(sim.sched().running(), 2u);
  EXPECT_EQ(sim.kv().Stats().blocks_used, 6u);  // 11 positions each: 3 blocks
  ASSERT_TRUE(sim.Add(3, "a", MakePrompt(10, 3), 20).ok());
  EXPECT_EQ(sim.sched().waiting(), 1u);

  sim.sched().Remove(1);
  EXPECT_EQ(sim.sched().running(), 1u);
  EXPECT_EQ(sim.kv().Stats().blocks_used, 3u);
  EXPECT_TRUE(sim.sched().Tokens(1).empty());
  sim.sched().Remove(3);  // waiting
  EXPECT_EQ(sim.sched().waiting(), 0u);
  EXPECT_EQ(sim.sched().Service("a").waiting, 0u);
  sim.sched().Remove(42);  // unknown: ignored
  sim.sched().Remove(2);
  EXPECT_FALSE(sim.sched().HasWork());
  EXPECT_EQ(sim.kv().Stats().blocks_used, 0u);
  EXPECT_EQ(sim.sched().Service("a").running, 0u);
  EXPECT_TRUE(sim.kv().CheckInvariants().ok());
  EXPECT_TRUE(sim.sched().Plan().empty());
  // The id is free again.
  EXPECT_TRUE(sim.Add(1, "a", MakePrompt(4, 9), 2).ok());
}

TEST(SchedulerBatchingTest, RemoveBetweenPlanAndCommit) {
  SchedSim sim(64, kBlock, Options(64, 8));
  ASSERT_TRUE(sim.Add(1, "a", MakePrompt(5, 1), 4).ok());
  ASSERT_TRUE(sim.Add(2, "a", MakePrompt(5, 2), 4).ok());
  const StepPlan& plan = sim.sched().Plan();
  ASSERT_EQ(plan.seqs.size(), 2u);
  sim.sched().Remove(1);
  std::vector<SequenceResult> results = {{.seq_id = 1, .token = 7, .finished = false},
                                         {.seq_id = 2, .token = 8, .finished = false}};
  sim.sched().Commit(results);  // the result of the removed one is ignored
  EXPECT_EQ(sim.sched().Tokens(2).size(), 6u);
  EXPECT_EQ(sim.sched().Tokens(2).back(), 8);
  EXPECT_EQ(sim.sched().running(), 1u);
  sim.sched().Commit(results);  // a second commit of the same step changes nothing
  EXPECT_EQ(sim.sched().Tokens(2).size(), 6u);
  EXPECT_TRUE(sim.kv().CheckInvariants().ok());
}

TEST(SchedulerBatchingTest, AddValidation) {
  kv::KvBlockManager kv(16, kBlock);
  Scheduler sched(Options(64, 4, /*context=*/32), kv);
  auto add = [&](uint64_t id, int32_t prompt_len, int32_t max_new) {
    return sched.Add(SequenceSpec{.seq_id = id,
                                  .tenant = "a",
                                  .prompt = MakePrompt(prompt_len, 1),
                                  .max_new_tokens = max_new});
  };
  EXPECT_EQ(add(1, 0, 4).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(add(1, 4, 0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(add(1, 4, -3).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(add(1, 30, 3).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(add(1, 30, 2).ok());  // exactly the context
  EXPECT_EQ(add(1, 4, 4).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(sched.waiting(), 1u);
  EXPECT_EQ(sched.Tokens(1).size(), 30u);
  EXPECT_TRUE(sched.Tokens(99).empty());
  EXPECT_EQ(sched.SetTenant("a", TenantShare{.weight = 0}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(sched.SetTenant("a", TenantShare{.kv_max_fraction = 1.5}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(sched.Tenants(), std::vector<std::string>{"a"});
}

}  // namespace
}  // namespace tokenmill::sched::testing
