// Kernels and launchers of matmul.h: the decode GEMV over every weight type,
// activation conversion to 16 bits, Q8_0 dequantization to bf16, and the
// device-side fills for synthetic weights and poisoned buffers.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <utility>

#include "devices/cuda/core/grid_dependency.cuh"
#include "devices/cuda/core/matmul.h"

namespace tokenmill::devices::cuda::core {
namespace {

constexpr int kWarpSize = 32;
constexpr unsigned kFullWarp = 0xffffffffu;
constexpr int kGemvWarps = 8;  // warps per GEMV block
constexpr int kGemvThreads = kGemvWarps * kWarpSize;
// 16-byte weight loads each lane issues before it consumes the first: 8 x 16
// bytes x 32 lanes = 4 KiB in flight per warp, enough with ~8 warps per SM
// to cover HBM latency at full bandwidth.
constexpr int kGemvLoadsInFlight = 8;
constexpr int kElementwiseThreads = 256;
// Grid-stride kernels stop growing the grid here: enough blocks to fill any
// current GPU, and the int grid size cannot overflow for 8e9 elements.
constexpr int64_t kMaxElementwiseBlocks = 8192;

// Weight elements in one 16-byte load.
__host__ __device__ constexpr int ElementsPerLoad(WeightType type) {
  return type == WeightType::kF32 ? 4 : type == WeightType::kQ8_0 ? 16 : 8;
}

// Output rows each GEMV warp computes: every activation value a lane loads
// is used for that many rows, so with more tokens (more activation bytes per
// weight byte) the activation reads from L1 stay below the weight stream.
// One row at T = 1 keeps the most warps (and loads) in flight.
__host__ __device__ constexpr int GemvRowsPerWarp(int tokens) {
  return tokens == 1 ? 1 : tokens <= 4 ? 2 : 4;
}

int ElementwiseBlocks(int64_t items) {
  const int64_t blocks = (items + kElementwiseThreads - 1) / kElementwiseThreads;
  return static_cast<int>(std::clamp<int64_t>(blocks, 1, kMaxElementwiseBlocks));
}

// Streaming 16-byte weight load: read-only path, no L1 allocation, so the
// weights passing through do not evict the activations every warp re-reads.
__device__ __forceinline__ uint4 LoadWeights(const uint4* p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p));
  return v;
}

// The weights do not depend on the previous kernel: under Programmatic
// Dependent Launch lane r of each warp asks the copy engine to pull row r's
// first chunk (U x 32 16-byte loads, fewer for a shorter row) into L2 with
// one bulk prefetch (sm_90) while that kernel finishes; then every thread
// waits for it.
template <int R, int U>
__device__ __forceinline__ void PrefetchFirstChunkThenWait(const uint4* const (&w_row)[R],
                                                           int64_t vectors, int lane) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  const int64_t loads = vectors < U * kWarpSize ? vectors : U * kWarpSize;
  const uint32_t bytes = static_cast<uint32_t>(loads * 16);
#pragma unroll
  for (int r = 0; r < R; ++r) {
    if (lane == r) {
      asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(w_row[r]), "r"(bytes));
    }
  }
#endif
  WaitForPreviousGrid();
}

