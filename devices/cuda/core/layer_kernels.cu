// The CUDA kernels of layer_kernels.h but paged attention (paged_attention.cu):
// embedding, residual add + RMSNorm, bias + RoPE + paged KV write, SiLU-mul
// and argmax, with the CPU executor's formulas (devices/cpu) so both backends
// agree within rounding of the summation order.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "devices/cuda/core/grid_dependency.cuh"
#include "devices/cuda/core/launch_shapes.h"
#include "devices/cuda/core/layer_kernels.h"

namespace tokenmill::devices::cuda::core {
namespace {

constexpr int kWarp = 32;
constexpr unsigned kFullMask = 0xffffffffu;

constexpr int kEmbedThreads = 256;
constexpr int kNormThreads = 256;
constexpr int kRopeThreads = 128;
constexpr int kElementwiseThreads = 256;
constexpr int kArgmaxThreads = 256;

// Enough blocks of a grid-stride loop to fill the GPU several times over.
constexpr int64_t kMaxElementwiseBlocks = 4096;

// ---------------------------------------------------------------------------
// Embedding

__device__ float LoadWeight(const DeviceMatrix& w, int64_t row, int64_t col) {
  const int64_t index = row * w.cols + col;
  switch (w.type) {
    case WeightType::kF32:
      return static_cast<const float*>(w.data)[index];
    case WeightType::kF16:
      return __half2float(static_cast<const __half*>(w.data)[index]);
    case WeightType::kBF16:
      return __bfloat162float(static_cast<const __nv_bfloat16*>(w.data)[index]);
    case WeightType::kQ8_0: {
      const float scale =
          __half2float(__ushort_as_half(w.scales[row * (w.cols / kQ8Block) + col / kQ8Block]));
      return scale * static_cast<float>(static_cast<const int8_t*>(w.data)[index]);
    }
  }
  return 0.0f;
}

__global__ void EmbedKernel(DeviceMatrix table, const int32_t* __restrict__ ids,
                            float* __restrict__ x) {
  const int64_t t = blockIdx.x;
  const int64_t row = ids[t];
  float* out = x + t * table.cols;
  for (int64_t c = threadIdx.x; c < table.cols; c += blockDim.x) {
    out[c] = LoadWeight(table, row, c);
  }
}

// ---------------------------------------------------------------------------
// Block reductions

__device__ float WarpSum(float v) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}

// ---------------------------------------------------------------------------
// Residual add + RMSNorm

// Sum of `v` over the block with a single barrier: each warp's sum goes to
// shared memory, and after the one __syncthreads every thread adds the warp
// sums itself, in the same order, so all get the same total. Uses its shared
// array once: call at most once per kernel, from all threads.
__device__ float BlockSumOneBarrier(float v) {
  __shared__ float partial[kWarp];
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  v = WarpSum(v);
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  const int warps = blockDim.x / kWarp;
  float total = 0.0f;
  for (int w = 0; w < warps; ++w) total += partial[w];
  return total;
}

// The RMSNorm scale in f64 like the CPU's RmsNorm, from the f32 sum of squares.
__device__ float RmsScale(float sum_squares, int64_t dim, float eps) {
  return static_cast<float>(
      1.0 / sqrt(static_cast<double>(sum_squares) / static_cast<double>(dim) + eps));
}

// One block of NormThreads(dim) threads per row (launch_shapes.h): thread i
// holds float4s i, i + blockDim.x, ... (kNormVecsPerThread at most) of its row
// in registers from the add to the scaled store, so x is read once and the
// row takes one barrier. dim % 4 == 0 and every pointer 16-byte aligned.
__global__ void __launch_bounds__(kMaxNormThreads)
    AddRmsNormVecKernel(float* x, const float* residual, const float* __restrict__ weight,
                        const int32_t* gather, int32_t dim, float eps, float* out) {
  LetNextGridLaunch();  // a GEMV follows (grid_dependency.cuh)
  const int32_t r = blockIdx.x;
  const int32_t s = gather != nullptr ? gather[r] : r;
  const int32_t vecs = dim / 4;
  // Not __restrict__: without gather out may be residual. Each thread reads
  // and writes only its own float4s, so the alias never crosses threads.
  float4* xs = reinterpret_cast<float4*>(x + static_cast<int64_t>(s) * dim);
  const float4* res =
      residual != nullptr
          ? reinterpret_cast<const float4*>(residual + static_cast<int64_t>(s) * dim)
          : nullptr;
  float4 v[kNormVecsPerThread];
  float sum = 0.0f;
#pragma unroll
  for (int j = 0; j < kNormVecsPerThread; ++j) {
    const int32_t i = static_cast<int32_t>(threadIdx.x) + j * static_cast<int32_t>(blockDim.x);
    v[j] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (i < vecs) {
      v[j] = xs[i];
      if (res != nullptr) {
        const float4 b = res[i];
        v[j].x += b.x;
        v[j].y += b.y;
        v[j].z += b.z;
        v[j].w += b.w;
        xs[i] = v[j];
      }
      sum += v[j].x * v[j].x + v[j].y * v[j].y + v[j].z * v[j].z + v[j].w * v[j].w;
    }
  }
  const float inv = RmsScale(BlockSumOneBarrier(sum), dim, eps);
  float4* o = reinterpret_cast<float4*>(out + static_cast<int64_t>(r) * dim);
  const float4* w4 = reinterpret_cast<const float4*>(weight);
#pragma unroll
  for (int j = 0; j < kNormVecsPerThread; ++j) {
    const int32_t i = static_cast<int32_t>(threadIdx.x) + j * static_cast<int32_t>(blockDim.x);
    if (i < vecs) {
      const float4 w = __ldg(w4 + i);
      o[i] = make_float4(v[j].x * inv * w.x, v[j].y * inv * w.y, v[j].z * inv * w.z,
                         v[j].w * inv * w.w);
    }
  }
}

// Any dim or alignment (what AddRmsNormVecKernel cannot take): one block of
// kNormThreads per row, the row read from memory again for the store.
__global__ void AddRmsNormKernel(float* x, const float* residual, const float* __restrict__ weight,
                                 const int32_t* gather, int64_t dim, float eps, float* out) {
  LetNextGridLaunch();  // a GEMV follows (grid_dependency.cuh)
  const int64_t r = blockIdx.x;
  const int64_t s = gather != nullptr ? gather[r] : r;
  float* xs = x + s * dim;
  float sum = 0.0f;
  for (int64_t c = threadIdx.x; c < dim; c += blockDim.x) {
    float v = xs[c];
    if (residual != nullptr) {
      v += residual[s * dim + c];
      xs[c] = v;
    }
    sum += v * v;
  }
  const float inv = RmsScale(BlockSumOneBarrier(sum), dim, eps);
  float* o = out + r * dim;
  for (int64_t c = threadIdx.x; c < dim; c += blockDim.x) o[c] = xs[c] * inv * weight[c];
}

// ---------------------------------------------------------------------------
// Bias + RoPE + KV store

template <typename KvT>
__device__ void StoreKv(KvT* slab, int64_t elem, float v);
template <>
__device__ void StoreKv<__half>(__half* slab, int64_t elem, float v) {
  slab[elem] = __float2half_rn(v);
}
template <>
__device__ void StoreKv<float>(float* slab, int64_t elem, float v) {
  slab[elem] = v;
}

// Rotation of pair (x0, x1) by (c, s), as devices/cpu/kernels.cc Rope:
// x0' = x0 c - x1 s, x1' = x0 s + x1 c. Explicit roundings so nvcc does not
// fuse into FMAs and the result matches the CPU bit for bit.
__device__ float2 Rotate(float x0, float x1, float c, float s) {
  return make_float2(__fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s)),
                     __fadd_rn(__fmul_rn(x0, s), __fmul_rn(x1, c)));
}

