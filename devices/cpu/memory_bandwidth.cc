#include "devices/cpu/memory_bandwidth.h"

#include <immintrin.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <thread>

#include "devices/cpu/kernels.h"

namespace tokenmill::devices::cpu {
namespace {

// STREAM-like read: 32-byte loads into 4 independent accumulators so loads,
// not adds, are the limit; only the hardware prefetcher runs ahead, as in
// STREAM. The result is returned so the compiler keeps the loads.
__attribute__((target("avx2"))) float SumAvx2(const float* p, size_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t i = 0; i + 32 <= n; i += 32) {
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

__attribute__((target("avx2"))) void CopyAvx2(float* __restrict a, const float* __restrict b,
                                              size_t n) {
  for (size_t i = 0; i + 8 <= n; i += 8) _mm256_store_ps(a + i, _mm256_load_ps(b + i));
}

__attribute__((target("avx2"))) void TriadAvx2(float* __restrict a, const float* __restrict b,
                                               const float* __restrict c, float s, size_t n) {
  const __m256 vs = _mm256_set1_ps(s);
  for (size_t i = 0; i + 8 <= n; i += 8) {
    _mm256_store_ps(a + i,
                    _mm256_add_ps(_mm256_load_ps(b + i), _mm256_mul_ps(vs, _mm256_load_ps(c + i))));
  }
}

void CopyScalar(float* __restrict a, const float* __restrict b, size_t n) {
  for (size_t i = 0; i < n; ++i) a[i] = b[i];
}

void TriadScalar(float* __restrict a, const float* __restrict b, const float* __restrict c, float s,
                 size_t n) {
  for (size_t i = 0; i < n; ++i) a[i] = b[i] + s * c[i];
}

struct FreeDeleter {
  void operator()(float* p) const { std::free(p); }
};

// 2 MiB aligned and huge-page backed where the kernel allows, so TLB misses
// do not understate the bandwidth; every page written with non-zero data so
// reads hit real memory, not the zero page.
std::unique_ptr<float, FreeDeleter> AllocateTouched(size_t n) {
  constexpr size_t kHuge = size_t{2} << 20;
  size_t alloc_bytes = (n * sizeof(float) + kHuge - 1) / kHuge * kHuge;
  std::unique_ptr<float, FreeDeleter> buffer(
      static_cast<float*>(std::aligned_alloc(kHuge, alloc_bytes)));
  madvise(buffer.get(), alloc_bytes, MADV_HUGEPAGE);
  for (size_t i = 0; i < n; ++i) buffer.get()[i] = static_cast<float>(i & 7);
  return buffer;
}

// Runs body(t) on `threads` threads released together; returns the seconds
// from the release until the last one finished.
double TimeParallel(int threads, const std::function<void(int)>& body) {
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      ready.fetch_add(1);
      while (!go.load(std::memory_order_acquire)) {
      }
      body(t);
    });
  }
  while (ready.load() < threads) {
  }
  auto start = std::chrono::steady_clock::now();
  go.store(true, std::memory_order_release);
  for (auto& th : pool) th.join();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Elements per thread, a multiple of 32 floats (one AVX2 read iteration).
size_t PerThread(size_t bytes, int threads) {
  return bytes / sizeof(float) / 32 / static_cast<size_t>(threads) * 32;
}

}  // namespace

double BandwidthSamples::Median() const {
  if (bytes_per_second.empty()) return 0.0;
  std::vector<double> v = bytes_per_second;
  std::sort(v.begin(), v.end());
  size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

double BandwidthSamples::Min() const {
  return bytes_per_second.empty()
             ? 0.0
             : *std::min_element(bytes_per_second.begin(), bytes_per_second.end());
}

double BandwidthSamples::Max() const {
  return bytes_per_second.empty()
             ? 0.0
             : *std::max_element(bytes_per_second.begin(), bytes_per_second.end());
}

BandwidthSamples MeasureReadBandwidth(int threads, size_t bytes, int repetitions) {
  threads = std::max(1, threads);
  const size_t per_thread = PerThread(bytes, threads);
  const size_t n = per_thread * static_cast<size_t>(threads);
  auto buffer = AllocateTouched(n);
  const bool avx2 = DetectIsa() != Isa::kScalar;
  BandwidthSamples result;
  result.buffer_bytes = n * sizeof(float);
  result.threads = threads;
  std::atomic<float> sink{0.0f};
  for (int rep = 0; rep < repetitions; ++rep) {
    double seconds = TimeParallel(threads, [&](int t) {
      const float* p = buffer.get() + per_thread * static_cast<size_t>(t);
      sink.store(avx2 ? SumAvx2(p, per_thread) : SumScalar(p, per_thread),
                 std::memory_order_relaxed);
    });
    result.bytes_per_second.push_back(static_cast<double>(result.buffer_bytes) / seconds);
  }
  return result;
}

StreamFigures MeasureStream(int threads, size_t array_bytes, int repetitions) {
  threads = std::max(1, threads);
  const size_t per_thread = PerThread(array_bytes, threads);
  const size_t n = per_thread * static_cast<size_t>(threads);
  auto a = AllocateTouched(n), b = AllocateTouched(n), c = AllocateTouched(n);
  const bool avx2 = DetectIsa() != Isa::kScalar;
  StreamFigures figures;
  figures.array_bytes = n * sizeof(float);
  const double bytes = static_cast<double>(figures.array_bytes);
  for (int rep = 0; rep < repetitions; ++rep) {
    double copy = TimeParallel(threads, [&](int t) {
      size_t off = per_thread * static_cast<size_t>(t);
      if (avx2) {
        CopyAvx2(a.get() + off, b.get() + off, per_thread);
      } else {
        CopyScalar(a.get() + off, b.get() + off, per_thread);
      }
    });
    double triad = TimeParallel(threads, [&](int t) {
      size_t off = per_thread * static_cast<size_t>(t);
      if (avx2) {
        TriadAvx2(a.get() + off, b.get() + off, c.get() + off, 3.0f, per_thread);
      } else {
        TriadScalar(a.get() + off, b.get() + off, c.get() + off, 3.0f, per_thread);
      }
    });
    figures.copy_bytes_per_second = std::max(figures.copy_bytes_per_second, 2 * bytes / copy);
    figures.triad_bytes_per_second = std::max(figures.triad_bytes_per_second, 3 * bytes / triad);
  }
  return figures;
}

}  // namespace tokenmill::devices::cpu