__device__ __forceinline__ uint32_t Word(const uint4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

// The four int8 of `word` (lowest byte first) as exact floats, without the
// quarter-rate integer-to-float conversion: q + 128 (the byte with its sign
// bit flipped) becomes the low mantissa bits of 2^23, and 2^23 + 128 is
// subtracted back.
__device__ __forceinline__ void Q8WordToFloats(uint32_t word, float (&out)[4]) {
  const uint32_t flipped = word ^ 0x80808080u;
#pragma unroll
  for (int b = 0; b < 4; ++b) {
    out[b] = __uint_as_float(__byte_perm(flipped, 0x4B000000u, 0x7440u + b)) - 8388736.0f;
  }
}

// Elements [4 g, 4 g + 4) of one 16-byte weight load as f32; Q8_0 quants are
// multiplied by their block's scale.
template <WeightType W>
__device__ __forceinline__ void UnpackGroup(const uint4& v, int g, float scale, float (&out)[4]) {
  if constexpr (W == WeightType::kF32) {
    out[0] = __uint_as_float(v.x);
    out[1] = __uint_as_float(v.y);
    out[2] = __uint_as_float(v.z);
    out[3] = __uint_as_float(v.w);
  } else if constexpr (W == WeightType::kF16) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const uint32_t word = Word(v, 2 * g + h);
      out[2 * h] = __half2float(__ushort_as_half(static_cast<unsigned short>(word & 0xffffu)));
      out[2 * h + 1] = __half2float(__ushort_as_half(static_cast<unsigned short>(word >> 16)));
    }
  } else if constexpr (W == WeightType::kBF16) {
    // bf16 is the high half of an f32: widening is a shift.
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const uint32_t word = Word(v, 2 * g + h);
      out[2 * h] = __uint_as_float(word << 16);
      out[2 * h + 1] = __uint_as_float(word & 0xffff0000u);
    }
  } else {
    Q8WordToFloats(Word(v, g), out);
#pragma unroll
    for (int b = 0; b < 4; ++b) out[b] *= scale;
  }
}

// The f16 scale of 16-byte load `v` of a Q8_0 row (two loads per 32-block);
// 1 for the other types, which have none.
template <WeightType W>
__device__ __forceinline__ float LoadScale(const uint16_t* row_scales, int64_t v) {
  if constexpr (W == WeightType::kQ8_0) {
    return __half2float(__ushort_as_half(__ldg(row_scales + (v >> 1))));
  } else {
    return 1.0f;
  }
}

// acc[r][t] += dot(16-byte load wv[r] of row r, x of token t at element k).
template <WeightType W, int T, int R>
__device__ __forceinline__ void AccumulateLoad(const uint4 (&wv)[R], const float (&scale)[R],
                                               const float* __restrict__ x, int64_t x_stride,
                                               int64_t k, float (&acc)[R][T]) {
#pragma unroll
  for (int g = 0; g < ElementsPerLoad(W) / 4; ++g) {
    float wf[R][4];
#pragma unroll
    for (int r = 0; r < R; ++r) UnpackGroup<W>(wv[r], g, scale[r], wf[r]);
#pragma unroll
    for (int t = 0; t < T; ++t) {
      const float4 xv = __ldg(reinterpret_cast<const float4*>(x + t * x_stride + k + 4 * g));
#pragma unroll
      for (int r = 0; r < R; ++r) {
        float a = acc[r][t];
        a = fmaf(wf[r][0], xv.x, a);
        a = fmaf(wf[r][1], xv.y, a);
        a = fmaf(wf[r][2], xv.z, a);
        a = fmaf(wf[r][3], xv.w, a);
        acc[r][t] = a;
      }
    }
  }
}

// One chunk of a lane's loads: U loads per row at base + u * 32 + lane, all
// issued before the first is used. kGuard: the row's last, partial chunk,
// where loads past `vectors` are skipped.
template <WeightType W, int T, int R, bool kGuard>
__device__ __forceinline__ void GemvChunk(const uint4* const (&w_row)[R],
                                          const uint16_t* const (&s_row)[R], int64_t vectors,
                                          int64_t base, int lane, const float* __restrict__ x,
                                          int64_t x_stride, float (&acc)[R][T]) {
  constexpr int U = kGemvLoadsInFlight / R;
  uint4 wv[U][R];
  float scale[U][R];
#pragma unroll
  for (int u = 0; u < U; ++u) {
    const int64_t v = base + u * kWarpSize + lane;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      if (!kGuard || v < vectors) {
        wv[u][r] = LoadWeights(w_row[r] + v);
        scale[u][r] = LoadScale<W>(s_row[r], v);
      } else {
        wv[u][r] = make_uint4(0, 0, 0, 0);
        scale[u][r] = 0.0f;
      }
    }
  }
#pragma unroll
  for (int u = 0; u < U; ++u) {
    const int64_t v = base + u * kWarpSize + lane;
    if (!kGuard || v < vectors) {
      AccumulateLoad<W, T, R>(wv[u], scale[u], x, x_stride, v * ElementsPerLoad(W), acc);
    }
  }
}