// Grid-stride over (token, pair index) items; item t x half (i == 0) also
// resolves the token's KV block.
__global__ void StepTablesKernel(const float* __restrict__ inv_freq, int32_t half, int32_t items,
                                 int32_t block_tokens, StepTokens step, float2* __restrict__ rope,
                                 uint64_t* __restrict__ kv_block) {
  for (int32_t item = blockIdx.x * blockDim.x + threadIdx.x; item < items;
       item += gridDim.x * blockDim.x) {
    const int32_t t = item / half, i = item - t * half;
    const int32_t pos = step.pos[t];
    double s = 0.0, c = 0.0;
    sincos(static_cast<double>(pos) * static_cast<double>(inv_freq[i]), &s, &c);
    rope[item] = make_float2(static_cast<float>(c), static_cast<float>(s));
    if (i == 0) kv_block[t] = step.block_addr[step.table_start[t] + pos / block_tokens];
  }
}

// One block per token. Work items: the q pairs, then the k pairs, then the v
// elements; each item owns its elements, so no two threads touch the same
// float. The token's position, KV block and row are loaded once per block.
template <typename KvT>
__global__ void BiasRopeStoreKvKernel(float* __restrict__ qkv, int64_t qkv_stride, int32_t n_heads,
                                      const float* __restrict__ bq, const float* __restrict__ bk,
                                      const float* __restrict__ bv, bool halves, KvShape kv,
                                      int32_t layer, const int32_t* __restrict__ positions,
                                      const float2* __restrict__ rope,
                                      const uint64_t* __restrict__ kv_block) {
  const int32_t t = blockIdx.x;
  const int32_t pos = positions[t];
  const int32_t hd = kv.head_dim, half = hd / 2;
  const float2* cos_sin = rope + static_cast<int64_t>(t) * half;
  const uint64_t block = kv_block[t];
  KvT* k_slab0 = reinterpret_cast<KvT*>(block + kv.SlabOffset(layer, 0, 0));
  KvT* v_slab0 = reinterpret_cast<KvT*>(block + kv.SlabOffset(layer, 1, 0));
  // Heads of one (layer, which) are consecutive slabs of block_tokens rows.
  const int32_t slab_elems = kv.block_tokens * hd;
  const int32_t slot = (pos % kv.block_tokens) * hd;

  // Pair i of a head: adjacent (2i, 2i+1) or halves (i, i+half).
  const int32_t a_step = halves ? 1 : 2;
  const int32_t b_offset = halves ? half : 1;
  const int32_t q_pairs = n_heads * half;
  const int32_t k_pairs = kv.n_kv_heads * half;
  const int32_t v_elems = kv.n_kv_heads * hd;
  const int32_t q_dim = n_heads * hd;
  const int32_t kv_dim = kv.n_kv_heads * hd;
  float* row = qkv + static_cast<int64_t>(t) * qkv_stride;

  for (int32_t item = threadIdx.x; item < q_pairs + k_pairs + v_elems; item += blockDim.x) {
    if (item < q_pairs + k_pairs) {
      const bool is_q = item < q_pairs;
      const int32_t pair = is_q ? item : item - q_pairs;
      const int32_t head = pair / half;
      const int32_t i = pair - head * half;
      const int32_t a = i * a_step, b = a + b_offset;
      const int32_t head_base = head * hd;
      float* x = row + (is_q ? 0 : q_dim) + head_base;
      const float* bias = is_q ? bq : bk;
      float x0 = x[a], x1 = x[b];
      if (bias != nullptr) {
        x0 += bias[head_base + a];
        x1 += bias[head_base + b];
      }
      const float2 cs = cos_sin[i];
      const float2 r = Rotate(x0, x1, cs.x, cs.y);
      if (is_q) {
        x[a] = r.x;
        x[b] = r.y;
      } else {
        KvT* slab = k_slab0 + head * slab_elems;
        StoreKv(slab, slot + a, r.x);
        StoreKv(slab, slot + b, r.y);
      }
    } else {
      const int32_t e = item - q_pairs - k_pairs;
      const int32_t head = e / hd;
      const int32_t d = e - head * hd;
      float v = row[q_dim + kv_dim + e];
      if (bv != nullptr) v += bv[e];
      StoreKv(v_slab0 + head * slab_elems, slot + d, v);
    }
  }
}

