// Metering cost per step as a share of the step: the daemon's whole metering
// path (ledger pricing, the split over sequences, revenue, one RocksDB batch
// with usage and per-request progress, the Prometheus families) for a step of
// 256 decoding sequences from 4 tenants, next to a real 256-sequence decode
// step of the CPU executor on a synthesized model, measured in the same run.
//
// Then durability = "power" with INSTANCES engine threads stepping at once
// (64 sequences a step, no pause between steps: the worst case), old path
// (each engine thread writes and syncs its own step) against the metering
// writer thread (group commit), in the same run: OnStep time p50/p99 (what
// a step waits before its tokens may go out) and fsyncs per second, counted
// by this program's own fsync/fdatasync (they shadow libc's for RocksDB).
// The store goes to DIR (default: the working directory; not a tmpfs, or
// fsyncs cost nothing).
//
//   metering_step_bench [SHAPE_DIM=512] [THREADS=2] [INSTANCES=4] [DIR=.]
//
// Prints figures; never fails on time.
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "devices/cpu/cpu_executor.h"
#include "metering/cost_model.h"
#include "metering/metering.h"
#include "prometheus/registry.h"
#include "runtime/model/synth.h"
#include "storage/meter_store.h"
#include "telemetry/runtime_metrics.h"
#include "tests/bench/bench_stats.h"

// Every fsync and fdatasync of the process (RocksDB's WAL syncs included),
// counted and passed on to the kernel.
std::atomic<uint64_t> g_syncs{0};
extern "C" int fsync(int fd) {
  g_syncs.fetch_add(1, std::memory_order_relaxed);
  return static_cast<int>(::syscall(SYS_fsync, fd));
}
extern "C" int fdatasync(int fd) {
  g_syncs.fetch_add(1, std::memory_order_relaxed);
  return static_cast<int>(::syscall(SYS_fdatasync, fd));
}

namespace {

using Clock = std::chrono::steady_clock;
using namespace tokenmill;

double Median(std::vector<double> v) { return bench::Summarize(v).p50_us; }

// One 256-sequence decode step of the CPU executor, median of `reps`, in us.
double DecodeStepMicros(int32_t dim, int32_t threads, int32_t seqs, int reps) {
  model::SynthOptions o;
  o.dim = dim;
  o.n_layers = 4;
  o.n_heads = dim / 64;
  o.n_kv_heads = std::max(1, dim / 256);
  o.ffn_dim = dim * 3;
  o.vocab_size = 4096;
  o.context_length = 4096;
  o.weight_type = devices::TensorType::kQ8_0;
  auto m = model::SynthesizeModel(o);
  if (!m.ok()) return 0;
  constexpr int32_t kContext = 64;  // positions already in each sequence's cache
  devices::ExecutorOptions eo;
  eo.block_tokens = 16;
  eo.kv_blocks = static_cast<uint32_t>(seqs * (kContext / 16 + 1));
  eo.threads = threads;
  eo.max_batch_tokens = seqs;
  auto exec = devices::cpu::CreateCpuExecutor(m->spec, eo);
  if (!exec.ok()) return 0;
  std::vector<std::vector<uint32_t>> tables(seqs);
  std::vector<int32_t> token(seqs, 7);
  for (int32_t s = 0; s < seqs; ++s) {
    for (int32_t b = 0; b <= kContext / 16; ++b) tables[s].push_back(s * (kContext / 16 + 1) + b);
  }
  devices::Batch batch;
  for (int32_t s = 0; s < seqs; ++s) {
    devices::SequenceStep step;
    step.seq_id = s;
    step.tokens = std::span<const int32_t>(&token[s], 1);
    step.start_pos = kContext;
    step.block_table = tables[s];
    batch.seqs.push_back(step);
  }
  std::vector<double> times;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = Clock::now();
    auto out = (*exec)->Forward(batch);
    times.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
    if (!out.ok()) return 0;
  }
  return Median(times);
}

metering::CostInputs BenchCostInputs() {
  metering::CostInputs in;
  in.capex = 320000;
  in.power_usd_per_kwh = 0.12;
  in.pue = 1.3;
  in.network_usd_per_hour = 0.4;
  in.debt_service_usd_per_hour = 2.1;
  in.other_usd_per_hour = 0.5;
  in.devices.push_back({"cpu", 1.0, 150.0});
  return in;
}

