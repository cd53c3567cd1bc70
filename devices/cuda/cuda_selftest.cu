#include <cuda_runtime.h>

#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "devices/cuda/cuda_selftest.h"

namespace tokenmill::devices::cuda {
namespace {

constexpr int kThreadsPerBlock = 256;
constexpr int kCopyRepeats = 3;

// The value of 32-bit word `index`: a multiplicative hash, so a copy that
// drops, repeats or reorders 16-byte vectors shows up as a mismatch.
__host__ __device__ inline uint32_t PatternWord(uint64_t index) {
  return static_cast<uint32_t>(index * 2654435761u) ^ 0x9e3779b9u;
}

__global__ void FillKernel(uint4* out, size_t vectors) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < vectors;
       i += stride) {
    const uint64_t word = 4 * static_cast<uint64_t>(i);
    out[i] = make_uint4(PatternWord(word), PatternWord(word + 1), PatternWord(word + 2),
                        PatternWord(word + 3));
  }
}

// One 16-byte load and one 16-byte store per element: the access width that
// reaches full HBM bandwidth.
__global__ void CopyKernel(const uint4* __restrict__ in, uint4* __restrict__ out, size_t vectors) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < vectors;
       i += stride) {
    out[i] = in[i];
  }
}

absl::Status CudaStatus(const char* call, cudaError_t error) {
  if (error == cudaSuccess) return absl::OkStatus();
  const std::string message =
      absl::StrCat(call, ": ", cudaGetErrorString(error), " (", cudaGetErrorName(error), ")");
  switch (error) {
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
      return absl::UnavailableError(message);
    case cudaErrorInvalidDevice:
      return absl::InvalidArgumentError(message);
    case cudaErrorMemoryAllocation:
      return absl::ResourceExhaustedError(message);
    default:
      return absl::InternalError(message);
  }
}

struct DeviceMemoryDeleter {
  void operator()(void* p) const { cudaFree(p); }
};
using DeviceBuffer = std::unique_ptr<uint4, DeviceMemoryDeleter>;

struct EventDeleter {
  void operator()(cudaEvent_t e) const { cudaEventDestroy(e); }
};
using Event = std::unique_ptr<CUevent_st, EventDeleter>;

absl::StatusOr<DeviceBuffer> Allocate(size_t bytes) {
  void* p = nullptr;
  if (absl::Status s = CudaStatus("cudaMalloc", cudaMalloc(&p, bytes)); !s.ok()) return s;
  return DeviceBuffer(static_cast<uint4*>(p));
}

absl::StatusOr<Event> CreateEvent() {
  cudaEvent_t e = nullptr;
  if (absl::Status s = CudaStatus("cudaEventCreate", cudaEventCreate(&e)); !s.ok()) return s;
  return Event(e);
}

// Milliseconds between two recorded events, after waiting for the second.
absl::StatusOr<float> ElapsedMs(const Event& start, const Event& stop) {
  if (absl::Status s = CudaStatus("cudaEventSynchronize", cudaEventSynchronize(stop.get()));
      !s.ok()) {
    return s;
  }
  float ms = 0.0f;
  if (absl::Status s =
          CudaStatus("cudaEventElapsedTime", cudaEventElapsedTime(&ms, start.get(), stop.get()));
      !s.ok()) {
    return s;
  }
  return ms;
}

double GbPerSecond(double bytes, float ms) { return ms > 0.0f ? bytes / (ms * 1e6) : 0.0; }

}  // namespace