// y[t * y_stride + r] = W(r, :) . x[t * x_stride + :] for R rows per warp,
// kGemvWarps warps per block. Lane l reads 16-byte loads l, l + 32, ... of
// each row (coalesced 512-byte warp loads), then the warp sums its lanes.
template <WeightType W, int T, int R>
__global__ void __launch_bounds__(kGemvThreads)
    GemvKernel(const uint4* __restrict__ w, const uint16_t* __restrict__ scales, int64_t rows,
               int64_t cols, const float* __restrict__ x, int64_t x_stride, float* __restrict__ y,
               int64_t y_stride) {
  constexpr int U = kGemvLoadsInFlight / R;
  constexpr int64_t kChunk = static_cast<int64_t>(U) * kWarpSize;
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int warp = static_cast<int>(threadIdx.x) / kWarpSize;
  const int64_t row0 = (static_cast<int64_t>(blockIdx.x) * kGemvWarps + warp) * R;
  if (row0 >= rows) {  // the whole warp: the shuffles below see all lanes
    WaitForPreviousGrid();
    return;
  }

  const int64_t vectors = cols / ElementsPerLoad(W);  // 16-byte loads per row
  const uint4* w_row[R];
  const uint16_t* s_row[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    // Rows past the end re-read the last row; their sums are not written.
    const int64_t row = row0 + r < rows ? row0 + r : rows - 1;
    w_row[r] = w + row * vectors;
    s_row[r] = W == WeightType::kQ8_0 ? scales + row * (cols / kQ8Block) : nullptr;
  }
  PrefetchFirstChunkThenWait<R, U>(w_row, vectors, lane);

  float acc[R][T];
#pragma unroll
  for (int r = 0; r < R; ++r) {
#pragma unroll
    for (int t = 0; t < T; ++t) acc[r][t] = 0.0f;
  }

  int64_t base = 0;
  for (; base + kChunk <= vectors; base += kChunk) {
    GemvChunk<W, T, R, false>(w_row, s_row, vectors, base, lane, x, x_stride, acc);
  }
  if (base < vectors) GemvChunk<W, T, R, true>(w_row, s_row, vectors, base, lane, x, x_stride, acc);

#pragma unroll
  for (int r = 0; r < R; ++r) {
#pragma unroll
    for (int t = 0; t < T; ++t) {
      float sum = acc[r][t];
#pragma unroll
      for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
        sum += __shfl_xor_sync(kFullWarp, sum, offset);
      }
      acc[r][t] = sum;
    }
  }
  if (lane == 0) {
#pragma unroll
    for (int r = 0; r < R; ++r) {
      if (row0 + r >= rows) break;
#pragma unroll
      for (int t = 0; t < T; ++t) y[t * y_stride + row0 + r] = acc[r][t];
    }
  }
}

// Activation rows from which GemvStagedKernel takes over: at 5..8 tokens
// (4 output rows per warp) GemvKernel holds R x T accumulators, the weights
// in flight and T global activation pointers, up to 209 registers (Q8_0)
// and one 256-thread block per SM.
constexpr int kGemvStagedFromTokens = 5;

// Blocks per SM GemvStagedKernel asks registers for (2: at most 128 per
// thread), as measured with nvcc 13 for sm_90a: 2 for every type and token
// count but Q8_0 at 5, 7 and 8 tokens, where 2 spills (4, 28 and 28 bytes
// per thread) and no minimum (0) is asked: 128, 159 and 191 registers.
__host__ __device__ constexpr int GemvStagedBlocksPerSm(WeightType type, int tokens) {
  return type == WeightType::kQ8_0 && tokens != 6 ? 0 : 2;
}

// acc[r][t] += dot(16-byte load wv[r] of row r, x tile of token t from
// element k of the tile), the tile in shared memory (32-bit addresses, no
// per-token global pointers).
template <WeightType W, int T, int R, int kTileVecs>
__device__ __forceinline__ void AccumulateStaged(const uint4 (&wv)[R], const float (&scale)[R],
                                                 const float4 (&tile)[T][kTileVecs], int k,
                                                 float (&acc)[R][T]) {
#pragma unroll
  for (int g = 0; g < ElementsPerLoad(W) / 4; ++g) {
    float wf[R][4];
#pragma unroll
    for (int r = 0; r < R; ++r) UnpackGroup<W>(wv[r], g, scale[r], wf[r]);
#pragma unroll
    for (int t = 0; t < T; ++t) {
      const float4 xv = tile[t][k / 4 + g];
#pragma unroll
      for (int r = 0; r < R; ++r) {
        float a = acc[r][t];
        a = fmaf(wf[r][0], xv.x, a);
        a = fmaf(wf[r][1], xv.y, a);
        a = fmaf(wf[r][2], xv.z, a);
        a = fmaf(wf[r][3], xv.w, a);
        acc[r][t] = a;
      }
    }
  }
}

