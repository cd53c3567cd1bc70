// FinishRequest throughput and latency with N threads ending requests at once
// under durability = power (every write fsynced), on a real store in a fresh
// temp dir. Each call writes a metering-sized ledger record, deletes the
// request's inflight entry and merges its usage, as the daemon does.
//
//   finish_request_bench [REQUESTS_PER_THREAD] [THREADS...]   (default 200; 1 4 16 64)
//
// Prints requests/s and per-call p50/p99/max for each thread count; it never
// fails on time. Built only against the public MeterStore API, so the same
// source measures any version of the store (main's for the "before" figure).
#include <stdlib.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "storage/meter_store.h"
#include "tests/bench/bench_stats.h"

namespace {

using Clock = std::chrono::steady_clock;
using tokenmill::storage::Durability;
using tokenmill::storage::MeterStore;
using tokenmill::storage::MeterStoreOptions;
using tokenmill::storage::UsageCounters;
using tokenmill::storage::UsageDelta;

std::string Record(const std::string& id) {
  return "{\"request_id\":\"" + id +
         "\",\"tenant\":\"alpha\",\"model\":\"llama\",\"device\":\"cuda:0\",\"outcome\":\"stop\","
         "\"prompt_tokens\":512,\"cached_tokens\":128,\"generated_tokens\":256,\"device_ns\":"
         "812345678,\"energy_uj\":91234567,\"cost_nusd\":123456,\"revenue_nusd\":345678,"
         "\"preemptions\":0,\"finished_at_unix_ms\":1780000000000,\"duration_s\":4.25,"
         "\"ttft_s\":0.12}";
}

int Run(int threads, int per_thread) {
  char tmpl[] = "/tmp/tokenmill-finish-bench-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) return 1;
  const std::filesystem::path dir(tmpl);
  std::vector<std::vector<double>> samples(static_cast<size_t>(threads));
  double seconds = 0.0;
  {
    MeterStoreOptions options;
    options.dir = dir / "data";
    options.durability = Durability::kPower;
    auto store = MeterStore::Open(options);
    if (!store.ok()) {
      std::fprintf(stderr, "open: %s\n", store.status().ToString().c_str());
      return 1;
    }
    std::atomic<bool> failed{false};
    std::vector<std::thread> workers;
    const auto start = Clock::now();
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&, t] {
        UsageCounters counted;
        counted.requests = 1;
        const std::vector<UsageDelta> usage = {{{"alpha", "llama", "cuda:0", 480000}, counted}};
        for (int i = 0; i < per_thread; ++i) {
          const std::string id = "req-" + std::to_string(t) + "-" + std::to_string(i);
          const auto begin = Clock::now();
          auto done = (*store)->FinishRequest(id, Record(id), usage);
          const auto end = Clock::now();
          if (!done.ok() || !*done) failed = true;
          samples[static_cast<size_t>(t)].push_back(
              std::chrono::duration<double, std::micro>(end - begin).count());
        }
      });
    }
    for (std::thread& w : workers) w.join();
    seconds = std::chrono::duration<double>(Clock::now() - start).count();
    if (failed) std::fprintf(stderr, "some FinishRequest failed\n");
  }
  std::filesystem::remove_all(dir);
  std::vector<double> all;
  for (const auto& s : samples) all.insert(all.end(), s.begin(), s.end());
  const double requests = static_cast<double>(all.size());
  const tokenmill::bench::SampleFigures f = tokenmill::bench::Summarize(all);
  std::printf(
      "threads=%-3d requests=%-6.0f %9.0f req/s   p50 %8.0f us   p99 %8.0f us   max %8.0f us\n",
      threads, requests, requests / seconds, f.p50_us, f.p99_us, f.max_us);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  int per_thread = argc > 1 ? std::atoi(argv[1]) : 200;
  if (per_thread <= 0) per_thread = 200;
  std::vector<int> threads;
  for (int i = 2; i < argc; ++i) threads.push_back(std::atoi(argv[i]));
  if (threads.empty()) threads = {1, 4, 16, 64};
  std::printf("FinishRequest, durability=power, %d requests per thread\n", per_thread);
  for (int t : threads) {
    if (t <= 0) continue;
    if (int rc = Run(t, per_thread); rc != 0) return rc;
  }
  return 0;
}