#define TOKENMILL_CUDA_RETURN_IF_ERROR(call)                           \
  if (absl::Status status_ = CudaStatus(#call, call); !status_.ok()) { \
    return status_;                                                    \
  }

absl::StatusOr<CudaSelfTestResult> RunCudaSelfTest(int ordinal, size_t bytes) {
  const size_t vectors = bytes / sizeof(uint4);
  if (vectors == 0) return absl::InvalidArgumentError("self-test needs at least 16 bytes");
  CudaSelfTestResult result;
  result.ordinal = ordinal;
  result.bytes = vectors * sizeof(uint4);

  int count = 0;
  TOKENMILL_CUDA_RETURN_IF_ERROR(cudaGetDeviceCount(&count));
  if (ordinal < 0 || ordinal >= count) {
    return absl::InvalidArgumentError(
        absl::StrCat("no CUDA device ", ordinal, "; ", count, " present"));
  }
  TOKENMILL_CUDA_RETURN_IF_ERROR(cudaSetDevice(ordinal));
  cudaDeviceProp props{};
  TOKENMILL_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&props, ordinal));
  result.device_name = props.name;

  absl::StatusOr<DeviceBuffer> src = Allocate(result.bytes);
  if (!src.ok()) return src.status();
  absl::StatusOr<DeviceBuffer> dst = Allocate(result.bytes);
  if (!dst.ok()) return dst.status();
  absl::StatusOr<Event> start = CreateEvent();
  if (!start.ok()) return start.status();
  absl::StatusOr<Event> filled = CreateEvent();
  if (!filled.ok()) return filled.status();
  absl::StatusOr<Event> copied = CreateEvent();
  if (!copied.ok()) return copied.status();

  // Enough blocks to fill every SM several times over; the grid-stride loop
  // covers the rest.
  const size_t wanted = (vectors + kThreadsPerBlock - 1) / kThreadsPerBlock;
  const size_t cap = static_cast<size_t>(props.multiProcessorCount) * 32;
  const unsigned blocks = static_cast<unsigned>(wanted < cap ? wanted : cap);

  // Clear the destination so a copy kernel that never ran cannot pass.
  TOKENMILL_CUDA_RETURN_IF_ERROR(cudaMemset(dst->get(), 0, result.bytes));
  // The first launch pays for module loading; keep it out of the timing.
  FillKernel<<<blocks, kThreadsPerBlock>>>(src->get(), vectors);
  TOKENMILL_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  CopyKernel<<<blocks, kThreadsPerBlock>>>(src->get(), dst->get(), vectors);
  TOKENMILL_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  TOKENMILL_CUDA_RETURN_IF_ERROR(cudaMemset(dst->get(), 0, result.bytes));

  TOKENMILL_CUDA_RETURN_IF_ERROR(cudaEventRecord(start->get()));
  FillKernel<<<blocks, kThreadsPerBlock>>>(src->get(), vectors);
  TOKENMILL_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  TOKENMILL_CUDA_RETURN_IF_ERROR(cudaEventRecord(filled->get()));
  for (int i = 0; i < kCopyRepeats; ++i) {
    CopyKernel<<<blocks, kThreadsPerBlock>>>(src->get(), dst->get(), vectors);
    TOKENMILL_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  }
  TOKENMILL_CUDA_RETURN_IF_ERROR(cudaEventRecord(copied->get()));

  absl::StatusOr<float> fill_ms = ElapsedMs(*start, *filled);
  if (!fill_ms.ok()) return fill_ms.status();
  absl::StatusOr<float> copy_ms = ElapsedMs(*filled, *copied);
  if (!copy_ms.ok()) return copy_ms.status();
  result.fill_gb_per_s = GbPerSecond(static_cast<double>(result.bytes), *fill_ms);
  result.copy_gb_per_s =
      GbPerSecond(2.0 * kCopyRepeats * static_cast<double>(result.bytes), *copy_ms);

  std::vector<uint32_t> host(result.bytes / sizeof(uint32_t));
  TOKENMILL_CUDA_RETURN_IF_ERROR(
      cudaMemcpy(host.data(), dst->get(), result.bytes, cudaMemcpyDeviceToHost));
  for (size_t i = 0; i < host.size(); ++i) {
    if (host[i] != PatternWord(i)) ++result.mismatches;
  }
  result.data_ok = result.mismatches == 0;
  return result;
}

#undef TOKENMILL_CUDA_RETURN_IF_ERROR

}  // namespace tokenmill::devices::cuda
