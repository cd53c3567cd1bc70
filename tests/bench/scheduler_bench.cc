// Scheduler benchmark: the time of Plan() + Commit() per step, with no
// forward pass, at 1, 64 and 256 running sequences in steady decode (four
// tenants, a KvBlockManager large enough for all), and at 256 with
// sequences finishing and new ones arriving (prefill chunks, admission, the
// prefix cache and VTC ordering on the path).
//
//   scheduler_bench [STEPS]
//
// Prints figures; it never fails on time. Goal: well under 50 us at 256.
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "runtime/kv/kv_block_manager.h"
#include "runtime/sched/scheduler.h"
#include "tests/bench/bench_stats.h"

namespace {

using Clock = std::chrono::steady_clock;
using tokenmill::sched::Scheduler;
using tokenmill::sched::SchedulerOptions;
using tokenmill::sched::SequenceResult;
using tokenmill::sched::SequenceSpec;
using tokenmill::sched::StepPlan;

constexpr int32_t kBlockTokens = 16;
constexpr int32_t kContext = 4096;
const char* const kTenants[] = {"alpha", "beta", "gamma", "delta"};

struct Figures : tokenmill::bench::SampleFigures {
  double mean_batch = 0.0;
};

Figures Summarize(std::vector<double>& samples_us, double batch_sum) {
  Figures f;
  static_cast<tokenmill::bench::SampleFigures&>(f) = tokenmill::bench::Summarize(samples_us);
  if (!samples_us.empty()) f.mean_batch = batch_sum / static_cast<double>(samples_us.size());
  return f;
}

class Bench {
 public:
  Bench(int32_t max_seqs, uint32_t kv_blocks)
      : kv_(kv_blocks, kBlockTokens), sched_(Options(max_seqs), kv_), rng_(42) {
    for (const char* t : kTenants) {
      tokenmill::sched::TenantShare share;
      share.weight = t[0] == 'a' ? 2.0 : 1.0;
      (void)sched_.SetTenant(t, share);
    }
  }

  void Add(int32_t prompt_len, int32_t max_new) {
    SequenceSpec spec;
    spec.seq_id = next_id_++;
    spec.tenant = kTenants[spec.seq_id % 4];
    spec.prompt.resize(static_cast<size_t>(prompt_len));
    // A shared system-prompt block, then distinct tokens.
    for (int32_t i = 0; i < prompt_len; ++i) {
      spec.prompt[i] = i < kBlockTokens ? i : static_cast<int32_t>(rng_() % 30000);
    }
    spec.max_new_tokens = max_new;
    (void)sched_.Add(std::move(spec));
  }

  // One step; returns the microseconds spent in Plan() and Commit().
  double Step() {
    const Clock::time_point t0 = Clock::now();
    const StepPlan& plan = sched_.Plan();
    const Clock::time_point t1 = Clock::now();
    // Building the results is the engine's work, not the scheduler's.
    results_.clear();
    for (const tokenmill::sched::PlannedSequence& ps : plan.seqs) {
      SequenceResult r;
      r.seq_id = ps.seq_id;
      if (ps.samples) {
        r.token = static_cast<int32_t>(rng_() % 30000);
        const size_t len = sched_.Tokens(ps.seq_id).size() + 1;
        r.finished = len >= static_cast<size_t>(limit_[ps.seq_id % limit_.size()]);
      }
      results_.push_back(r);
    }
    last_batch_ = plan.seqs.size();
    const Clock::time_point t2 = Clock::now();
    sched_.Commit(results_);
    const Clock::time_point t3 = Clock::now();
    return std::chrono::duration<double, std::micro>((t1 - t0) + (t3 - t2)).count();
  }

  Scheduler& sched() { return sched_; }
  size_t last_batch() const { return last_batch_; }
  // Sequence lengths (prompt + generated) at which the engine says finished,
  // indexed by seq_id modulo the size: a stand-in for stop tokens.
  void SetLimits(std::vector<int32_t> limits) { limit_ = std::move(limits); }

 private:
  static SchedulerOptions Options(int32_t max_seqs) {
    SchedulerOptions o;
    o.max_batch_tokens = 2048;
    o.max_seqs = max_seqs;
    o.context = kContext;
    return o;
  }

  tokenmill::kv::KvBlockManager kv_;
  Scheduler sched_;
  std::mt19937 rng_;
  uint64_t next_id_ = 1;
  std::vector<SequenceResult> results_;
  std::vector<int32_t> limit_ = {kContext};
  size_t last_batch_ = 0;
};

Figures SteadyDecode(int32_t seqs, int steps) {
  // Room for every sequence to reach the context.
  const auto blocks = static_cast<uint32_t>(seqs) * (kContext / kBlockTokens);
  Bench bench(std::max(seqs, 1), blocks);
  for (int32_t i = 0; i < seqs; ++i) bench.Add(64, kContext - 64);
  // Warm up until every sequence decodes (and vectors reached their size).
  for (int i = 0; i < 16; ++i) bench.Step();
  std::vector<double> samples;
  samples.reserve(static_cast<size_t>(steps));
  double batch = 0.0;
  for (int i = 0; i < steps; ++i) {
    samples.push_back(bench.Step());
    batch += static_cast<double>(bench.last_batch());
  }
  return Summarize(samples, batch);
}

Figures WithArrivals(int32_t seqs, int steps) {
  const auto blocks = static_cast<uint32_t>(seqs) * 64;
  Bench bench(seqs, blocks);
  // Finishing lengths 96..352 tokens; prompts 32..160.
  std::vector<int32_t> limits;
  std::mt19937 rng(7);
  for (int i = 0; i < 97; ++i) limits.push_back(96 + static_cast<int32_t>(rng() % 257));
  bench.SetLimits(limits);
  auto top_up = [&] {
    // Keep a queue of about seqs / 8 waiting behind the running ones.
    while (bench.sched().waiting() < static_cast<size_t>(seqs / 8 + 1)) {
      bench.Add(32 + static_cast<int32_t>(rng() % 129), 1024);
    }
  };
  for (int i = 0; i < 200; ++i) {
    top_up();
    bench.Step();
  }
  std::vector<double> samples;
  samples.reserve(static_cast<size_t>(steps));
  double batch = 0.0;
  for (int i = 0; i < steps; ++i) {
    top_up();
    samples.push_back(bench.Step());
    batch += static_cast<double>(bench.last_batch());
  }
  return Summarize(samples, batch);
}

}  // namespace

int main(int argc, char** argv) {
  const int steps = argc > 1 ? std::max(100, std::atoi(argv[1])) : 2000;
  for (int32_t seqs : {1, 64, 256}) {
    const Figures f = SteadyDecode(seqs, steps);
    std::printf(
        "scheduler %d seqs: plan+commit mean %.1f us p99 %.1f us (p50 %.1f, max %.0f, batch "
        "%.0f)\n",
        seqs, f.mean_us, f.p99_us, f.p50_us, f.max_us, f.mean_batch);
  }
  const Figures f = WithArrivals(256, steps);
  std::printf(
      "scheduler 256 seqs + arrivals: plan+commit mean %.1f us p99 %.1f us (p50 %.1f, max %.0f, "
      "batch %.0f)\n",
      f.mean_us, f.p99_us, f.p50_us, f.max_us, f.mean_batch);
  return 0;
}