struct PowerFigures {
  bench::SampleFigures on_step;
  double steps_per_s = 0;
  double fsyncs_per_s = 0;
  double steps_per_fsync = 0;
};

// `instances` engine threads, each metering `steps` steps of `seqs`
// sequences back to back into one power-durability store in `dir`.
PowerFigures RunPower(const std::filesystem::path& dir, int instances, bool group_commit, int steps,
                      int seqs) {
  PowerFigures f;
  storage::MeterStoreOptions so;
  so.dir = dir;
  so.durability = storage::Durability::kPower;
  auto store = storage::MeterStore::Open(so);
  if (!store.ok()) {
    std::fprintf(stderr, "store: %s\n", std::string(store.status().message()).c_str());
    return f;
  }
  auto model = metering::CostModel::Create(BenchCostInputs());
  runtime::SteadyClock clock;
  metering::CostLedger ledger(*model, clock.Now());
  metering::MeteringSources sources;
  sources.watts = [](const std::string&) { return std::optional<double>(150.0); };
  metering::MeteringOptions options;
  options.group_commit = group_commit;
  std::vector<std::vector<double>> times(instances);
  std::vector<std::vector<std::string>> ids(instances);
  {
    metering::Metering metering(**store, ledger, nullptr, clock, sources, options);
    metering.SetModelPrices({{"bench-model", {0.2, 0.6}}});
    std::vector<std::thread> threads;
    const uint64_t syncs_before = g_syncs.load();
    const auto t0 = Clock::now();
    for (int i = 0; i < instances; ++i) {
      threads.emplace_back([&, i] {
        auto observer = metering.ObserverFor("bench-model", "cpu");
        for (int s = 0; s < seqs; ++s) {
          ids[i].push_back("01a2252c-5898-753e-" + std::to_string(1000 + i) + "-" +
                           std::to_string(100000000000 + s));
        }
        runtime::StepUsage step;
        step.model = "bench-model";
        step.device = "cpu";
        step.device_time = std::chrono::milliseconds(20);
        step.batch_size = seqs;
        for (int s = 0; s < seqs; ++s) {
          runtime::SequenceUsage u;
          u.request_id = ids[i][s];
          u.tenant = "tenant" + std::to_string(s % 4);
          u.generated_tokens = 1;
          step.seqs.push_back(u);
        }
        times[i].reserve(steps);
        for (int n = 0; n < steps; ++n) {
          step.at = std::chrono::system_clock::now();
          const auto a = Clock::now();
          if (!observer->OnStep(step).ok()) return;
          times[i].push_back(std::chrono::duration<double, std::micro>(Clock::now() - a).count());
        }
      });
    }
    for (auto& t : threads) t.join();
    const double wall = std::chrono::duration<double>(Clock::now() - t0).count();
    const uint64_t syncs = g_syncs.load() - syncs_before;
    std::vector<double> all;
    for (auto& v : times) all.insert(all.end(), v.begin(), v.end());
    f.on_step = bench::Summarize(all);
    f.steps_per_s = static_cast<double>(all.size()) / wall;
    f.fsyncs_per_s = static_cast<double>(syncs) / wall;
    f.steps_per_fsync = syncs > 0 ? static_cast<double>(all.size()) / syncs : 0;
  }
  store->reset();
  std::filesystem::remove_all(dir);
  return f;
}

}  // namespace

