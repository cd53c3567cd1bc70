// A simulated engine for scheduler tests: no executor, made-up tokens. It
// checks every planned step against the scheduler's contract (budgets, flags,
// block tables, token spans) and keeps a fake KV store (one token id per
// position of each block) so that a step reading a position nobody wrote, or
// wrote with another token, fails: that catches wrong prefix-cache hits and
// wrong recomputes.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "gtest/gtest.h"
#include "runtime/kv/kv_block_manager.h"
#include "runtime/sched/scheduler.h"

namespace tokenmill::sched::testing {

inline constexpr int32_t kBlock = 4;  // tokens per KV block in the scheduler tests

// Scheduler options of the tests: a token budget and a sequence cap per step.
inline SchedulerOptions Options(int32_t max_batch_tokens, int32_t max_seqs, int32_t context = 256) {
  SchedulerOptions o;
  o.max_batch_tokens = max_batch_tokens;
  o.max_seqs = max_seqs;
  o.context = context;
  return o;
}

// The token a sequence samples for position `pos`: a function of the
// sequence and the position only, so a recompute samples the same tokens.
inline int32_t SampledToken(uint64_t seq_id, int32_t pos) {
  return static_cast<int32_t>((seq_id * 7919 + static_cast<uint64_t>(pos) * 31) % 251) + 1;
}

class SchedSim {
 public:
  SchedSim(uint32_t num_blocks, int32_t block_tokens, SchedulerOptions options,
           KvGrowFn grow = nullptr)
      : SchedSim(std::make_unique<kv::KvBlockManager>(num_blocks, block_tokens), options,
                 std::move(grow)) {}
  // Over a given manager (a paged one, for grow tests).
  SchedSim(std::unique_ptr<kv::KvBlockManager> kv, SchedulerOptions options,
           KvGrowFn grow = nullptr)
      : kv_owner_(std::move(kv)),
        kv_(*kv_owner_),
        sched_(options, kv_, std::move(grow)),
        options_(options),
        store_(static_cast<size_t>(kv_.num_blocks()) * kv_.block_tokens(), -1) {}

  kv::KvBlockManager& kv() { return kv_; }
  Scheduler& sched() { return sched_; }

  absl::Status Add(uint64_t id, const std::string& tenant, std::vector<int32_t> prompt,
                   int32_t max_new_tokens, bool prompt_logits = false) {
    expected_[id] = prompt;
    max_new_[id] = max_new_tokens;
    prompt_len_[id] = static_cast<int32_t>(prompt.size());
    return sched_.Add(SequenceSpec{.seq_id = id,
                                   .tenant = tenant,
                                   .prompt = std::move(prompt),
                                   .max_new_tokens = max_new_tokens,
                                   .prompt_logits = prompt_logits});
  }

  // Plans, checks the plan and the KV invariants, "runs" it on the fake KV
  // store, and returns it (valid until Commit).
  const StepPlan& PlanAndCheck() {
    const StepPlan& plan = sched_.Plan();
    EXPECT_EQ(plan.batch.seqs.size(), plan.seqs.size());
    EXPECT_LE(plan.seqs.size(), static_cast<size_t>(options_.max_seqs));
    int64_t tokens = 0;
    int32_t prefill = 0, decode = 0;
    bool seen_prefill = false;
    std::set<uint64_t> ids;
    for (size_t i = 0; i < plan.seqs.size(); ++i) {
      const devices::SequenceStep& step = plan.batch.seqs[i];
      const PlannedSequence& ps = plan.seqs[i];
      EXPECT_EQ(step.seq_id, ps.seq_id);
      EXPECT_TRUE(ids.insert(ps.seq_id).second) << "sequence twice in a step: " << ps.seq_id;
      EXPECT_GE(step.tokens.size(), 1u);
      tokens += static_cast<int64_t>(step.tokens.size());
      if (ps.prefill) {
        seen_prefill = true;
        prefill += static_cast<int32_t>(step.tokens.size());
      } else {
        EXPECT_FALSE(seen_prefill) << "decode after a prefill chunk";
        EXPECT_EQ(step.tokens.size(), 1u);
        EXPECT_TRUE(ps.samples);
        ++decode;
      }
      EXPECT_EQ(step.logits, ps.all_logits ? devices::LogitsWanted::kAll
                             : ps.samples  ? devices::LogitsWanted::kLast
                                           : devices::LogitsWanted::kNone);
      const int64_t end = step.start_pos + static_cast<int64_t>(step.tokens.size());
      EXPECT_GE(static_cast<int64_t>(step.block_table.size()) * kv_.block_tokens(), end)
          << "block table too short for seq " << ps.seq_id;
      std::span<const int32_t> all = sched_.Tokens(ps.seq_id);
      EXPECT_LE(end, static_cast<int64_t>(all.size()));
      // Samples exactly when the step ends at the last known token.
      EXPECT_EQ(ps.samples, end == static_cast<int64_t>(all.size())) << "seq " << ps.seq_id;
      // What the sequence knows equals what the test expects it to know.
      const std::vector<int32_t>& want = expected_[ps.seq_id];
      EXPECT_TRUE(std::equal(all.begin(), all.end(), want.begin(), want.end()))
          << "tokens of seq " << ps.seq_id << " differ";
      for (size_t k = 0; k < step.tokens.size(); ++k) {
        EXPECT_EQ(step.tokens[k], all[step.start_pos + k]);
      }
      // Positions before start_pos must already hold this sequence's tokens.
      for (int32_t p = 0; p < step.start_pos; ++p) {
        if (At(step.block_table, p) != all[p]) {
          ADD_FAILURE() << "seq " << ps.seq_id << " position " << p << " holds "
                        << At(step.block_table, p) << ", expected " << all[p];
          break;
        }
      }
      for (size_t k = 0; k < step.tokens.size(); ++k) {
        At(step.block_table, step.start_pos + static_cast<int32_t>(k)) = step.tokens[k];
      }
    }
    EXPECT_LE(tokens, options_.max_batch_tokens);
    EXPECT_EQ(prefill, plan.prefill_tokens);
    EXPECT_EQ(decode, plan.decode_tokens);
    absl::Status inv = kv_.CheckInvariants();
    EXPECT_TRUE(inv.ok()) << inv;
    for (uint64_t id : plan.preempted) ++preemptions_[id];
    return plan;
  }

