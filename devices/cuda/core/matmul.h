// Weight matmuls on the GPU: y = W x for a few activation rows (decode GEMV
// that streams W at full memory bandwidth) or many (cuBLAS GEMM), with every
// weight type of DeviceMatrix; plus the helpers they need (activation
// conversion, Q8_0 dequantization) and a device-side fill for synthetic
// benchmark weights.
//
// Every launcher enqueues on `stream` and returns without waiting; none
// allocates, so all of them may be captured in a CUDA graph. Launch errors are
// checked by the caller (cudaGetLastError / the stream's next sync).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>

#include "devices/cuda/core/device_matrix.h"
#include "devices/cuda/core/status.h"

namespace tokenmill::devices::cuda::core {

struct CublasApi;  // cublas_library.h

// Most activation rows the GEMV kernel takes in one launch (its per-lane
// accumulators); MatMul uses it up to this many rows and cuBLAS above.
inline constexpr int kMaxGemvRows = 8;
// Q8_0 matrices stay on GEMV (in passes of kMaxGemvRows) up to this many
// rows: a pass reads ~1.06 bytes per weight, while cuBLAS first needs the
// matrix dequantized to bf16 (~5 bytes moved per weight) every time.
inline constexpr int kMaxGemvRowsQ8_0 = 32;

// y[t * y_stride + r] = sum_k W(r, k) * x[t * x_stride + k] for t < tokens
// (1..kMaxGemvRows; any other count launches nothing), r < w.rows, f32
// accumulation. x and y are f32 device memory; y must not overlap x; x is
// 16-byte aligned and x_stride a multiple of 4 (float4 loads). One warp per
// 1, 2 or 4 output rows (more with more tokens, so each activation load
// serves several rows), 16-byte weight loads, 8 per lane in flight before
// the first is used. From 5 tokens on the block stages the activations in
// shared memory one tile of columns at a time (fewer registers: two blocks
// per SM instead of one).
// programmatic: launched with Programmatic Dependent Launch (sm_90+; see
// grid_dependency.cuh): the kernel may start while the previous kernel on
// the stream runs, pulls its first weights into L2, then waits for that
// kernel before it reads x or writes y. Results are the same either way.
void LaunchGemv(const DeviceMatrix& w, const float* x, int64_t x_stride, int tokens, float* y,
                int64_t y_stride, cudaStream_t stream, bool programmatic = false);

// out (rows x cols, packed) = 16-bit copy of x (rows of `cols` f32, x_stride
// apart) in `type` (kF16 or kBF16, round to nearest even).
void LaunchConvertRows(const float* x, int64_t x_stride, int64_t rows, int64_t cols,
                       WeightType type, void* out, cudaStream_t stream);

// out (packed rows of w.cols bf16) = rows [row_begin, row_end) of a Q8_0
// matrix, dequantized (scale x quant, rounded to bf16).
void LaunchDequantizeQ8_0ToBf16(const DeviceMatrix& w, int64_t row_begin, int64_t row_end,
                                uint16_t* out, cudaStream_t stream);

// Fills `elements` values of `type` at `data` (and Q8_0 scales at `scales`,
// elements / 32 of them) with a deterministic pseudo-random pattern in about
// [-amplitude, amplitude] from `seed`, on the device: benchmarks build
// 16 GB models without touching host memory.
void LaunchFillSynthetic(WeightType type, void* data, uint16_t* scales, int64_t elements,
                         float amplitude, uint64_t seed, cudaStream_t stream);

// Fills `bytes` bytes at `data` with `byte` (0xFF: NaN as f32, f16 and bf16),
// for tests that poison buffers before a step.
void LaunchFillBytes(void* data, uint8_t byte, size_t bytes, cudaStream_t stream);

// Runs every matmul of one engine: GEMV for up to kMaxGemvRows activation
// rows (kMaxGemvRowsQ8_0 for Q8_0), cuBLAS (GemmEx, f32 accumulation, f32 output) above, with the
// activations converted to the weight's 16-bit type (bf16 for Q8_0, whose
// weights are dequantized to bf16 in chunks of rows first; f32 weights use
// f32 activations). Owns the cuBLAS handle, its workspace and the
// conversion scratch, all allocated in Create(), so MatMul allocates nothing
// and can be captured in a CUDA graph. One thread at a time.
class MatMulRunner {
 public:
  // max_rows: most activation rows of one MatMul; max_cols: widest weight
  // (columns); max_dequant_elements: scratch for Q8_0 dequantization (0 when
  // the model has no Q8_0 matrix; the runner dequantizes ceil(rows x cols /
  // max_dequant_elements) chunks of whole rows). kResourceExhausted when the
  // scratch does not fit; a cuBLAS that cannot start as CublasStatus maps it
  // (kUnavailable without a usable device, else kInternal).
  static GpuStatus Create(cudaStream_t stream, int64_t max_rows, int64_t max_cols,
                          size_t max_dequant_elements, std::unique_ptr<MatMulRunner>* out);
  ~MatMulRunner();
  MatMulRunner(const MatMulRunner&) = delete;
  MatMulRunner& operator=(const MatMulRunner&) = delete;

  // y[t * y_stride + r] = sum_k W(r, k) * x[t * x_stride + k] for t < rows.
  // kInvalidArgument when rows or w.cols exceed what Create() sized for,
  // when rows > 1 and a stride is below the matrix (x_stride < w.cols or
  // y_stride < w.rows), or for a Q8_0 matrix wider than the dequantization
  // scratch; cuBLAS failures as CublasStatus maps them (kResourceExhausted
  // when it cannot allocate, else mostly kInternal). Enqueues only (no sync).
  GpuStatus MatMul(const DeviceMatrix& w, const float* x, int64_t x_stride, int64_t rows, float* y,
                   int64_t y_stride);

  // Forces every MatMul onto cuBLAS (true) or GEMV (false; rows must then be
  // <= kMaxGemvRows) for tests that check both paths; default: by row count.
  enum class Path { kAuto, kGemv, kGemm };
  void set_path_for_testing(Path path) { path_ = path; }

 private:
  MatMulRunner() = default;

  cudaStream_t stream_ = nullptr;
  const CublasApi* api_ = nullptr;  // cuBLAS, loaded with dlopen
  cublasHandle_t cublas_ = nullptr;
  void* workspace_ = nullptr;  // cuBLAS workspace (set explicitly: graph capture)
  size_t workspace_bytes_ = 0;
  void* act16_ = nullptr;        // max_rows x max_cols 16-bit activations
  uint16_t* dequant_ = nullptr;  // Q8_0 rows dequantized to bf16
  size_t dequant_elements_ = 0;
  int64_t max_rows_ = 0;
  int64_t max_cols_ = 0;
  // GEMVs launch with Programmatic Dependent Launch: the device is sm_90+.
  bool programmatic_ = false;
  Path path_ = Path::kAuto;
};

}  // namespace tokenmill::devices::cuda::core