int main(int argc, char** argv) {
  const int32_t dim = argc > 1 ? std::atoi(argv[1]) : 512;
  const int32_t threads = argc > 2 ? std::atoi(argv[2]) : 2;
  const int instances = argc > 3 ? std::max(1, std::atoi(argv[3])) : 4;
  const std::filesystem::path power_dir =
      std::filesystem::absolute(argc > 4 ? argv[4] : ".") /
      ("tokenmill-metering-power-bench-" + std::to_string(getpid()));
  constexpr int32_t kSeqs = 256;
  constexpr int kSteps = 3000;

  const std::filesystem::path dir = std::filesystem::temp_directory_path() /
                                    ("tokenmill-metering-bench-" + std::to_string(getpid()));
  storage::MeterStoreOptions so;
  so.dir = dir;
  auto store = storage::MeterStore::Open(so);
  if (!store.ok()) {
    std::fprintf(stderr, "store: %s\n", std::string(store.status().message()).c_str());
    return 1;
  }
  metering::CostInputs in;
  in.capex = 320000;
  in.power_usd_per_kwh = 0.12;
  in.pue = 1.3;
  in.network_usd_per_hour = 0.4;
  in.debt_service_usd_per_hour = 2.1;
  in.other_usd_per_hour = 0.5;
  in.devices.push_back({"cpu", 1.0, 150.0});
  auto model = metering::CostModel::Create(in);
  runtime::SteadyClock clock;
  metering::CostLedger ledger(*model, clock.Now());
  std::map<std::string, metering::Prices> tenant_prices;
  for (int t = 0; t < 4; ++t) tenant_prices["tenant" + std::to_string(t)] = {0.2, 0.6};
  prometheus::Registry registry;
  telemetry::RuntimeMetrics metrics(registry, [] { return telemetry::RuntimeSnapshot{}; });
  metering::MeteringSources sources;
  sources.watts = [](const std::string&) { return std::optional<double>(150.0); };
  metering::Metering metering(**store, ledger, &metrics, clock, sources);
  metering.SetTenantPrices(tenant_prices);
  auto observer = metering.ObserverFor("bench-model", "cpu");

  std::vector<std::string> ids(kSeqs), names(kSeqs);
  for (int i = 0; i < kSeqs; ++i) {
    ids[i] = "01a2252c-5898-753e-9707-" + std::to_string(100000000000 + i);
    names[i] = "tenant" + std::to_string(i % 4);
  }
  runtime::StepUsage step;
  step.model = "bench-model";
  step.device = "cpu";
  step.device_time = std::chrono::milliseconds(40);
  step.batch_size = kSeqs;
  for (int i = 0; i < kSeqs; ++i) {
    runtime::SequenceUsage u;
    u.request_id = ids[i];
    u.tenant = names[i];
    u.generated_tokens = 1;
    step.seqs.push_back(u);
  }
  std::vector<double> times;
  for (int s = 0; s < kSteps; ++s) {
    step.at = std::chrono::system_clock::now();
    const auto t0 = Clock::now();
    if (!observer->OnStep(step).ok()) return 1;
    times.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }
  const bench::SampleFigures figures = bench::Summarize(times);
  const double meter_median = figures.p50_us;
  const double meter_mean = figures.mean_us;
  const double step_us = DecodeStepMicros(dim, threads, kSeqs, 5);
  std::printf(
      "metering per step, %d sequences from 4 tenants: median %.1f us, mean %.1f us, p99 %.1f us\n",
      kSeqs, meter_median, meter_mean, figures.p99_us);
  std::printf("decode step, %d sequences, dim %d q8_0 model, %d threads: median %.0f us\n", kSeqs,
              dim, threads, step_us);
  if (step_us > 0) {
    std::printf("metering share of a step: %.2f%% (median), %.2f%% (mean); goal < 1%%\n",
                100.0 * meter_median / step_us, 100.0 * meter_mean / step_us);
  }
  // For scale: a GPU decode step at this batch takes tens of milliseconds.
  std::printf("for scale: %.2f%% of a 20 ms step, %.2f%% of a 50 ms step (median)\n",
              100.0 * meter_median / 20000.0, 100.0 * meter_median / 50000.0);
  observer.reset();
  store->reset();
  std::filesystem::remove_all(dir);

  // durability = "power", several instances at once: old path vs writer thread.
  constexpr int kPowerSeqs = 64;
  constexpr int kPowerSteps = 200;
  std::printf("durability=power, %d instances stepping at once, %d sequences a step, in %s:\n",
              instances, kPowerSeqs, power_dir.parent_path().c_str());
  for (int round = 0; round < 2; ++round) {  // twice each, alternating, to see the spread
    for (bool group : {false, true}) {
      const PowerFigures f = RunPower(power_dir, instances, group, kPowerSteps, kPowerSeqs);
      std::printf(
          "  %-34s OnStep p50 %8.1f us  p99 %8.1f us  steps/s %8.0f  fsyncs/s %7.0f  "
          "steps per fsync %5.2f\n",
          group ? "writer thread (group commit):" : "engine threads sync (old path):",
          f.on_step.p50_us, f.on_step.p99_us, f.steps_per_s, f.fsyncs_per_s, f.steps_per_fsync);
    }
  }
  return 0;
}
