// Paged attention of layer_kernels.h (LaunchPagedAttention): one block per
// (token, KV head, chunk of its query heads, split), one warp per KV block,
// 16-byte K/V loads, the work split of launch_shapes.h; and the merge of
// split-K partial results. Same math as the CPU executor's AttendHead: dot
// first, then the scale; online softmax in f32.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "devices/cuda/core/grid_dependency.cuh"
#include "devices/cuda/core/launch_shapes.h"
#include "devices/cuda/core/layer_kernels.h"

namespace tokenmill::devices::cuda::core {
namespace {

constexpr int kWarp = 32;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kAttnThreads = kAttentionWarps * kWarp;
constexpr int kDims = kAttentionDimsPerLane;
// The merge pass: 128 threads, each taking dims d, d + 128 of its head.
constexpr int kCombineThreads = 128;
// The auto split count aims at kSplitWaves blocks per SM.
constexpr int64_t kSplitWaves = 2;
// Most blocks in a grid's y dimension; kernels with tokens on y loop over the
// rest.
constexpr int64_t kMaxGridY = 65535;

// What every block of a launch shares besides the kernel arguments.
struct AttentionLayout {
  int32_t lanes = 1;        // AttentionLanes(head_dim)
  int32_t head_chunks = 1;  // AttentionHeadChunks of the group
  int32_t per_chunk = 1;
  int32_t min_blocks = 1;  // AttentionTokenSplits' min_blocks
};

// 8 consecutive K or V elements, as loaded (f16: one 16-byte load; f32: two).
template <typename KvT>
struct RawChunk;
template <>
struct RawChunk<__half> {
  uint4 v;
  // Position steps a warp loads before using the first: 4 x (K + V) x 16
  // bytes per lane in flight.
  static constexpr int kSteps = 4;
};
template <>
struct RawChunk<float> {
  float4 a, b;
  static constexpr int kSteps = 2;  // as many bytes in flight as f16's 4
};

__device__ __forceinline__ void LoadChunk(const __half* p, RawChunk<__half>& out) {
  out.v = __ldg(reinterpret_cast<const uint4*>(p));
}
__device__ __forceinline__ void LoadChunk(const float* p, RawChunk<float>& out) {
  out.a = __ldg(reinterpret_cast<const float4*>(p));
  out.b = __ldg(reinterpret_cast<const float4*>(p) + 1);
}
__device__ __forceinline__ void ZeroChunk(RawChunk<__half>& out) { out.v = make_uint4(0, 0, 0, 0); }
__device__ __forceinline__ void ZeroChunk(RawChunk<float>& out) {
  out.a = out.b = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
}
__device__ __forceinline__ void Widen(const RawChunk<__half>& raw, float (&out)[kDims]) {
  const uint32_t words[4] = {raw.v.x, raw.v.y, raw.v.z, raw.v.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    out[2 * i] = __half2float(__ushort_as_half(static_cast<unsigned short>(words[i] & 0xffffu)));
    out[2 * i + 1] = __half2float(__ushort_as_half(static_cast<unsigned short>(words[i] >> 16)));
  }
}
__device__ __forceinline__ void Widen(const RawChunk<float>& raw, float (&out)[kDims]) {
  out[0] = raw.a.x;
  out[1] = raw.a.y;
  out[2] = raw.a.z;
  out[3] = raw.a.w;
  out[4] = raw.b.x;
  out[5] = raw.b.y;
  out[6] = raw.b.z;
  out[7] = raw.b.w;
}

// One query head's running softmax over the positions a lane group has
// seen: max m of the scores, s = sum exp(score - m), acc[i] = sum
// exp(score - m) V[dim i of the lane].
struct HeadState {
  float m = -INFINITY;
  float s = 0.0f;
  float acc[kDims] = {};

  __device__ void Add(float score, const float (&v)[kDims]) {
    if (score > m) {
      // m = -inf before the first position: the factor is exp(-inf) = 0 and
      // scales zeros.
      const float factor = expf(m - score);
      s *= factor;
#pragma unroll
      for (int i = 0; i < kDims; ++i) acc[i] *= factor;
      m = score;
    }
    // A -inf score adds nothing (and must not compute exp(-inf - -inf)); a
    // NaN score makes s NaN, so unwritten (poisoned) KV shows in the output.
    const float w = score == -INFINITY ? 0.0f : expf(score - m);
    s += w;
#pragma unroll
    for (int i = 0; i < kDims; ++i) acc[i] += w * v[i];
  }