// GemvKernel for 5..8 tokens with the activations staged in shared memory:
// the block walks the columns in tiles of one chunk (U x 32 loads of each
// row); per tile every warp first issues its weight loads, then the block
// copies the T x tile activations into shared memory (zeros past cols),
// and after the barrier each warp accumulates from the tile. Warps past the
// last row still take part in the barriers (their loads re-read the last
// row, their sums are not written). Same products and summation order per
// lane as GemvKernel.
template <WeightType W, int T, int R>
__global__ void __launch_bounds__(kGemvThreads, GemvStagedBlocksPerSm(W, T))
    GemvStagedKernel(const uint4* __restrict__ w, const uint16_t* __restrict__ scales, int64_t rows,
                     int64_t cols, const float* __restrict__ x, int64_t x_stride,
                     float* __restrict__ y, int64_t y_stride) {
  constexpr int U = kGemvLoadsInFlight / R;
  constexpr int kChunk = U * kWarpSize;                   // loads per row per tile
  constexpr int kTileCols = kChunk * ElementsPerLoad(W);  // bf16: 512, Q8_0: 1024
  constexpr int kTileVecs = kTileCols / 4;
  __shared__ float4 tile[T][kTileVecs];  // Q8_0 at T = 8: 32 KiB
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int warp = static_cast<int>(threadIdx.x) / kWarpSize;
  const int64_t row0 = (static_cast<int64_t>(blockIdx.x) * kGemvWarps + warp) * R;

  const int64_t vectors = cols / ElementsPerLoad(W);
  const uint4* w_row[R];
  const uint16_t* s_row[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    int64_t row = row0 + r < rows ? row0 + r : rows - 1;
    w_row[r] = w + row * vectors;
    s_row[r] = W == WeightType::kQ8_0 ? scales + row * (cols / kQ8Block) : nullptr;
  }
  PrefetchFirstChunkThenWait<R, U>(w_row, vectors, lane);
  float acc[R][T];
#pragma unroll
  for (int r = 0; r < R; ++r) {
#pragma unroll
    for (int t = 0; t < T; ++t) acc[r][t] = 0.0f;
  }

  for (int64_t base = 0; base < vectors; base += kChunk) {
    uint4 wv[U][R];
    float scale[U][R];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t v = base + u * kWarpSize + lane;
#pragma unroll
      for (int r = 0; r < R; ++r) {
        if (v < vectors) {
          wv[u][r] = LoadWeights(w_row[r] + v);
          scale[u][r] = LoadScale<W>(s_row[r], v);
        } else {
          wv[u][r] = make_uint4(0, 0, 0, 0);
          scale[u][r] = 0.0f;
        }
      }
    }
    // The previous tile is consumed by every warp before it is overwritten.
    __syncthreads();
    const int64_t first_col = base * ElementsPerLoad(W);
    for (int i = static_cast<int>(threadIdx.x); i < T * kTileVecs; i += kGemvThreads) {
      const int t = i / kTileVecs, c = i - t * kTileVecs;
      const int64_t col = first_col + 4 * c;
      tile[t][c] = col < cols ? __ldg(reinterpret_cast<const float4*>(x + t * x_stride + col))
                              : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
    __syncthreads();
#pragma unroll
    for (int u = 0; u < U; ++u) {
      if (base + u * kWarpSize + lane < vectors) {
        AccumulateStaged<W, T, R, kTileVecs>(wv[u], scale[u], tile,
                                             (u * kWarpSize + lane) * ElementsPerLoad(W), acc);
      }
    }
  }

#pragma unroll
  for (int r = 0; r < R; ++r) {
#pragma unroll
    for (int t = 0; t < T; ++t) {
      float sum = acc[r][t];
#pragma unroll
      for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
        sum += __shfl_xor_sync(kFullWarp, sum, offset);
      }
      acc[r][t] = sum;
    }
  }
  if (lane == 0) {
#pragma unroll
    for (int r = 0; r < R; ++r) {
      if (row0 + r >= rows) break;
#pragma unroll
      for (int t = 0; t < T; ++t) y[t * y_stride + row0 + r] = acc[r][t];
    }
  }
}

