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

// ---------------------------------------------------------------------------
// Paged attention (paged_attention.cu). A block serves one token, one KV
// head and a chunk of that KV head's query heads (so the KV head is read
// once for up to kMaxAttentionGroup query heads), and one split of the
// token's KV blocks; each of its warps takes whole KV blocks (warp w: the
// range's blocks w, w + kAttentionWarps, ...). Within a warp, AttentionLanes
// lanes cover one position: lane l holds dims [8 c, 8 c + 8) with c = l %
// lanes (one 16-byte load of f16) of position offset l / lanes, so a warp
// load covers 32 / lanes positions.
inline constexpr int kAttentionWarps = 4;
inline constexpr int kMaxAttentionGroup = 4;
inline constexpr int kMaxAttentionHeadDim = 256;
inline constexpr int kAttentionDimsPerLane = 8;
// At most this many splits of a token's KV blocks (the grid's z); each
// token uses fewer when its context is short (AttentionTokenSplits).
inline constexpr int kMaxAttentionSplits = 32;
// Positions a split takes at least, unless the caller forces another value.
inline constexpr int32_t kMinSplitPositions = 64;

// Lanes per position: the power of two >= head_dim / 8 (1..32 for head_dim
// a multiple of 8 up to 256).
TM_SHAPE_FN int AttentionLanes(int32_t head_dim) {
  const int32_t chunks = head_dim / kAttentionDimsPerLane;
  int lanes = 1;
  while (lanes < chunks) lanes *= 2;
  return lanes;
}

// A KV head's `group` query heads in `chunks` blocks of `per_chunk` (the last
// may have fewer): chunks = ceil(group / 4), per_chunk = ceil(group / chunks).
struct AttentionHeadChunks {
  int32_t chunks = 1;
  int32_t per_chunk = 1;
};
TM_SHAPE_FN AttentionHeadChunks AttentionHeadChunksFor(int32_t group) {
  AttentionHeadChunks c;
  c.chunks = (group + kMaxAttentionGroup - 1) / kMaxAttentionGroup;
  c.per_chunk = (group + c.chunks - 1) / c.chunks;
  return c;
}

// Splits token t uses out of the grid's `splits`: one per min_blocks KV
// blocks of its context (kv_blocks = ceil((pos[t] + 1) / block_tokens)), at
// least 1, at most `splits`. The kernels compute it on the device from the
// position, so a graph captured with a fixed grid adapts to each replay's
// context lengths.
TM_SHAPE_FN int32_t AttentionTokenSplits(int32_t kv_blocks, int32_t splits, int32_t min_blocks) {
  const int32_t wanted = (kv_blocks + min_blocks - 1) / min_blocks;
  return wanted < 1 ? 1 : wanted > splits ? splits : wanted;
}

// The KV blocks [first, last) of split `split` of token_splits: ranges of
// ceil(kv_blocks / token_splits) blocks; the last ones may be empty
// (first == last), split 0 never is.
struct AttentionBlockRange {
  int32_t first = 0;
  int32_t last = 0;
};
TM_SHAPE_FN AttentionBlockRange AttentionSplitRange(int32_t kv_blocks, int32_t token_splits,
                                                    int32_t split) {
  const int32_t per = (kv_blocks + token_splits - 1) / token_splits;
  const int64_t first = static_cast<int64_t>(split) * per;
  AttentionBlockRange r;
  r.first = static_cast<int32_t>(first < kv_blocks ? first : kv_blocks);
  r.last = static_cast<int32_t>(first + per < kv_blocks ? first + per : kv_blocks);
  return r;
}

}  // namespace tokenmill::devices::cuda::core