  // Folds in the state of the lane `offset` away (same dims, other
  // positions): M = max, each side rescaled by exp(m - M), 0 for an empty
  // side (m = -inf). All lanes must call it (shuffles).
  __device__ void MergeLane(int offset) {
    const float other_m = __shfl_xor_sync(kFullMask, m, offset);
    const float other_s = __shfl_xor_sync(kFullMask, s, offset);
    const float max_m = fmaxf(m, other_m);
    const float mine = m == -INFINITY ? 0.0f : expf(m - max_m);
    const float theirs = other_m == -INFINITY ? 0.0f : expf(other_m - max_m);
    s = s * mine + other_s * theirs;
#pragma unroll
    for (int i = 0; i < kDims; ++i) {
      const float other_acc = __shfl_xor_sync(kFullMask, acc[i], offset);
      acc[i] = acc[i] * mine + other_acc * theirs;
    }
    m = max_m;
  }
};

// Grid (n_kv_heads x head_chunks, tokens or kMaxGridY, S), kAttnThreads. See
// launch_shapes.h for who covers what. Block (kv head g, chunk c, token t,
// split z) attends query heads h0 .. h0 + heads of g over the KV blocks of
// AttentionSplitRange(kv_blocks(t), S_t, z); with S_t == 1 it writes `out`,
// otherwise record ((t x n_heads + h) x S + z) of head_dim + 2 floats in
// `partials` (m, s, acc[0..head_dim)); z >= S_t does nothing.
template <typename KvT, int kGroup>
__global__ void __launch_bounds__(kAttnThreads)
    PagedAttentionKernel(const float* __restrict__ qkv, int64_t qkv_stride, int64_t tokens,
                         int32_t n_heads, KvShape kv, int32_t layer, StepTokens step, float scale,
                         AttentionLayout layout, float* __restrict__ out,
                         float* __restrict__ partials) {
  LetNextGridLaunch();  // the wo GEMV follows (grid_dependency.cuh)
  constexpr int kSteps = RawChunk<KvT>::kSteps;
  __shared__ float warp_m[kAttentionWarps][kGroup];
  __shared__ float warp_s[kAttentionWarps][kGroup];
  __shared__ float warp_acc[kAttentionWarps][kGroup][kMaxAttentionHeadDim];
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int32_t hd = kv.head_dim, bt = kv.block_tokens;
  const int32_t lanes = layout.lanes, positions_per_load = kWarp / lanes;
  const int32_t chunk = lane % lanes, offset = lane / lanes;
  // Lanes past head_dim / 8 (head_dim not a power of two x 8) hold zeros.
  const bool has_dims = chunk * kDims < hd;
  const int32_t group = n_heads / kv.n_kv_heads;
  const int32_t g = blockIdx.x / layout.head_chunks;
  const int32_t head_chunk = blockIdx.x % layout.head_chunks;
  const int32_t h0 = g * group + head_chunk * layout.per_chunk;
  const int32_t heads = min(layout.per_chunk, group - head_chunk * layout.per_chunk);
  const int32_t split = blockIdx.z, splits = gridDim.z;
  const uint64_t k_slab = kv.SlabOffset(layer, 0, g), v_slab = kv.SlabOffset(layer, 1, g);

  for (int64_t t = blockIdx.y; t < tokens; t += gridDim.y) {
    const int32_t n = step.pos[t] + 1;
    const int32_t kv_blocks = (n + bt - 1) / bt;
    const int32_t token_splits = AttentionTokenSplits(kv_blocks, splits, layout.min_blocks);
    // Uniform over the block: every thread skips the barriers below alike.
    if (split >= token_splits) continue;
    const AttentionBlockRange range = AttentionSplitRange(kv_blocks, token_splits, split);

    float q[kGroup][kDims];
#pragma unroll
    for (int h = 0; h < kGroup; ++h) {
      const float* qh = qkv + t * qkv_stride + static_cast<int64_t>(h0 + h) * hd + chunk * kDims;
      float4 a = make_float4(0.0f, 0.0f, 0.0f, 0.0f), b = a;
      if (h < heads && has_dims) {
        a = *reinterpret_cast<const float4*>(qh);
        b = *reinterpret_cast<const float4*>(qh + 4);
      }
      q[h][0] = a.x, q[h][1] = a.y, q[h][2] = a.z, q[h][3] = a.w;
      q[h][4] = b.x, q[h][5] = b.y, q[h][6] = b.z, q[h][7] = b.w;
    }
    HeadState state[kGroup];
    const uint64_t* blocks = step.block_addr + step.table_start[t];
    for (int32_t kb = range.first + warp; kb < range.last; kb += kAttentionWarps) {
      const uint64_t block = blocks[kb];
      const KvT* k_rows = reinterpret_cast<const KvT*>(block + k_slab) + chunk * kDims;
      const KvT* v_rows = reinterpret_cast<const KvT*>(block + v_slab) + chunk * kDims;
      const int32_t block_first = kb * bt;
      for (int32_t s0 = 0; s0 < bt; s0 += kSteps * positions_per_load) {
        // Load every step's K and V before the first is used.
        RawChunk<KvT> k_raw[kSteps], v_raw[kSteps];
        bool valid[kSteps];
#pragma unroll
        for (int u = 0; u < kSteps; ++u) {
          const int32_t slot = s0 + u * positions_per_load + offset;
          valid[u] = slot < bt && block_first + slot < n;
          if (valid[u] && has_dims) {
            LoadChunk(k_rows + slot * hd, k_raw[u]);
            LoadChunk(v_rows + slot * hd, v_raw[u]);
          } else {
            ZeroChunk(k_raw[u]);
            ZeroChunk(v_raw[u]);
          }
        }
#pragma unroll
        for (int u = 0; u < kSteps; ++u) {
          // Warp-uniform: a step wholly past the block is skipped by all.
          if (s0 + u * positions_per_load >= bt) break;
          float k[kDims], v[kDims];
          Widen(k_raw[u], k);
          Widen(v_raw[u], v);
          float dot[kGroup];
#pragma unroll
          for (int h = 0; h < kGroup; ++h) {
            float d = 0.0f;
#pragma unroll
            for (int i = 0; i < kDims; ++i) d += q[h][i] * k[i];
            dot[h] = d;
          }
          // Sum over the position's lanes (xor offsets below `lanes` stay
          // within the lane group).
          for (int o = lanes / 2; o > 0; o /= 2) {
#pragma unroll
            for (int h = 0; h < kGroup; ++h) dot[h] += __shfl_xor_sync(kFullMask, dot[h], o);
          }
          if (valid[u]) {
#pragma unroll
            for (int h = 0; h < kGroup; ++h) state[h].Add(dot[h] * scale, v);
          }
        }
      }
    }
    // The warp's position groups hold the same dims for other positions.
    for (int o = lanes; o < kWarp; o *= 2) {
#pragma unroll
      for (int h = 0; h < kGroup; ++h) state[h].MergeLane(o);
    }
    if (offset == 0) {
#pragma unroll
      for (int h = 0; h < kGroup; ++h) {
        if (lane == 0) {
          warp_m[warp][h] = state[h].m;
          warp_s[warp][h] = state[h].s;
        }
        if (has_dims) {
#pragma unroll
          for (int i = 0; i < kDims; ++i) warp_acc[warp][h][chunk * kDims + i] = state[h].acc[i];
        }
      }
    }
    __syncthreads();
    // The warps merged as the lanes were. Split 0 of a token always holds
    // position 0, so its m is finite unless every score was -inf.
    for (int32_t item = threadIdx.x; item < heads * hd; item += blockDim.x) {
      const int32_t h = item / hd, d = item - h * hd;
      float max_m = -INFINITY;
#pragma unroll
      for (int w = 0; w < kAttentionWarps; ++w) max_m = fmaxf(max_m, warp_m[w][h]);
      float sum = 0.0f, value = 0.0f;
#pragma unroll
      for (int w = 0; w < kAttentionWarps; ++w) {
        const float factor = warp_m[w][h] == -INFINITY ? 0.0f : expf(warp_m[w][h] - max_m);
        sum += warp_s[w][h] * factor;
        value += warp_acc[w][h][d] * factor;
      }
      const int64_t head = t * n_heads + h0 + h;
      if (token_splits == 1) {
        out[head * hd + d] = value * (1.0f / sum);
      } else {
        float* record = partials + (head * splits + split) * (hd + 2);
        if (d == 0) {
          record[0] = max_m;
          record[1] = sum;
        }
        record[2 + d] = value;
      }
    }
    // The next token's iteration rewrites the shared arrays.
    __syncthreads();
  }
}

// Split-K, second pass. Grid (n_heads, tokens or kMaxGridY); one block per
// (token, head) merges the token's S_t records (S_t recomputed from pos[t]
// as the first pass did; S_t == 1 was written directly) as the warps were
// merged: M = max m_i, factor_i = exp(m_i - M) (0 for an empty range),
// out[d] = sum_i acc_i[d] factor_i / sum_i s_i factor_i.
__global__ void __launch_bounds__(kCombineThreads)
    CombineAttentionSplitsKernel(const float* __restrict__ partials, int64_t tokens,
                                 int32_t n_heads, int32_t hd, int32_t splits, int32_t block_tokens,
                                 int32_t min_blocks, const int32_t* __restrict__ positions,
                                 float* __restrict__ out) {
  LetNextGridLaunch();  // the wo GEMV follows (grid_dependency.cuh)
  const int32_t h = blockIdx.x;
  const int32_t record_floats = hd + 2;
  for (int64_t t = blockIdx.y; t < tokens; t += gridDim.y) {
    const int32_t kv_blocks = (positions[t] + 1 + block_tokens - 1) / block_tokens;
    const int32_t used = AttentionTokenSplits(kv_blocks, splits, min_blocks);
    if (used == 1) continue;
    const float* records = partials + (t * n_heads + h) * splits * record_floats;
    // Every thread computes the (at most 32) factors itself: no shared
    // memory, no barrier; the loops unroll over kMaxAttentionSplits so the
    // factors stay in registers.
    float max_m = -INFINITY;
#pragma unroll
    for (int i = 0; i < kMaxAttentionSplits; ++i) {
      if (i < used) max_m = fmaxf(max_m, records[i * record_floats]);
    }
    float factor[kMaxAttentionSplits];
    float sum = 0.0f;
#pragma unroll
    for (int i = 0; i < kMaxAttentionSplits; ++i) {
      factor[i] = 0.0f;
      if (i < used) {
        const float m = records[i * record_floats];
        factor[i] = m == -INFINITY ? 0.0f : expf(m - max_m);
        sum += records[i * record_floats + 1] * factor[i];
      }
    }
    const float inv = 1.0f / sum;
    float* o = out + (t * n_heads + h) * hd;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
      float v = 0.0f;
#pragma unroll
      for (int i = 0; i < kMaxAttentionSplits; ++i) {
        if (i < used) v += records[i * record_floats + 2 + d] * factor[i];
      }
      o[d] = v * inv;
    }
  }
}

// SM count of each device ordinal, asked once (0 = not yet). Relaxed atomics:
// two threads racing on the first launch both ask and store the same value.
constexpr int kCachedDevices = 64;
std::atomic<int> sm_counts[kCachedDevices];

// The current device's SM count; 0 when the runtime cannot say (then the
// launcher does not split).
int64_t MultiprocessorCount() {
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return 0;
  const bool cached = device >= 0 && device < kCachedDevices;
  if (cached) {
    if (const int count = sm_counts[device].load(std::memory_order_relaxed); count > 0) {
      return count;
    }
  }
  int count = 0;
  if (cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) {
    return 0;
  }
  if (cached) sm_counts[device].store(count, std::memory_order_relaxed);
  return count;
}

// Blocks of one split: one per (token, KV head, head chunk).
int64_t BlocksPerSplit(int64_t tokens, int32_t n_heads, int32_t n_kv_heads) {
  return tokens * n_kv_heads * AttentionHeadChunksFor(n_heads / n_kv_heads).chunks;
}

// The grid's split count S before fitting a scratch: about kSplitWaves
// blocks per SM, from tokens, heads and the SM count only (never positions:
// graphs capture S).
int64_t WantedSplits(int64_t tokens, int32_t n_heads, int32_t n_kv_heads, int force_splits) {
  const int64_t blocks = BlocksPerSplit(tokens, n_heads, n_kv_heads);
  int64_t splits = force_splits;
  if (splits <= 0) splits = (kSplitWaves * MultiprocessorCount() + blocks - 1) / blocks;
  return std::clamp<int64_t>(splits, 1, kMaxAttentionSplits);
}

uint64_t SplitFloats(int64_t splits, int64_t tokens, int32_t n_heads, int32_t head_dim) {
  return static_cast<uint64_t>(splits) * static_cast<uint64_t>(tokens) *
         static_cast<uint64_t>(n_heads) * static_cast<uint64_t>(head_dim + 2);
}

template <typename KvT, int kGroup>
void LaunchTyped(dim3 grid, const float* qkv, int64_t qkv_stride, int64_t tokens, int32_t n_heads,
                 const KvShape& kv, int32_t layer, const StepTokens& step, float scale,
                 const AttentionLayout& layout, float* out, float* partials, cudaStream_t stream) {
  PagedAttentionKernel<KvT, kGroup><<<grid, kAttnThreads, 0, stream>>>(
      qkv, qkv_stride, tokens, n_heads, kv, layer, step, scale, layout, out, partials);
}

template <typename KvT>
void LaunchForKv(dim3 grid, const float* qkv, int64_t qkv_stride, int64_t tokens, int32_t n_heads,
                 const KvShape& kv, int32_t layer, const StepTokens& step, float scale,
                 const AttentionLayout& layout, float* out, float* partials, cudaStream_t stream) {
  if (layout.per_chunk == 1) {
    LaunchTyped<KvT, 1>(grid, qkv, qkv_stride, tokens, n_heads, kv, layer, step, scale, layout, out,
                        partials, stream);
  } else if (layout.per_chunk == 2) {
    LaunchTyped<KvT, 2>(grid, qkv, qkv_stride, tokens, n_heads, kv, layer, step, scale, layout, out,
                        partials, stream);
  } else {
    LaunchTyped<KvT, kMaxAttentionGroup>(grid, qkv, qkv_stride, tokens, n_heads, kv, layer, step,
                                         scale, layout, out, partials, stream);
  }
}

}  // namespace