  // Commits the plan: each sampling sequence gets SampledToken; it finishes
  // at max_new_tokens. Finished sequences' tokens land in finished().
  void Commit(const StepPlan& plan) {
    results_.clear();
    for (size_t i = 0; i < plan.seqs.size(); ++i) {
      const PlannedSequence& ps = plan.seqs[i];
      SequenceResult r;
      r.seq_id = ps.seq_id;
      if (ps.samples) {
        const devices::SequenceStep& step = plan.batch.seqs[i];
        const int32_t pos = step.start_pos + static_cast<int32_t>(step.tokens.size());
        r.token = SampledToken(ps.seq_id, pos);
        std::vector<int32_t>& want = expected_[ps.seq_id];
        want.push_back(*r.token);
        const int32_t generated = static_cast<int32_t>(want.size()) - prompt_len_[ps.seq_id];
        r.finished = generated >= max_new_[ps.seq_id];
        if (r.finished) finished_[ps.seq_id] = want;
      }
      results_.push_back(r);
    }
    sched_.Commit(results_);
    absl::Status inv = kv_.CheckInvariants();
    EXPECT_TRUE(inv.ok()) << inv;
  }

  void Step() { Commit(PlanAndCheck()); }

  // Steps until no work is left or max_steps ran; returns the steps run.
  int RunUntilIdle(int max_steps) {
    int steps = 0;
    while (sched_.HasWork() && steps < max_steps) {
      Step();
      ++steps;
    }
    return steps;
  }

  const std::map<uint64_t, std::vector<int32_t>>& finished() const { return finished_; }
  const std::map<uint64_t, int>& preemptions() const { return preemptions_; }
  // The tokens a sequence must end with: its prompt and SampledToken after.
  std::vector<int32_t> ExpectedFinal(uint64_t id, const std::vector<int32_t>& prompt) const {
    std::vector<int32_t> out = prompt;
    const int32_t n = max_new_.at(id);
    for (int32_t g = 0; g < n; ++g) {
      out.push_back(SampledToken(id, static_cast<int32_t>(out.size())));
    }
    return out;
  }

 private:
  int32_t& At(std::span<const uint32_t> table, int32_t pos) {
    const int32_t bt = kv_.block_tokens();
    return store_[static_cast<size_t>(table[pos / bt]) * bt + pos % bt];
  }

  std::unique_ptr<kv::KvBlockManager> kv_owner_;
  kv::KvBlockManager& kv_;
  Scheduler sched_;
  SchedulerOptions options_;
  std::vector<int32_t> store_;
  std::map<uint64_t, std::vector<int32_t>> expected_;
  std::map<uint64_t, int32_t> max_new_;
  std::map<uint64_t, int32_t> prompt_len_;
  std::map<uint64_t, std::vector<int32_t>> finished_;
  std::map<uint64_t, int> preemptions_;
  std::vector<SequenceResult> results_;
};

// A prompt of n tokens, distinct per `seed`.
inline std::vector<int32_t> MakePrompt(int32_t n, int32_t seed) {
  std::vector<int32_t> p(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i) p[i] = 1000 + (seed * 37 + i * 11) % 5000;
  return p;
}

}  // namespace tokenmill::sched::testing
