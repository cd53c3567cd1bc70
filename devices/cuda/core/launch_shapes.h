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

// ---------------------------------------------------------------------------
// Argmax: ArgmaxBlocksPerRow(vocab) blocks per row, block b scanning
// elements [b x per_block, min(vocab, (b + 1) x per_block)) with per_block =
// ArgmaxPerBlock(vocab); each block folds its best into one packed 64-bit key
// per row with atomicMax.
inline constexpr int64_t kArgmaxMinPerBlock = 4096;
inline constexpr int64_t kMaxArgmaxBlocksPerRow = 64;

TM_SHAPE_FN int64_t ArgmaxBlocksPerRow(int64_t vocab) {
  const int64_t blocks = (vocab + kArgmaxMinPerBlock - 1) / kArgmaxMinPerBlock;
  return blocks < 1 ? 1 : blocks > kMaxArgmaxBlocksPerRow ? kMaxArgmaxBlocksPerRow : blocks;
}
TM_SHAPE_FN int64_t ArgmaxPerBlock(int64_t vocab) {
  const int64_t blocks = ArgmaxBlocksPerRow(vocab);
  return (vocab + blocks - 1) / blocks;
}

// The packed key of logit `float_bits` (an f32's bits) at `index` (< 2^31):
// the high word orders values like floats (-0 counted as +0, so the two tie),
// the low word is ~index, so a larger key is the larger value, then the lower
// index. NaN gets 0, which every other value beats (-inf's key is above
// 2^54), so NaN never wins and a row with no other value keeps 0: index 0.
TM_SHAPE_FN uint64_t ArgmaxKey(uint32_t float_bits, uint32_t index) {
  if ((float_bits & 0x7fffffffu) > 0x7f800000u) return 0;  // NaN
  if (float_bits == 0x80000000u) float_bits = 0;           // -0 ties +0
  const uint32_t ordered = (float_bits & 0x80000000u) != 0 ? ~float_bits : float_bits | 0x80000000u;
  return (static_cast<uint64_t>(ordered) << 32) | (0xffffffffu - index);
}
// The index a key names; 0 for the key 0 (only NaN seen).
TM_SHAPE_FN int32_t ArgmaxIndexOfKey(uint64_t key) {
  return key == 0 ? 0 : static_cast<int32_t>(0xffffffffu - static_cast<uint32_t>(key));
}

}  // namespace tokenmill::devices::cuda::core
