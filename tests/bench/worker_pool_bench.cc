// The cost of one empty ParallelFor on the CPU executor's worker pool (the
// executor makes about ten per layer). A figure, not a test: the machine is
// shared.
#include <benchmark/benchmark.h>

#include <atomic>
#include <cstdint>

#include "devices/cpu/worker_pool.h"

namespace tokenmill::devices::cpu {
namespace {

void BM_EmptyParallelFor(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  WorkerPool pool(threads);
  std::atomic<int64_t> sink{0};
  for (auto _ : state) {
    pool.ParallelFor(threads, [&](int64_t begin, int64_t, int32_t) {
      sink.fetch_add(begin, std::memory_order_relaxed);
    });
  }
  benchmark::DoNotOptimize(sink.load());
}
BENCHMARK(BM_EmptyParallelFor)->Arg(1)->Arg(2)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace tokenmill::devices::cpu

BENCHMARK_MAIN();