void LaunchPagedAttention(const float* qkv, int64_t qkv_stride, int64_t tokens, int32_t n_heads,
                          const KvShape& kv, int32_t layer, const StepTokens& step, float scale,
                          float* out, cudaStream_t stream, const AttentionScratch& scratch) {
  if (tokens <= 0 || n_heads <= 0 || kv.n_kv_heads <= 0 || n_heads % kv.n_kv_heads != 0) return;
  if (kv.head_dim <= 0 || kv.head_dim % kDims != 0 || kv.head_dim > kMaxAttentionHeadDim) return;
  const AttentionHeadChunks chunks = AttentionHeadChunksFor(n_heads / kv.n_kv_heads);
  AttentionLayout layout;
  layout.lanes = AttentionLanes(kv.head_dim);
  layout.head_chunks = chunks.chunks;
  layout.per_chunk = chunks.per_chunk;
  layout.min_blocks = scratch.min_blocks_per_split > 0
                          ? scratch.min_blocks_per_split
                          : std::max<int32_t>(1, kMinSplitPositions / kv.block_tokens);
  int64_t splits = 1;
  if (scratch.partials != nullptr) {
    splits = WantedSplits(tokens, n_heads, kv.n_kv_heads, scratch.force_splits);
    while (splits > 1 && SplitFloats(splits, tokens, n_heads, kv.head_dim) > scratch.floats) {
      --splits;
    }
  }
  const unsigned grid_y = static_cast<unsigned>(std::min(tokens, kMaxGridY));
  const dim3 grid(static_cast<unsigned>(kv.n_kv_heads * chunks.chunks), grid_y,
                  static_cast<unsigned>(splits));
  if (kv.f16) {
    LaunchForKv<__half>(grid, qkv, qkv_stride, tokens, n_heads, kv, layer, step, scale, layout, out,
                        scratch.partials, stream);
  } else {
    LaunchForKv<float>(grid, qkv, qkv_stride, tokens, n_heads, kv, layer, step, scale, layout, out,
                       scratch.partials, stream);
  }
  if (splits > 1) {
    const dim3 combine_grid(static_cast<unsigned>(n_heads), grid_y);
    CombineAttentionSplitsKernel<<<combine_grid, kCombineThreads, 0, stream>>>(
        scratch.partials, tokens, n_heads, kv.head_dim, static_cast<int32_t>(splits),
        kv.block_tokens, layout.min_blocks, step.pos, out);
  }
}

size_t AttentionScratchFloats(int64_t max_tokens, int32_t n_heads, int32_t n_kv_heads,
                              int32_t head_dim) {
  if (n_kv_heads <= 0 || n_heads % n_kv_heads != 0) return 0;
  uint64_t most = 0;
  for (int64_t tokens = 1; tokens <= max_tokens; ++tokens) {
    const int64_t splits = WantedSplits(tokens, n_heads, n_kv_heads, 0);
    // Splits only shrink as tokens grow: past 1, no larger step splits.
    if (splits == 1) break;
    most = std::max(most, SplitFloats(splits, tokens, n_heads, head_dim));
  }
  return static_cast<size_t>(most);
}

}  // namespace tokenmill::devices::cuda::core
