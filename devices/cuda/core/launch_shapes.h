// Launch shapes and work splits of the layer kernels (layer_kernels.cu) as
// plain C++, host and device alike: the kernels and their launchers compute
// which thread, warp or block covers which element through these functions,
// and tests/devices/cuda_launch_shapes_test.cc checks on any machine (no GPU)
// that every element is covered exactly once.
#pragma once

#include <cstdint>

#ifdef __CUDACC__
#define TM_SHAPE_FN __host__ __device__ constexpr inline
#else
#define TM_SHAPE_FN constexpr inline
#endif

namespace tokenmill::devices::cuda::core {

// ---------------------------------------------------------------------------
// Residual add + RMSNorm: one block per row; thread i of B holds the float4s
// i, i + B, ..., i + (kNormVecsPerThread - 1) B of the row (those below
// dim / 4) in registers.
inline constexpr int kNormVecsPerThread = 4;
inline constexpr int kMaxNormThreads = 1024;

// Threads per row of the register-resident kernel: enough whole warps that
// kNormVecsPerThread float4s each cover the row; 0 when that kernel cannot
// take the row (dim not a multiple of 4, or over 16384 floats).
TM_SHAPE_FN int NormThreads(int64_t dim) {
  if (dim <= 0 || dim % 4 != 0) return 0;
  const int64_t vecs = dim / 4;
  const int64_t per_warp = int64_t{32} * kNormVecsPerThread;
  const int64_t threads = (vecs + per_warp - 1) / per_warp * 32;
  return threads <= kMaxNormThreads ? static_cast<int>(threads) : 0;
}

}  // namespace tokenmill::devices::cuda::core
