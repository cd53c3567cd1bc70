// Metering benchmark: the time of MeterStore::RecordStep per engine step at
// 1, 64 and 256 running sequences from four tenants (each sequence one
// generated token per step, usage aggregated to at most four keys, one
// inflight merge per sequence), under process and power durability, on a
// store in a fresh temp dir. Requests end after 64 to 511 steps and are
// replaced, so FinishRequest is on the path too (timed on its own).
//
//   metering_bench [STEPS]   (STEPS under process durability; a tenth under power)
//
// Prints figures, and for context the share of a 20 ms and a 100 ms step;
// it never fails on time. Goal: RecordStep well under 100 us at 256.
#include <stdlib.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "storage/meter_store.h"
#include "tests/bench/bench_stats.h"

namespace {

using Clock = std::chrono::steady_clock;
using tokenmill::storage::Durability;
using tokenmill::storage::MeterStore;
using tokenmill::storage::MeterStoreOptions;
using tokenmill::storage::RequestProgress;
using tokenmill::storage::StepRecord;
using tokenmill::storage::UsageCounters;
using tokenmill::storage::UsageDelta;

const char* const kTenants[] = {"alpha", "beta", "gamma", "delta"};
constexpr uint64_t kHour = 480'000;
constexpr int kWarmupSteps = 50;

// CPU time of the calling thread: unlike wall time, it does not grow when
// other processes share the cores (RocksDB work on its own threads, such as
// flushes, is not in it).
double ThreadCpuUs() {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e6 + static_cast<double>(ts.tv_nsec) / 1e3;
}

using Figures = tokenmill::bench::SampleFigures;
using tokenmill::bench::Summarize;

// A temp dir removed at the end of the scope.
class ScratchDir {
 public:
  ScratchDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "metering_bench.XXXXXX");
    if (::mkdtemp(pattern.data()) != nullptr) path_ = pattern;
  }
  ~ScratchDir() {
    std::error_code ignored;
    if (!path_.empty()) std::filesystem::remove_all(path_, ignored);
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// A sequence in flight: its request and how long it still runs.
struct Sequence {
  uint64_t n = 0;
  int remaining = 0;
  bool first = true;
  UsageCounters totals;
};

void Run(int seqs, Durability durability, int steps) {
  const char* durability_name = durability == Durability::kPower ? "power" : "process";
  ScratchDir dir;
  MeterStoreOptions options;
  options.dir = dir.path() / "data";
  options.durability = durability;
  auto opened = MeterStore::Open(options);
  if (dir.path().empty() || !opened.ok()) {
    std::printf("metering %3d seqs (%s): cannot open a store in %s\n", seqs, durability_name,
                dir.path().c_str());
    return;
  }
  MeterStore& store = **opened;
  std::mt19937_64 rng(42);
  uint64_t next = 0;
  auto start_sequence = [&]() {
    Sequence s;
    s.n = next++;
    s.remaining = 64 + static_cast<int>(rng() % 448);
    return s;
  };
  std::vector<Sequence> running;
  for (int i = 0; i < seqs; ++i) running.push_back(start_sequence());

  std::vector<double> step_us;
  std::vector<double> step_cpu_us;
  std::vector<double> finish_us;
  step_us.reserve(static_cast<size_t>(steps));
  StepRecord step;
  for (int s = 0; s < kWarmupSteps + steps; ++s) {
    // What the metering writer builds for a decode step (not timed).
    step.usage.clear();
    step.requests.resize(running.size());
    for (size_t i = 0; i < running.size(); ++i) {
      Sequence& seq = running[i];
      RequestProgress& p = step.requests[i];
      p.request_id = "req-" + std::to_string(seq.n);
      p.tenant = kTenants[seq.n % 4];
      p.model = "llama-3-8b";
      p.device = "cuda:0";
      p.delta = UsageCounters{};
      p.delta.prompt_tokens = seq.first ? 500 : 0;
      p.delta.generated_tokens = 1;
      p.delta.cost_nusd = 2'100 + seq.n % 100;
      p.delta.revenue_nusd = 6'000;
      seq.first = false;
      seq.totals += p.delta;
      UsageDelta* usage = nullptr;
      for (UsageDelta& d : step.usage) {
        if (d.key.tenant == p.tenant) usage = &d;
      }
      if (usage == nullptr) {
        step.usage.push_back({{p.tenant, p.model, p.device, kHour}, {}});
        usage = &step.usage.back();
        usage->counters.device_ns = 20'000'000 / 4;
        usage->counters.energy_uj = 14'000'000 / 4;
      }
      usage->counters += p.delta;
    }
    const double c0 = ThreadCpuUs();
    const auto t0 = Clock::now();
    if (absl::Status st = store.RecordStep(step); !st.ok()) {
      std::printf("record_step failed: %s\n", std::string(st.message()).c_str());
      return;
    }
    const auto t1 = Clock::now();
    const double c1 = ThreadCpuUs();
    if (s >= kWarmupSteps) {
      step_us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
      step_cpu_us.push_back(c1 - c0);
    }

    for (Sequence& seq : running) {
      if (--seq.remaining > 0) continue;
      const std::string id = "req-" + std::to_string(seq.n);
      const std::string record =
          "{\"request_id\":\"" + id +
          "\",\"prompt_tokens\":" + std::to_string(seq.totals.prompt_tokens) +
          ",\"cached_tokens\":0,\"generated_tokens\":" +
          std::to_string(seq.totals.generated_tokens) +
          ",\"cost_nusd\":" + std::to_string(seq.totals.cost_nusd) +
          ",\"revenue_nusd\":" + std::to_string(seq.totals.revenue_nusd) + "}";
      UsageCounters one;
      one.requests = 1;
      const auto f0 = Clock::now();
      auto done = store.FinishRequest(
          id, record, {{{kTenants[seq.n % 4], "llama-3-8b", "cuda:0", kHour}, one}});
      const auto f1 = Clock::now();
      if (!done.ok()) {
        std::printf("finish_request failed: %s\n", std::string(done.status().message()).c_str());
        return;
      }
      if (s >= kWarmupSteps)
        finish_us.push_back(std::chrono::duration<double, std::micro>(f1 - f0).count());
      seq = start_sequence();
    }
  }
  const Figures f = Summarize(step_us);
  const Figures cpu = Summarize(step_cpu_us);
  const Figures fin = Summarize(finish_us);
  std::printf(
      "metering %3d seqs (%-7s): RecordStep wall mean %7.1f us p50 %7.1f p99 %8.1f max %8.1f, "
      "cpu mean %6.1f us p99 %6.1f (%d steps): %.1f us = %.2f%% of a 20 ms step, %.2f%% of a "
      "100 ms step; FinishRequest wall mean %.1f us p99 %.1f (%zu)\n",
      seqs, durability_name, f.mean_us, f.p50_us, f.p99_us, f.max_us, cpu.mean_us, cpu.p99_us,
      steps, f.mean_us, f.mean_us / 20'000.0 * 100.0, f.mean_us / 100'000.0 * 100.0, fin.mean_us,
      fin.p99_us, finish_us.size());
}

}  // namespace

int main(int argc, char** argv) {
  const int steps = argc > 1 ? std::max(10, std::atoi(argv[1])) : 3000;
  for (Durability durability : {Durability::kProcess, Durability::kPower}) {
    const int n = durability == Durability::kPower ? std::max(10, steps / 10) : steps;
    for (int seqs : {1, 64, 256}) Run(seqs, durability, n);
  }
  return 0;
}