// ---------------------------------------------------------------------------
// SiLU-mul and argmax

__global__ void SiluMulKernel(const float* __restrict__ gate_up, int64_t rows, int64_t ffn,
                              float* __restrict__ out) {
  LetNextGridLaunch();  // the down GEMV follows (grid_dependency.cuh)
  const int64_t n = rows * ffn;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    const int64_t t = i / ffn, c = i % ffn;
    const float g = gate_up[t * 2 * ffn + c], u = gate_up[t * 2 * ffn + ffn + c];
    out[i] = g / (1.0f + expf(-g)) * u;
  }
}

// Grid (ArgmaxBlocksPerRow(vocab), rows). Each block reduces its range of
// the row to one packed key (launch_shapes.h ArgmaxKey) and folds it into
// scratch[2 r] with atomicMax; then counts itself done in scratch[2 r + 1],
// and the row's last block reads the final key and writes out[r]. The fence
// between a block's atomicMax and its count makes every block's key visible
// to whichever block counts last (the CUDA threadFenceReduction pattern).
__global__ void __launch_bounds__(kArgmaxThreads)
    ArgmaxKernel(const float* __restrict__ logits, int64_t vocab, int64_t per_block,
                 unsigned long long* scratch, int32_t* __restrict__ out) {
  __shared__ unsigned long long warp_best[kArgmaxThreads / kWarp];
  const int32_t r = blockIdx.y;
  const float* row = logits + static_cast<int64_t>(r) * vocab;
  const int64_t begin = static_cast<int64_t>(blockIdx.x) * per_block;
  const int64_t end = begin + per_block < vocab ? begin + per_block : vocab;
  unsigned long long best = 0;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    const unsigned long long key =
        ArgmaxKey(__float_as_uint(__ldg(row + i)), static_cast<uint32_t>(i));
    best = key > best ? key : best;
  }
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    const unsigned long long other = __shfl_xor_sync(kFullMask, best, offset);
    best = other > best ? other : best;
  }
  if (lane == 0) warp_best[warp] = best;
  __syncthreads();
  if (threadIdx.x != 0) return;
  for (int w = 1; w < kArgmaxThreads / kWarp; ++w) best = warp_best[w] > best ? warp_best[w] : best;
  unsigned long long* row_best = scratch + 2 * static_cast<int64_t>(r);
  if (best != 0) atomicMax(row_best, best);
  __threadfence();
  if (atomicAdd(row_best + 1, 1ull) == gridDim.x - 1) {
    __threadfence();
    // An atomic read: the value at L2, after every block's atomicMax.
    out[r] = ArgmaxIndexOfKey(atomicMax(row_best, 0ull));
  }
}

}  // namespace

