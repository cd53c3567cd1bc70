#include "devices/cpu/memory_bandwidth.h"

#include <immintrin.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "devices/cpu/kernels.h"

namespace tokenmill::devices::cpu {
namespace {

// Sums 64-byte lines with 4 independent accumulators so loads, not adds, are
// the limit, prefetching well ahead as the decode kernels do (a probe slower
// than the kernels would make the bound meaningless). The result is returned
// so the compiler keeps the loads.
__attribute__((target("avx2"))) float SumAvx2(const float* p, size_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  constexpr size_t kAhead = 1024;  // floats: 4 KiB ahead
  for (size_t i = 0; i + 32 <= n; i += 32) {
    _mm_prefetch(reinterpret_cast<const char*>(p + i + kAhead), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(p + i + kAhead + 16), _MM_HINT_T0);
    a0 = _mm256_add_ps(a0, _mm256_load_ps(p + i));
    a1 = _mm256_add_ps(a1, _mm256_load_ps(p + i + 8));
    a2 = _mm256_add_ps(a2, _mm256_load_ps(p + i + 16));
    a3 = _mm256_add_ps(a3, _mm256_load_ps(p + i + 24));
  }
  __m256 s = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
  float out[8];
  _mm256_storeu_ps(out, s);
  return out[0] + out[1] + out[2] + out[3] + out[4] + out[5] + out[6] + out[7];
}

float SumScalar(const float* p, size_t n) {
  float a[8] = {};
  for (size_t i = 0; i + 8 <= n; i += 8) {
    for (int j = 0; j < 8; ++j) a[j] += p[i + j];
  }
  return a[0] + a[1] + a[2] + a[3] + a[4] + a[5] + a[6] + a[7];
}

struct FreeDeleter {
  void operator()(float* p) const { std::free(p); }
};

}  // namespace

BandwidthResult MeasureReadBandwidth(int threads, size_t bytes, int repetitions) {
  threads = std::max(1, threads);
  size_t n =
      bytes / sizeof(float) / 32 / static_cast<size_t>(threads) * 32 * static_cast<size_t>(threads);
  // 2 MiB aligned and huge-page backed where the kernel allows, so TLB misses
  // do not understate the bandwidth.
  constexpr size_t kHuge = size_t{2} << 20;
  size_t alloc_bytes = (n * sizeof(float) + kHuge - 1) / kHuge * kHuge;
  std::unique_ptr<float, FreeDeleter> buffer(
      static_cast<float*>(std::aligned_alloc(kHuge, alloc_bytes)));
  madvise(buffer.get(), alloc_bytes, MADV_HUGEPAGE);
  // Touch every page with non-zero data so reads hit real memory, not the zero page.
  for (size_t i = 0; i < n; ++i) buffer.get()[i] = static_cast<float>(i & 7);
  bool avx2 = DetectIsa() != Isa::kScalar;
  size_t per_thread = n / static_cast<size_t>(threads);
  BandwidthResult result;
  result.buffer_bytes = n * sizeof(float);
  result.threads = threads;
  std::atomic<float> sink{0.0f};
  for (int rep = 0; rep < repetitions; ++rep) {
    std::atomic<int> ready{0};
    std::atomic<bool> go{false};
    std::vector<std::thread> pool;
    std::chrono::steady_clock::time_point start;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        const float* p = buffer.get() + per_thread * static_cast<size_t>(t);
        ready.fetch_add(1);
        while (!go.load(std::memory_order_acquire)) {
        }
        float s = avx2 ? SumAvx2(p, per_thread) : SumScalar(p, per_thread);
        sink.store(s, std::memory_order_relaxed);
      });
    }
    while (ready.load() < threads) {
    }
    start = std::chrono::steady_clock::now();
    go.store(true, std::memory_order_release);
    for (auto& th : pool) th.join();
    double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    result.bytes_per_second =
        std::max(result.bytes_per_second, static_cast<double>(result.buffer_bytes) / seconds);
  }
  return result;
}

}  // namespace tokenmill::devices::cpu
