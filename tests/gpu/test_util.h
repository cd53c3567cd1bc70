// Helpers shared by the GPU tests and the GPU benchmark: RAII device buffers
// and streams, the GPU probe, deterministic random numbers, host matrices in
// the DeviceMatrix layout, poison checks, and the relative-error comparison
// with the tolerances every test states.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "devices/cuda/core/device_matrix.h"
#include "devices/cuda/core/status.h"
#include "tests/gpu/gpu_test.h"

namespace tokenmill::gpu_test {

// A quiet NaN, for poisoning outputs the kernels must overwrite.
inline constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

using devices::cuda::core::DeviceMatrix;
using devices::cuda::core::GpuCode;
using devices::cuda::core::GpuStatus;
using devices::cuda::core::WeightType;

// Whether GPU `device` can be used: ok with "NAME, sm_XY, N GiB", or the
// CUDA runtime's reason (no driver, no device).
struct GpuProbe {
  bool ok = false;
  std::string description;
  std::string error;
};
GpuProbe ProbeGpu(int device);

// Device memory owned by the test; freed on destruction.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer() { Free(); }
  DeviceBuffer(DeviceBuffer&& other) noexcept
      : ptr_(std::exchange(other.ptr_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    if (this != &other) {
      Free();
      ptr_ = std::exchange(other.ptr_, nullptr);
      bytes_ = std::exchange(other.bytes_, 0);
    }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  // Replaces the buffer with `bytes` new bytes (at least 1, so that even an
  // empty array has an address).
  cudaError_t Allocate(size_t bytes);
  cudaError_t Upload(const void* host, size_t bytes, size_t offset = 0);
  cudaError_t Download(void* host, size_t bytes, size_t offset = 0) const;
  // Sets every byte (kPoisonByte: NaN in f32, f16 and bf16). Synchronous.
  cudaError_t Fill(uint8_t byte);

  void* get() const { return ptr_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  size_t bytes() const { return bytes_; }
  uint64_t address(size_t offset = 0) const { return reinterpret_cast<uint64_t>(ptr_) + offset; }

 private:
  void Free();
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// Allocates `out` for host.size() elements and copies them there.
template <typename T>
cudaError_t UploadVector(const std::vector<T>& host, DeviceBuffer* out) {
  if (cudaError_t e = out->Allocate(host.size() * sizeof(T)); e != cudaSuccess) return e;
  return out->Upload(host.data(), host.size() * sizeof(T));
}

// Copies the first `count` elements of `buffer` into `out`.
template <typename T>
cudaError_t DownloadVector(const DeviceBuffer& buffer, size_t count, std::vector<T>* out) {
  out->resize(count);
  return buffer.Download(out->data(), count * sizeof(T));
}

// A CUDA stream owned by the test. A blocking stream, so that launches on it
// are ordered after the synchronous cudaMemcpy/cudaMemset of DeviceBuffer
// (legacy default stream) and those after the launches.
class CudaStream {
 public:
  CudaStream() = default;
  ~CudaStream() {
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }
  CudaStream(const CudaStream&) = delete;
  CudaStream& operator=(const CudaStream&) = delete;

  cudaError_t Create() { return cudaStreamCreate(&stream_); }
  cudaStream_t get() const { return stream_; }

 private:
  cudaStream_t stream_ = nullptr;
};

// The launch error of the last kernel, else waits for `stream` and returns
// the first execution error (a fault inside a kernel).
cudaError_t Finish(cudaStream_t stream);

CheckResult CheckCuda(cudaError_t error, const char* text);
CheckResult CheckOk(const GpuStatus& status, const char* text);
CheckResult CheckCode(const GpuStatus& status, GpuCode expected, const char* text);

// Deterministic pseudo-random numbers (SplitMix64): the same on every
// machine, so a failing case reproduces.
class Random {
 public:
  explicit Random(uint64_t seed) : state_(seed * 0xD1B54A32D192ED03ull + 1) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [lo, hi), from 24 random bits (exact in float).
  float Uniform(float lo, float hi) {
    const auto bits = static_cast<uint32_t>(Next() >> 40);
    return lo + (hi - lo) * (static_cast<float>(bits) * (1.0f / 16777216.0f));
  }
  // Uniform in [0, n), n > 0.
  uint32_t Below(uint32_t n) { return static_cast<uint32_t>(Next() % n); }
  template <typename T>
  void Shuffle(std::vector<T>& values) {
    for (size_t i = values.size(); i > 1; --i)
      std::swap(values[i - 1], values[Below(static_cast<uint32_t>(i))]);
  }

 private:
  uint64_t state_;
};

// n floats uniform in [-amplitude, amplitude).
std::vector<float> RandomFloats(size_t n, float amplitude, uint64_t seed);

// Poison: every output buffer is filled with kPoisonByte before a launch, so
// an element the kernel did not write reads as NaN (and as exactly these
// bits where nothing may be written).
inline constexpr uint8_t kPoisonByte = 0xFF;
inline constexpr uint32_t kPoisonF32Bits = 0xFFFFFFFFu;
inline constexpr uint16_t kPoison16Bits = 0xFFFFu;
bool IsPoison(float value);

// Tolerances on relative error = max |gpu - ref| / max |ref| over a whole
// output (one matmul result, one logits row), ref computed in f64 from the
// same (exactly decoded) weights:
// f32 weights: summation order only.
inline constexpr double kTolF32 = 1e-4;
// f16 weights: exact in f32, but cuBLAS multiplies f16-rounded activations.
inline constexpr double kTolF16 = 1e-3;
// bf16 weights: cuBLAS multiplies bf16-rounded activations (8-bit mantissa).
inline constexpr double kTolBf16 = 1e-2;
// Q8_0 dequantized exactly (f16 scale x int8 in f32) times f32 activations
// (the GEMV path); cuBLAS runs Q8_0 as bf16 x bf16, so kTolBf16 there.
inline constexpr double kTolQ8_0 = 1e-3;
// Kernels that read f32 activations only (norms, RoPE, attention, SiLU):
// f32 arithmetic against f64.
inline constexpr double kTolF32Math = 1e-5;

// The tolerance of a GEMV (exact weights, f32 activations) and of a cuBLAS
// matmul (activations, and Q8_0 weights, rounded to 16 bits) of `type`.
double GemvTolerance(WeightType type);
double GemmTolerance(WeightType type);

// gpu vs ref element by element. `floor` is a least denominator: an output
// of a few elements can have a tiny max |ref| by chance, so matmul tests pass
// the typical size of the sums (the L2 norm of their terms); with many
// elements max |ref| is well above it and the plain definition holds.
struct Comparison {
  double max_error = 0.0;  // max |gpu - ref| over finite gpu elements
  double max_ref = 0.0;
  double relative = 0.0;  // max_error / max(max_ref, floor)
  size_t worst = 0;       // index of max_error
  size_t non_finite = 0;  // NaN (poison left unwritten) or infinite gpu elements
  size_t first_non_finite = 0;
};
Comparison Compare(std::span<const float> gpu, std::span<const double> ref, double floor = 0.0);
CheckResult CheckClose(std::span<const float> gpu, std::span<const double> ref, double tolerance,
                       double floor = 0.0);
CheckResult CheckClose(std::span<const float> gpu, std::span<const float> ref, double tolerance);

// A weight matrix on the host, in the layout DeviceMatrix reads (Q8_0 split
// into int8 quants and f16 scales), with the exact f32 value of every
// element for the reference.
struct HostMatrix {
  WeightType type = WeightType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;
  std::vector<uint8_t> data;     // rows x cols elements of `type` (Q8_0: int8 quants)
  std::vector<uint16_t> scales;  // Q8_0: rows x cols / 32 f16 scales
  std::vector<float> values;     // rows x cols, what the kernels must read
};
// Values uniform in [-amplitude, amplitude), rounded to `type` (cols a
// multiple of 32 for Q8_0).
HostMatrix MakeHostMatrix(WeightType type, int64_t rows, int64_t cols, float amplitude,
                          uint64_t seed);

// A HostMatrix uploaded to the device; `matrix` points into the buffers.
struct UploadedMatrix {
  DeviceBuffer data;
  DeviceBuffer scales;
  DeviceMatrix matrix;
};
cudaError_t UploadMatrix(const HostMatrix& host, UploadedMatrix* out);

}  // namespace tokenmill::gpu_test

// Assertions on CUDA runtime results and GpuStatus values.
#define GPU_ASSERT_CUDA(expr) GPU_ASSERT_CHECK(::tokenmill::gpu_test::CheckCuda((expr), #expr))
#define GPU_EXPECT_CUDA(expr) GPU_EXPECT_CHECK(::tokenmill::gpu_test::CheckCuda((expr), #expr))
#define GPU_ASSERT_OK(expr) GPU_ASSERT_CHECK(::tokenmill::gpu_test::CheckOk((expr), #expr))
#define GPU_EXPECT_OK(expr) GPU_EXPECT_CHECK(::tokenmill::gpu_test::CheckOk((expr), #expr))
#define GPU_EXPECT_CODE(expr, code) \
  GPU_EXPECT_CHECK(::tokenmill::gpu_test::CheckCode((expr), (code), #expr))
#define GPU_EXPECT_CLOSE(gpu, ref, tolerance) \
  GPU_EXPECT_CHECK(::tokenmill::gpu_test::CheckClose((gpu), (ref), (tolerance)))