void LaunchEmbed(const DeviceMatrix& table, const int32_t* ids, int64_t tokens, float* x,
                 cudaStream_t stream) {
  if (tokens <= 0 || table.cols <= 0) return;
  EmbedKernel<<<static_cast<unsigned>(tokens), kEmbedThreads, 0, stream>>>(table, ids, x);
}

void LaunchAddRmsNorm(float* x, const float* residual, const float* weight, const int32_t* gather,
                      int64_t rows, int64_t dim, float eps, float* out, cudaStream_t stream) {
  if (rows <= 0 || dim <= 0) return;
  const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  const int threads = NormThreads(dim);
  if (threads > 0 && aligned(x) && aligned(residual) && aligned(weight) && aligned(out)) {
    AddRmsNormVecKernel<<<static_cast<unsigned>(rows), threads, 0, stream>>>(
        x, residual, weight, gather, static_cast<int32_t>(dim), eps, out);
  } else {
    AddRmsNormKernel<<<static_cast<unsigned>(rows), kNormThreads, 0, stream>>>(
        x, residual, weight, gather, dim, eps, out);
  }
}

void LaunchStepTables(const float* inv_freq, int32_t head_dim, int64_t tokens, const KvShape& kv,
                      const StepTokens& step, const StepTables& tables, cudaStream_t stream) {
  const int32_t half = head_dim / 2;
  if (tokens <= 0 || half <= 0) return;
  const int64_t items = tokens * half;
  const int64_t blocks =
      std::min((items + kElementwiseThreads - 1) / kElementwiseThreads, kMaxElementwiseBlocks);
  StepTablesKernel<<<static_cast<unsigned>(blocks), kElementwiseThreads, 0, stream>>>(
      inv_freq, half, static_cast<int32_t>(items), kv.block_tokens, step, tables.rope,
      tables.kv_block);
}

void LaunchBiasRopeStoreKv(float* qkv, int64_t qkv_stride, int64_t tokens, int32_t n_heads,
                           const float* bq, const float* bk, const float* bv, bool halves,
                           const KvShape& kv, int32_t layer, const StepTokens& step,
                           const StepTables& tables, cudaStream_t stream) {
  if (tokens <= 0) return;
  const unsigned grid = static_cast<unsigned>(tokens);
  if (kv.f16) {
    BiasRopeStoreKvKernel<__half>
        <<<grid, kRopeThreads, 0, stream>>>(qkv, qkv_stride, n_heads, bq, bk, bv, halves, kv, layer,
                                            step.pos, tables.rope, tables.kv_block);
  } else {
    BiasRopeStoreKvKernel<float>
        <<<grid, kRopeThreads, 0, stream>>>(qkv, qkv_stride, n_heads, bq, bk, bv, halves, kv, layer,
                                            step.pos, tables.rope, tables.kv_block);
  }
}

void LaunchSiluMul(const float* gate_up, int64_t rows, int64_t ffn, float* out,
                   cudaStream_t stream) {
  const int64_t n = rows * ffn;
  if (n <= 0) return;
  const int64_t blocks =
      std::min((n + kElementwiseThreads - 1) / kElementwiseThreads, kMaxElementwiseBlocks);
  SiluMulKernel<<<static_cast<unsigned>(blocks), kElementwiseThreads, 0, stream>>>(gate_up, rows,
                                                                                   ffn, out);
}

void LaunchArgmax(const float* logits, int64_t rows, int64_t vocab, int32_t* out, uint64_t* scratch,
                  cudaStream_t stream) {
  if (rows <= 0 || vocab <= 0) return;
  // A memset node (graph-capturable); its error, like the launch's, is left
  // for the caller's cudaGetLastError.
  (void)cudaMemsetAsync(scratch, 0, static_cast<size_t>(rows) * 2 * sizeof(uint64_t), stream);
  const dim3 grid(static_cast<unsigned>(ArgmaxBlocksPerRow(vocab)), static_cast<unsigned>(rows));
  ArgmaxKernel<<<grid, kArgmaxThreads, 0, stream>>>(
      logits, vocab, ArgmaxPerBlock(vocab), reinterpret_cast<unsigned long long*>(scratch), out);
}

}  // namespace tokenmill::devices::cuda::core
