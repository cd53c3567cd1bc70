// The CUDA kernels of a Llama-family layer other than the weight matmuls
// (matmul.h): embedding, residual add + RMSNorm, bias + RoPE + paged KV
// write, paged attention (decode and chunked prefill alike), SiLU-mul and
// greedy argmax. Same math as the CPU executor (devices/cpu) and the naive
// reference (tests/reference): f32 activations, f32 accumulation, KV in f16
// or f32.
//
// All pointers are device memory. Every launcher enqueues on `stream` and
// returns; none allocates or synchronizes, so a whole step can be captured in
// a CUDA graph. Per-token data (positions, block tables) is read from device
// memory inside the kernels, so a captured graph stays valid when it changes.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "devices/cuda/core/device_matrix.h"

#ifdef __CUDACC__
#define TM_HOST_DEVICE __host__ __device__
#else
#define TM_HOST_DEVICE
#endif

namespace tokenmill::devices::cuda::core {

// Where the step's tokens are and where their KV lives (device arrays, one
// entry per token of the step, T in all).
struct StepTokens {
  const int32_t* ids = nullptr;  // token id
  const int32_t* pos = nullptr;  // position in its sequence
  // Index into `block_addr` of the token's sequence's first block: block i of
  // the sequence (positions [i x block_tokens, (i + 1) x block_tokens)) is at
  // block_addr[table_start[t] + i]. Covers positions 0..pos[t].
  const int32_t* table_start = nullptr;
  const uint64_t* block_addr = nullptr;  // device address of each KV block
};

// The paged KV cache's shape (devices/kv_layout.h): a block holds
// block_tokens positions of every layer as
// [layer][k=0|v=1][kv_head][token_in_block][head_dim], elements f16 or f32.
struct KvShape {
  int32_t block_tokens = 16;
  int32_t n_kv_heads = 0;
  int32_t head_dim = 0;
  bool f16 = true;
  // Byte offset of (layer, which, head) in a block, as KvLayout::SlabOffset.
  TM_HOST_DEVICE uint64_t SlabOffset(int32_t layer, int32_t which, int32_t head) const {
    const uint64_t slab = static_cast<uint64_t>(block_tokens) * head_dim * (f16 ? 2 : 4);
    return ((static_cast<uint64_t>(layer) * 2 + which) * n_kv_heads + head) * slab;
  }
};

// x[t * dim + c] = table(ids[t], c) for t < tokens: rows of the token
// embedding (any WeightType) as f32. Token ids are checked by the host before
// the step.
void LaunchEmbed(const DeviceMatrix& table, const int32_t* ids, int64_t tokens, float* x,
                 cudaStream_t stream);

// For each output row r < rows, with source row s = gather ? gather[r] : r:
//   if residual: x[s] += residual[s]      (written back into x)
//   out[r] = x[s] / sqrt(mean(x[s]^2) + eps) * weight
// Rows are `dim` floats, packed. One block per row; sums in f32. Without
// gather, out may equal residual (each row is read before it is written);
// with gather, out must not overlap x or residual.
void LaunchAddRmsNorm(float* x, const float* residual, const float* weight, const int32_t* gather,
                      int64_t rows, int64_t dim, float eps, float* out, cudaStream_t stream);

// What every layer's LaunchBiasRopeStoreKv of a step shares, computed once
// per step by LaunchStepTables (device memory the caller owns, T tokens;
// half = head_dim / 2):
//   rope[t * half + i] = (cos, sin) of pos[t] x inv_freq[i], the angle and
//     both functions in f64 like the CPU (pos x inv_freq reaches thousands
//     of radians, where f32 would lose the phase), rounded to f32;
//   kv_block[t] = block_addr[table_start[t] + pos[t] / block_tokens], the
//     block that receives token t's K and V.
struct StepTables {
  float2* rope = nullptr;        // T x half
  uint64_t* kv_block = nullptr;  // T
};
void LaunchStepTables(const float* inv_freq, int32_t head_dim, int64_t tokens, const KvShape& kv,
                      const StepTokens& step, const StepTables& tables, cudaStream_t stream);

// qkv holds T rows of q_dim + 2 x kv_dim floats (q heads, then k heads, then
// v heads; q_dim = n_heads x head_dim, kv_dim = n_kv_heads x head_dim),
// qkv_stride apart. For each token: adds the biases (each may be null),
// rotates q and k heads at the token's position by tables.rope (halves =
// RopeStyle::kHalves, else adjacent pairs), writes the rotated q back into
// qkv, and stores k and v of layer `layer` into tables.kv_block[t] at slot
// pos % block_tokens (converted to f16 when kv.f16). `tables` must have been
// filled by LaunchStepTables for this step's tokens (earlier on the stream).
// Indices within a token are 32-bit: n_heads x head_dim < 2^31.
void LaunchBiasRopeStoreKv(float* qkv, int64_t qkv_stride, int64_t tokens, int32_t n_heads,
                           const float* bq, const float* bk, const float* bv, bool halves,
                           const KvShape& kv, int32_t layer, const StepTokens& step,
                           const StepTables& tables, cudaStream_t stream);

// Causal attention over the paged cache: for each token t and query head h,
// out[t * n_heads * head_dim + h * head_dim + d] =
//   sum_p softmax_p(q . K[p] x scale) V[p][d] over positions p = 0..pos[t] of
// the token's sequence, reading kv head h / (n_heads / n_kv_heads) of layer
// `layer`. q is the rotated q at qkv + t * qkv_stride (its first n_heads x
// head_dim floats; qkv 16-byte aligned, qkv_stride a multiple of 4: q is
// read as float4s). The same kernel serves decode (one token per sequence)
// and chunked prefill (a chunk's tokens each see the positions before them,
// including those written by this step's LaunchBiasRopeStoreKv). head_dim a
// multiple of 8, at most 256 (the Engine refuses others; the launcher
// launches nothing for them). Online softmax in f32. The blocks and warps
// are laid out as launch_shapes.h says: one block per (token, KV head, chunk
// of up to 4 of its query heads), one warp per KV block, 16-byte K/V loads.
//
// Split-K ("flash-decoding"): when tokens x KV heads is small next to the
// GPU's SM count (small decode batches), the grid gets S > 1 splits: S is
// chosen on the host from tokens, heads and the SM count only (or is
// scratch.force_splits), never from the positions; S <= 32, lowered until
// S x tokens x n_heads x (head_dim + 2) floats fit in scratch.floats. Each
// token then uses S_t = AttentionTokenSplits(its KV blocks, S, min_blocks)
// of them, computed on the device from pos[t] (min_blocks: one split per
// 64 positions' blocks, or scratch.min_blocks_per_split): splits past S_t
// exit at once, a token with S_t == 1 is written directly, and otherwise
// each split writes its range's max, sum and unnormalized output to
// scratch.partials and a second kernel merges the S_t records. A captured
// graph therefore stays valid when positions change: the grid depends on
// tokens only, the work on the positions read at replay. The split result
// equals the single pass up to f32 rounding (the sums are grouped
// differently).
struct AttentionScratch {
  // Device memory of `floats` floats, overwritten by each split launch (no
  // initialization needed); null = never split. It must outlive the
  // launch's kernels (and any graph that captured them) and must not be
  // shared by launches that may run at the same time.
  float* partials = nullptr;
  size_t floats = 0;
  // Tests: the grid's split count (1..32, larger counts clamp to 32), still
  // lowered to fit `floats`; 0 = chosen by the launcher from the SM count.
  int force_splits = 0;
  // Tests: KV blocks per split at least (>= 1); 0 = 64 positions' worth.
  int min_blocks_per_split = 0;
};
void LaunchPagedAttention(const float* qkv, int64_t qkv_stride, int64_t tokens, int32_t n_heads,
                          const KvShape& kv, int32_t layer, const StepTokens& step, float scale,
                          float* out, cudaStream_t stream, const AttentionScratch& scratch);

// Floats of AttentionScratch::partials that let every step of 1..max_tokens
// tokens split as LaunchPagedAttention would choose on the current device
// (0 when none would split): a buffer of this size never lowers a split.
size_t AttentionScratchFloats(int64_t max_tokens, int32_t n_heads, int32_t n_kv_heads,
                              int32_t head_dim);

// gate_up holds rows of 2 x ffn floats (gate, then up), rows apart by
// 2 x ffn; out[t * ffn + i] = silu(gate[t][i]) x up[t][i], silu(g) =
// g / (1 + exp(-g)).
void LaunchSiluMul(const float* gate_up, int64_t rows, int64_t ffn, float* out,
                   cudaStream_t stream);

// out[r] = index of the largest of logits[r * vocab .. + vocab) (the lowest
// index on ties, -0 and +0 tie; NaN never wins unless the row is all NaN,
// then 0). vocab < 2^31. Several blocks per row (launch_shapes.h) fold
// packed (value, index) keys with a 64-bit atomicMax into `scratch`
// (2 x rows uint64 of device memory, cleared by the launch itself with a
// memset node; not shared by launches that may run at the same time); the
// row's last block to finish writes out[r].
void LaunchArgmax(const float* logits, int64_t rows, int64_t vocab, int32_t* out, uint64_t* scratch,
                  cudaStream_t stream);

}  // namespace tokenmill::devices::cuda::core
