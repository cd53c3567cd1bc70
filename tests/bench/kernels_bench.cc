// MatMulRows throughput on one thread: a 4096 x 4096 weight of every type at
// M = 1, 2, 4, 6, 8, 16, 32 activation rows, reported as weight bytes streamed per
// second, next to a one-thread memory read baseline (summing a 1 GiB f32
// array with wide loads) so the fraction of bandwidth is visible. A 4096 x
// 4096 Q8_0 matrix (18 MB) fits a large L3, so those figures show compute
// speed; BM_MatMulRowsStream runs M = 1 over 256 MiB of weights on 1 and 2
// threads, which is what batch-1 decode sees, and K-quants at M = 2..8 on
// one thread (where their batch kernels' thresholds lie).
// BM_PrepareActivations times the activation quantization that quantized
// matmuls start with. TOKENMILL_CPU_ISA=scalar|avx2 caps the ISA for comparisons.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "devices/cpu/kernels.h"
#include "devices/model_spec.h"

namespace tokenmill::devices::cpu {
namespace {

constexpr int64_t kDim = 4096;

#if defined(__x86_64__)
__attribute__((target("avx2"))) float SumAvx2(const float* p, size_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t i = 0; i < n; i += 32) {
    a0 = _mm256_add_ps(a0, _mm256_load_ps(p + i));
    a1 = _mm256_add_ps(a1, _mm256_load_ps(p + i + 8));
    a2 = _mm256_add_ps(a2, _mm256_load_ps(p + i + 16));
    a3 = _mm256_add_ps(a3, _mm256_load_ps(p + i + 24));
  }
  const __m256 s = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, s);
  return lanes[0] + lanes[1] + lanes[2] + lanes[3] + lanes[4] + lanes[5] + lanes[6] + lanes[7];
}
#endif

float SumScalar(const float* p, size_t n) {
  float acc[8] = {};
  for (size_t i = 0; i < n; i += 8) {
    for (int j = 0; j < 8; ++j) acc[j] += p[i + j];
  }
  return acc[0] + acc[1] + acc[2] + acc[3] + acc[4] + acc[5] + acc[6] + acc[7];
}

void BM_MemoryReadBaseline(benchmark::State& state) {
  const size_t n = size_t{1} << 28;  // 1 GiB of f32
  std::unique_ptr<float, decltype(&std::free)> data(
      static_cast<float*>(std::aligned_alloc(64, n * sizeof(float))), &std::free);
  for (size_t i = 0; i < n; ++i) data.get()[i] = 1.0f;  // fault every page in
  for (auto _ : state) {
#if defined(__x86_64__)
    const float s = DetectIsa() >= Isa::kAvx2 ? SumAvx2(data.get(), n) : SumScalar(data.get(), n);
#else
    const float s = SumScalar(data.get(), n);
#endif
    benchmark::DoNotOptimize(s);
  }
  state.counters["bytes_per_s"] = benchmark::Counter(
      static_cast<double>(n * sizeof(float)) * static_cast<double>(state.iterations()),
      benchmark::Counter::kIsRate);
}
BENCHMARK(BM_MemoryReadBaseline)->Unit(benchmark::kMillisecond)->UseRealTime();

struct Weights {
  std::vector<uint8_t> bytes;
  TensorView view;
};

Weights MakeWeights(TensorType type) {
  Weights w;
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> row(kDim);
  const size_t row_bytes = TensorBytes(type, kDim);
  w.bytes.resize(row_bytes * kDim);
  for (int64_t r = 0; r < kDim; ++r) {
    for (float& v : row) v = dist(rng);
    QuantizeRow(type, row.data(), kDim, w.bytes.data() + r * row_bytes);
  }
  w.view = TensorView{.name = "w",
                      .type = type,
                      .shape = {kDim, kDim},
                      .data = w.bytes.data(),
                      .bytes = w.bytes.size()};
  return w;
}

