// MatMulRunner (matmul.h): picks the GEMV kernel or cuBLAS for each matmul
// and owns what cuBLAS needs to run inside a CUDA graph (handle, workspace)
// plus the activation and dequantization scratch.
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "devices/cuda/core/cublas_library.h"
#include "devices/cuda/core/cuda_call.h"
#include "devices/cuda/core/matmul.h"

namespace tokenmill::devices::cuda::core {
namespace {

// cuBLAS allocates nothing during a graph capture when it has a workspace of
// its own; 32 MiB is what it asks for on Hopper.
constexpr size_t kCublasWorkspaceBytes = size_t{32} << 20;

GpuStatus InvalidArgument(std::string message) {
  return GpuStatus::Error(GpuCode::kInvalidArgument, std::move(message));
}

}  // namespace

GpuStatus MatMulRunner::Create(cudaStream_t stream, int64_t max_rows, int64_t max_cols,
                               size_t max_dequant_elements, std::unique_ptr<MatMulRunner>* out) {
  if (max_rows < 0 || max_cols < 0) {
    return InvalidArgument("MatMulRunner: negative size " + std::to_string(max_rows) + " x " +
                           std::to_string(max_cols));
  }
  // Private constructor; on any failure below the destructor frees what was
  // allocated so far.
  std::unique_ptr<MatMulRunner> runner(new MatMulRunner());
  runner->stream_ = stream;
  runner->max_rows_ = max_rows;
  runner->max_cols_ = max_cols;

  // Programmatic Dependent Launch needs compute capability 9.0 (Hopper).
  int device = 0, major = 0;
  TM_CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
  TM_CUDA_RETURN_IF_ERROR(
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  runner->programmatic_ = major >= 9;

  std::string load_error;
  runner->api_ = LoadCublas(&load_error);
  if (runner->api_ == nullptr) return GpuStatus::Error(GpuCode::kUnavailable, load_error);
  const CublasApi& api = *runner->api_;
  if (GpuStatus s = CublasStatus("cublasCreate", api.create(&runner->cublas_)); !s.ok()) {
    runner->cublas_ = nullptr;
    return s;
  }
  // cublasSetStream resets the workspace to cuBLAS's own pool, so the
  // workspace is set after it.
  if (GpuStatus s = CublasStatus("cublasSetStream", api.set_stream(runner->cublas_, stream));
      !s.ok()) {
    return s;
  }
  // No TF32: f32 weights keep f32 products, like the CPU executor.
  if (GpuStatus s = CublasStatus("cublasSetMathMode",
                                 api.set_math_mode(runner->cublas_, CUBLAS_DEFAULT_MATH));
      !s.ok()) {
    return s;
  }
  TM_CUDA_RETURN_IF_ERROR(cudaMalloc(&runner->workspace_, kCublasWorkspaceBytes));
  runner->workspace_bytes_ = kCublasWorkspaceBytes;
  if (GpuStatus s = CublasStatus(
          "cublasSetWorkspace",
          api.set_workspace(runner->cublas_, runner->workspace_, runner->workspace_bytes_));
      !s.ok()) {
    return s;
  }

  const size_t act16_bytes = static_cast<size_t>(max_rows) * static_cast<size_t>(max_cols) * 2;
  if (act16_bytes > 0) TM_CUDA_RETURN_IF_ERROR(cudaMalloc(&runner->act16_, act16_bytes));
  if (max_dequant_elements > 0) {
    void* dequant = nullptr;
    TM_CUDA_RETURN_IF_ERROR(cudaMalloc(&dequant, max_dequant_elements * 2));
    runner->dequant_ = static_cast<uint16_t*>(dequant);
    runner->dequant_elements_ = max_dequant_elements;
  }
  *out = std::move(runner);
  return GpuStatus::Ok();
}

MatMulRunner::~MatMulRunner() {
  // The handle first: it may still refer to the workspace. Errors are
  // ignored, there is no one to report them to.
  if (cublas_ != nullptr) api_->destroy(cublas_);
  if (workspace_ != nullptr) cudaFree(workspace_);
  if (act16_ != nullptr) cudaFree(act16_);
  if (dequant_ != nullptr) cudaFree(dequant_);
}

GpuStatus MatMulRunner::MatMul(const DeviceMatrix& w, const float* x, int64_t x_stride,
                               int64_t rows, float* y, int64_t y_stride) {
  if (rows <= 0 || w.rows <= 0) return GpuStatus::Ok();
  if (w.cols <= 0) {
    return InvalidArgument("MatMul: a matrix of " + std::to_string(w.cols) + " columns");
  }
  if (rows > max_rows_ || w.cols > max_cols_) {
    return InvalidArgument("MatMul: " + std::to_string(rows) + " activation rows x " +
                           std::to_string(w.cols) + " columns exceed the runner's " +
                           std::to_string(max_rows_) + " x " + std::to_string(max_cols_));
  }
  // Overlapping rows (or cuBLAS leading dimensions below the matrix) are a
  // caller bug; a single row has no stride to check.
  if (rows > 1 && (x_stride < w.cols || y_stride < w.rows)) {
    return InvalidArgument("MatMul: strides x " + std::to_string(x_stride) + ", y " +
                           std::to_string(y_stride) + " below the " + std::to_string(w.rows) +
                           " x " + std::to_string(w.cols) + " matrix");
  }

  const int64_t gemv_rows = w.type == WeightType::kQ8_0 ? kMaxGemvRowsQ8_0 : kMaxGemvRows;
  if (path_ == Path::kGemv || (path_ == Path::kAuto && rows <= gemv_rows)) {
    for (int64_t t = 0; t < rows; t += kMaxGemvRows) {
      const int tokens = static_cast<int>(std::min<int64_t>(kMaxGemvRows, rows - t));
      LaunchGemv(w, x + t * x_stride, x_stride, tokens, y + t * y_stride, y_stride, stream_,
                 programmatic_);
    }
    return CudaStatus("LaunchGemv", cudaGetLastError());
  }

  // Column-major cuBLAS view of row-major Y[T][w.rows] = X[T][cols] W^T:
  // C (w.rows x T, ldc = y_stride) = A^T B with A = W as a cols x w.rows
  // column-major matrix and B = X as cols x T. A one-row batch gets the
  // smallest legal leading dimensions (they are never stepped over).
  const int64_t ldb_x = std::max(x_stride, w.cols);
  const int64_t ldc = std::max(y_stride, w.rows);
  if (w.rows > INT_MAX || w.cols > INT_MAX || rows > INT_MAX || ldb_x > INT_MAX || ldc > INT_MAX) {
    return InvalidArgument("MatMul: " + std::to_string(w.rows) + " x " + std::to_string(w.cols) +
                           " matrix or its strides exceed cuBLAS's int sizes");
  }
  const int n = static_cast<int>(rows);
  const int k = static_cast<int>(w.cols);
  const float alpha = 1.0f;
  const float beta = 0.0f;
  const auto gemm = [&](const void* a, cudaDataType a_type, const void* b, cudaDataType b_type,
                        int ldb, int64_t row_begin, int64_t row_count) {
    return CublasStatus(
        "cublasGemmEx",
        api_->gemm_ex(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(row_count), n, k, &alpha,
                      a, a_type, k, b, b_type, ldb, &beta, y + row_begin, CUDA_R_32F,
                      static_cast<int>(ldc), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  };

  switch (w.type) {
    case WeightType::kF32: {
      if (GpuStatus s = gemm(w.data, CUDA_R_32F, x, CUDA_R_32F, static_cast<int>(ldb_x), 0, w.rows);
          !s.ok()) {
        return s;
      }
      break;
    }
    case WeightType::kF16:
    case WeightType::kBF16: {
      const cudaDataType type = w.type == WeightType::kF16 ? CUDA_R_16F : CUDA_R_16BF;
      LaunchConvertRows(x, x_stride, rows, w.cols, w.type, act16_, stream_);
      if (GpuStatus s = gemm(w.data, type, act16_, type, k, 0, w.rows); !s.ok()) return s;
      break;
    }
    case WeightType::kQ8_0: {
      if (dequant_ == nullptr || dequant_elements_ < static_cast<size_t>(w.cols)) {
        return InvalidArgument("MatMul: a q8_0 matrix of " + std::to_string(w.cols) +
                               " columns needs dequantization scratch of at least one row, the "
                               "runner has " +
                               std::to_string(dequant_elements_) + " elements");
      }
      LaunchConvertRows(x, x_stride, rows, w.cols, WeightType::kBF16, act16_, stream_);
      // The stream orders each chunk's GEMM before the next dequantization
      // overwrites the scratch.
      const int64_t chunk_rows = static_cast<int64_t>(dequant_elements_ / static_cast<size_t>(k));
      for (int64_t begin = 0; begin < w.rows; begin += chunk_rows) {
        const int64_t end = std::min(w.rows, begin + chunk_rows);
        LaunchDequantizeQ8_0ToBf16(w, begin, end, dequant_, stream_);
        if (GpuStatus s = gemm(dequant_, CUDA_R_16BF, act16_, CUDA_R_16BF, k, begin, end - begin);
            !s.ok()) {
          return s;
        }
      }
      break;
    }
  }
  return CudaStatus("MatMul kernels", cudaGetLastError());
}

}  // namespace tokenmill::devices::cuda::core