template <WeightType W, int T>
void LaunchGemvTyped(const DeviceMatrix& w, const float* x, int64_t x_stride, float* y,
                     int64_t y_stride, cudaStream_t stream, bool programmatic) {
  constexpr int R = GemvRowsPerWarp(T);
  constexpr int64_t kRowsPerBlock = static_cast<int64_t>(kGemvWarps) * R;
  const int blocks = static_cast<int>((w.rows + kRowsPerBlock - 1) / kRowsPerBlock);
  const auto* data = static_cast<const uint4*>(w.data);
  const uint16_t* scales = w.scales;
  if constexpr (T >= kGemvStagedFromTokens) {
    LaunchKernel(programmatic, GemvStagedKernel<W, T, R>, dim3(blocks), dim3(kGemvThreads), stream,
                 data, scales, w.rows, w.cols, x, x_stride, y, y_stride);
  } else {
    LaunchKernel(programmatic, GemvKernel<W, T, R>, dim3(blocks), dim3(kGemvThreads), stream, data,
                 scales, w.rows, w.cols, x, x_stride, y, y_stride);
  }
}

template <WeightType W>
void LaunchGemvTokens(const DeviceMatrix& w, const float* x, int64_t x_stride, int tokens, float* y,
                      int64_t y_stride, cudaStream_t stream, bool programmatic) {
  static_assert(kMaxGemvRows == 8, "one case per token count below");
  switch (tokens) {
    case 1:
      return LaunchGemvTyped<W, 1>(w, x, x_stride, y, y_stride, stream, programmatic);
    case 2:
      return LaunchGemvTyped<W, 2>(w, x, x_stride, y, y_stride, stream, programmatic);
    case 3:
      return LaunchGemvTyped<W, 3>(w, x, x_stride, y, y_stride, stream, programmatic);
    case 4:
      return LaunchGemvTyped<W, 4>(w, x, x_stride, y, y_stride, stream, programmatic);
    case 5:
      return LaunchGemvTyped<W, 5>(w, x, x_stride, y, y_stride, stream, programmatic);
    case 6:
      return LaunchGemvTyped<W, 6>(w, x, x_stride, y, y_stride, stream, programmatic);
    case 7:
      return LaunchGemvTyped<W, 7>(w, x, x_stride, y, y_stride, stream, programmatic);
    case 8:
      return LaunchGemvTyped<W, 8>(w, x, x_stride, y, y_stride, stream, programmatic);
    default:
      return;
  }
}

// f32 -> the bits of an f16 or bf16, round to nearest even.
template <WeightType W>
__device__ __forceinline__ uint32_t To16Bits(float f) {
  if constexpr (W == WeightType::kF16) {
    return __half_as_ushort(__float2half_rn(f));
  } else {
    return __bfloat16_as_ushort(__float2bfloat16_rn(f));
  }
}

// Four elements per thread: a 16-byte load, an 8-byte store (quad i of the
// packed output is elements 4 i .. 4 i + 3, row i / quads_per_row).
template <WeightType W>
__global__ void ConvertRowsQuadKernel(const float* __restrict__ x, int64_t x_stride, int64_t rows,
                                      int64_t quads_per_row, uint2* __restrict__ out) {
  const int64_t total = rows * quads_per_row;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += stride) {
    const int64_t r = i / quads_per_row;
    const int64_t q = i - r * quads_per_row;
    const float4 v = *reinterpret_cast<const float4*>(x + r * x_stride + 4 * q);
    out[i] = make_uint2(To16Bits<W>(v.x) | (To16Bits<W>(v.y) << 16),
                        To16Bits<W>(v.z) | (To16Bits<W>(v.w) << 16));
  }
}