void BM_MatMulRows(benchmark::State& state) {
  const TensorType type = static_cast<TensorType>(state.range(0));
  const int64_t m = state.range(1);
  const Isa isa = DetectIsa();
  const Weights w = MakeWeights(type);
  std::vector<float> x(static_cast<size_t>(m * kDim));
  std::mt19937 rng(2);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (float& v : x) v = dist(rng);
  std::vector<uint8_t> scratch(ActivationScratchBytes(type, m, kDim));
  std::vector<float> y(static_cast<size_t>(m * kDim));
  for (auto _ : state) {
    PrepareActivationRows(isa, type, x.data(), kDim, 0, m, scratch.data());
    const Activations act = BindActivations(type, x.data(), m, kDim, scratch.data());
    MatMulRows(isa, w.view, 0, kDim, act, y.data(), kDim);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.SetLabel(std::string(TensorTypeName(type)) + " " + IsaName(isa));
  state.counters["weight_bytes_per_s"] = benchmark::Counter(
      static_cast<double>(w.bytes.size()) * static_cast<double>(state.iterations()),
      benchmark::Counter::kIsRate);
  state.counters["tokens_per_s"] =
      benchmark::Counter(static_cast<double>(m) * static_cast<double>(state.iterations()),
                         benchmark::Counter::kIsRate);
}
BENCHMARK(BM_MatMulRows)
    ->ArgsProduct(
        {{static_cast<int64_t>(TensorType::kF32), static_cast<int64_t>(TensorType::kF16),
          static_cast<int64_t>(TensorType::kBF16), static_cast<int64_t>(TensorType::kQ8_0),
          static_cast<int64_t>(TensorType::kQ4_0), static_cast<int64_t>(TensorType::kQ4_K),
          static_cast<int64_t>(TensorType::kQ5_K), static_cast<int64_t>(TensorType::kQ6_K)},
         {1, 2, 4, 6, 8, 16, 32}})
    ->ArgNames({"type", "M"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// Weights of `type` filling about 256 MiB (rows of kDim columns): more than
// any L3, so every pass streams from memory. Built once per type (Google
// Benchmark calls a benchmark function several times).
const Weights& StreamWeights(TensorType type) {
  static std::vector<std::unique_ptr<Weights>> cache(64);
  std::unique_ptr<Weights>& w = cache[static_cast<size_t>(type)];
  if (w != nullptr) return *w;
  const Weights tile = MakeWeights(type);  // kDim rows, replicated
  const int64_t rows = ((int64_t{256} << 20) / static_cast<int64_t>(tile.bytes.size())) * kDim;
  w = std::make_unique<Weights>();
  w->bytes.resize(tile.bytes.size() * static_cast<size_t>(rows / kDim));
  for (size_t off = 0; off < w->bytes.size(); off += tile.bytes.size()) {
    std::copy(tile.bytes.begin(), tile.bytes.end(), w->bytes.begin() + static_cast<ptrdiff_t>(off));
  }
  w->view = TensorView{.name = "w",
                       .type = type,
                       .shape = {rows, kDim},
                       .data = w->bytes.data(),
                       .bytes = w->bytes.size()};
  return *w;
}

void BM_MatMulRowsStream(benchmark::State& state) {
  const TensorType type = static_cast<TensorType>(state.range(0));
  const int threads = static_cast<int>(state.range(1));
  const int64_t m = state.range(2);
  const Isa isa = DetectIsa();
  const Weights& w = StreamWeights(type);
  const int64_t rows = w.view.rows();
  std::vector<float> x(static_cast<size_t>(m * kDim));
  std::mt19937 rng(2);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (float& v : x) v = dist(rng);
  std::vector<uint8_t> scratch(ActivationScratchBytes(type, m, kDim));
  std::vector<float> y(static_cast<size_t>(m * rows));
  for (auto _ : state) {
    PrepareActivationRows(isa, type, x.data(), kDim, 0, m, scratch.data());
    const Activations act = BindActivations(type, x.data(), m, kDim, scratch.data());
    if (threads == 1) {
      MatMulRows(isa, w.view, 0, rows, act, y.data(), rows);
    } else {
      // Contiguous halves, as the executor's worker pool splits rows.
      std::thread other([&] { MatMulRows(isa, w.view, rows / 2, rows, act, y.data(), rows); });
      MatMulRows(isa, w.view, 0, rows / 2, act, y.data(), rows);
      other.join();
    }
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.SetLabel(std::string(TensorTypeName(type)) + " " + IsaName(isa));
  state.counters["weight_bytes_per_s"] = benchmark::Counter(
      static_cast<double>(w.bytes.size()) * static_cast<double>(state.iterations()),
      benchmark::Counter::kIsRate);
}
BENCHMARK(BM_MatMulRowsStream)
    ->ArgsProduct({{static_cast<int64_t>(TensorType::kF16), static_cast<int64_t>(TensorType::kQ8_0),
                    static_cast<int64_t>(TensorType::kQ4_0),
                    static_cast<int64_t>(TensorType::kQ4_K),
                    static_cast<int64_t>(TensorType::kQ6_K)},
                   {1, 2},
                   {1}})
    ->ArgNames({"type", "threads", "M"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
// K-quants at small batches with the weights streaming from memory, where
// the batch kernels' thresholds lie (TOKENMILL_CPU_KQUANT_BATCH=off for the
// per-row kernels).
BENCHMARK(BM_MatMulRowsStream)
    ->ArgsProduct({{static_cast<int64_t>(TensorType::kQ4_K),
                    static_cast<int64_t>(TensorType::kQ5_K),
                    static_cast<int64_t>(TensorType::kQ6_K)},
                   {1},
                   {2, 4, 6, 8}})
    ->ArgNames({"type", "threads", "M"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// PrepareActivationRows alone: 16 rows of 4096 values into the Q8_0 part
// (Q8_0/Q4_0 weights) and into both parts (a Q4_K_M file's matmuls), one
// thread; values per second.
void BM_PrepareActivations(benchmark::State& state) {
  const uint32_t formats = static_cast<uint32_t>(state.range(0));
  constexpr int64_t kRows = 16;
  std::vector<float> x(static_cast<size_t>(kRows * kDim));
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (float& v : x) v = dist(rng);
  std::vector<uint8_t> scratch(ActivationScratchBytes(TensorType::kQ4_K, kRows, kDim));
  for (auto _ : state) {
    PrepareActivationRows(DetectIsa(), formats, x.data(), kDim, 0, kRows, scratch.data());
    benchmark::DoNotOptimize(scratch.data());
    benchmark::ClobberMemory();
  }
  state.SetLabel(formats == kActivationQ8_0 ? "q8_0" : "q8_0+q8_k");
  state.counters["values_per_s"] = benchmark::Counter(
      static_cast<double>(kRows * kDim) * static_cast<double>(state.iterations()),
      benchmark::Counter::kIsRate);
}
BENCHMARK(BM_PrepareActivations)
    ->ArgName("formats")
    ->Arg(kActivationQ8_0)
    ->Arg(kActivationQ8_0 | kActivationQ8K)
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

}  // namespace
}  // namespace tokenmill::devices::cpu

BENCHMARK_MAIN();