// Any shape or alignment: one element per thread.
template <WeightType W>
__global__ void ConvertRowsKernel(const float* __restrict__ x, int64_t x_stride, int64_t rows,
                                  int64_t cols, uint16_t* __restrict__ out) {
  const int64_t total = rows * cols;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += stride) {
    const int64_t r = i / cols;
    out[i] = static_cast<uint16_t>(To16Bits<W>(x[r * x_stride + (i - r * cols)]));
  }
}

template <WeightType W>
void LaunchConvertRowsTyped(const float* x, int64_t x_stride, int64_t rows, int64_t cols, void* out,
                            cudaStream_t stream) {
  const bool quads = cols % 4 == 0 && x_stride % 4 == 0 &&
                     reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
                     reinterpret_cast<uintptr_t>(out) % 8 == 0;
  if (quads) {
    const int64_t quads_per_row = cols / 4;
    ConvertRowsQuadKernel<W>
        <<<ElementwiseBlocks(rows * quads_per_row), kElementwiseThreads, 0, stream>>>(
            x, x_stride, rows, quads_per_row, static_cast<uint2*>(out));
  } else {
    ConvertRowsKernel<W><<<ElementwiseBlocks(rows * cols), kElementwiseThreads, 0, stream>>>(
        x, x_stride, rows, cols, static_cast<uint16_t*>(out));
  }
}

// One 16-byte load of quants (16 elements, half a 32-block) per thread, two
// 16-byte stores of bf16. `quants` and `scales` start at the first row;
// load i covers elements [16 i, 16 i + 16) of the packed rows, block i / 2.
__global__ void DequantizeQ8_0Kernel(const uint4* __restrict__ quants,
                                     const uint16_t* __restrict__ scales, int64_t loads,
                                     uint4* __restrict__ out) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < loads;
       i += stride) {
    const uint4 q = LoadWeights(quants + i);
    const float scale = __half2float(__ushort_as_half(__ldg(scales + (i >> 1))));
    uint32_t packed[8];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      float f[4];
      Q8WordToFloats(Word(q, j), f);
      const auto bf = [&](int b) { return To16Bits<WeightType::kBF16>(f[b] * scale); };
      packed[2 * j] = bf(0) | (bf(1) << 16);
      packed[2 * j + 1] = bf(2) | (bf(3) << 16);
    }
    out[2 * i] = make_uint4(packed[0], packed[1], packed[2], packed[3]);
    out[2 * i + 1] = make_uint4(packed[4], packed[5], packed[6], packed[7]);
  }
}

// splitmix64's output function on (seed, index): every element its own
// well-mixed 64-bit value, independent of the launch shape.
__device__ __forceinline__ uint64_t SplitMix64(uint64_t seed, uint64_t index) {
  uint64_t z = seed + (index + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

template <WeightType W>
__global__ void FillSyntheticKernel(void* __restrict__ data, int64_t elements, float amplitude,
                                    uint64_t seed) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < elements;
       i += stride) {
    const uint64_t h = SplitMix64(seed, static_cast<uint64_t>(i));
    if constexpr (W == WeightType::kQ8_0) {
      static_cast<int8_t*>(data)[i] = static_cast<int8_t>(static_cast<int>((h >> 32) % 255) - 127);
    } else {
      // The top 24 bits as a uniform in [-1, 1), exact in f32.
      const float value = amplitude * (static_cast<float>(h >> 40) * 0x1p-23f - 1.0f);
      if constexpr (W == WeightType::kF32) {
        static_cast<float*>(data)[i] = value;
      } else {
        static_cast<uint16_t*>(data)[i] = static_cast<uint16_t>(To16Bits<W>(value));
      }
    }
  }
}

__global__ void FillQ8ScalesKernel(uint16_t* __restrict__ scales, int64_t count, float scale) {
  const uint16_t bits = __half_as_ushort(__float2half_rn(scale));
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += stride) {
    scales[i] = bits;
  }
}

template <WeightType W>
void LaunchFillTyped(void* data, int64_t elements, float amplitude, uint64_t seed,
                     cudaStream_t stream) {
  FillSyntheticKernel<W><<<ElementwiseBlocks(elements), kElementwiseThreads, 0, stream>>>(
      data, elements, amplitude, seed);
}

}  // namespace

void LaunchGemv(const DeviceMatrix& w, const float* x, int64_t x_stride, int tokens, float* y,
                int64_t y_stride, cudaStream_t stream, bool programmatic) {
  // MatMulRunner splits larger batches; a count outside 1..kMaxGemvRows
  // launches nothing.
  if (w.rows <= 0 || tokens < 1 || tokens > kMaxGemvRows) return;
  switch (w.type) {
    case WeightType::kF32:
      return LaunchGemvTokens<WeightType::kF32>(w, x, x_stride, tokens, y, y_stride, stream,
                                                programmatic);
    case WeightType::kF16:
      return LaunchGemvTokens<WeightType::kF16>(w, x, x_stride, tokens, y, y_stride, stream,
                                                programmatic);
    case WeightType::kBF16:
      return LaunchGemvTokens<WeightType::kBF16>(w, x, x_stride, tokens, y, y_stride, stream,
                                                 programmatic);
    case WeightType::kQ8_0:
      return LaunchGemvTokens<WeightType::kQ8_0>(w, x, x_stride, tokens, y, y_stride, stream,
                                                 programmatic);
  }
}

void LaunchConvertRows(const float* x, int64_t x_stride, int64_t rows, int64_t cols,
                       WeightType type, void* out, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return;
  if (type == WeightType::kF16) {
    LaunchConvertRowsTyped<WeightType::kF16>(x, x_stride, rows, cols, out, stream);
  } else if (type == WeightType::kBF16) {
    LaunchConvertRowsTyped<WeightType::kBF16>(x, x_stride, rows, cols, out, stream);
  }
}

void LaunchDequantizeQ8_0ToBf16(const DeviceMatrix& w, int64_t row_begin, int64_t row_end,
                                uint16_t* out, cudaStream_t stream) {
  if (w.type != WeightType::kQ8_0 || row_end <= row_begin || w.cols <= 0) return;
  constexpr int64_t kPerLoad = ElementsPerLoad(WeightType::kQ8_0);
  // cols is a multiple of 32, so every row starts 16-byte aligned and each
  // 16-element load lies within one block.
  const int64_t loads = (row_end - row_begin) * (w.cols / kPerLoad);
  const auto* quants =
      reinterpret_cast<const uint4*>(static_cast<const int8_t*>(w.data) + row_begin * w.cols);
  const uint16_t* scales = w.scales + row_begin * (w.cols / kQ8Block);
  DequantizeQ8_0Kernel<<<ElementwiseBlocks(loads), kElementwiseThreads, 0, stream>>>(
      quants, scales, loads, reinterpret_cast<uint4*>(out));
}

void LaunchFillSynthetic(WeightType type, void* data, uint16_t* scales, int64_t elements,
                         float amplitude, uint64_t seed, cudaStream_t stream) {
  if (elements <= 0) return;
  switch (type) {
    case WeightType::kF32:
      return LaunchFillTyped<WeightType::kF32>(data, elements, amplitude, seed, stream);
    case WeightType::kF16:
      return LaunchFillTyped<WeightType::kF16>(data, elements, amplitude, seed, stream);
    case WeightType::kBF16:
      return LaunchFillTyped<WeightType::kBF16>(data, elements, amplitude, seed, stream);
    case WeightType::kQ8_0: {
      LaunchFillTyped<WeightType::kQ8_0>(data, elements, amplitude, seed, stream);
      const int64_t blocks = elements / kQ8Block;
      if (scales != nullptr && blocks > 0) {
        FillQ8ScalesKernel<<<ElementwiseBlocks(blocks), kElementwiseThreads, 0, stream>>>(
            scales, blocks, amplitude / 127.0f);
      }
      return;
    }
  }
}

void LaunchFillBytes(void* data, uint8_t byte, size_t bytes, cudaStream_t stream) {
  if (bytes == 0) return;
  // A memset node is graph-capturable; its error, like a launch's, is left
  // for the caller's cudaGetLastError.
  (void)cudaMemsetAsync(data, byte, bytes, stream);
}

}  // namespace tokenmill::devices::cuda::core
