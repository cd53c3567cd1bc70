// The work splits of the CUDA layer kernels (devices/cuda/core/launch_shapes.h),
// checked without a GPU: every element of every shape is covered exactly once.
#include "devices/cuda/core/launch_shapes.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

namespace tokenmill::devices::cuda::core {
namespace {

// Every float4 of a row is held by exactly one (thread, register) of the
// register-resident AddRmsNorm, for every dim it takes; it refuses exactly
// the dims that are not multiples of 4 or pass 16384.
TEST(CudaLaunchShapes, NormCoversEveryFloat4Once) {
  for (int64_t dim = 1; dim <= 17000; ++dim) {
    const int threads = NormThreads(dim);
    if (dim % 4 != 0 || dim > 16384) {
      EXPECT_EQ(threads, 0) << "dim " << dim;
      continue;
    }
    ASSERT_GT(threads, 0) << "dim " << dim;
    ASSERT_EQ(threads % 32, 0) << "dim " << dim;
    ASSERT_LE(threads, kMaxNormThreads) << "dim " << dim;
    const int64_t vecs = dim / 4;
    std::vector<int> seen(static_cast<size_t>(vecs), 0);
    for (int t = 0; t < threads; ++t) {
      for (int j = 0; j < kNormVecsPerThread; ++j) {
        const int64_t i = t + int64_t{j} * threads;  // the kernel's index
        if (i < vecs) ++seen[static_cast<size_t>(i)];
      }
    }
    for (int64_t i = 0; i < vecs; ++i)
      ASSERT_EQ(seen[static_cast<size_t>(i)], 1) << dim << " " << i;
    // No warp idles entirely.
    EXPECT_LT(int64_t{threads - 32} * kNormVecsPerThread, vecs) << "dim " << dim;
  }
}

// The blocks of a row cover each element exactly once, within 64 blocks.
TEST(CudaLaunchShapes, ArgmaxBlocksCoverTheRowOnce) {
  for (int64_t vocab : {int64_t{1}, int64_t{2}, int64_t{4095}, int64_t{4096}, int64_t{4097},
                        int64_t{32000}, int64_t{128256}, int64_t{151936}, int64_t{262144},
                        int64_t{262145}, int64_t{300001}, int64_t{1} << 30}) {
    const int64_t blocks = ArgmaxBlocksPerRow(vocab), per_block = ArgmaxPerBlock(vocab);
    ASSERT_GE(blocks, 1);
    ASSERT_LE(blocks, kMaxArgmaxBlocksPerRow);
    // Ranges [b x per_block, min(vocab, (b + 1) x per_block)): contiguous and
    // ending at vocab, so each element once; none empty.
    EXPECT_GE(blocks * per_block, vocab) << vocab;
    EXPECT_LT((blocks - 1) * per_block, vocab) << vocab << ": an empty block";
  }
}

// The old kernel's rule, scanning in order.
int32_t ArgmaxReference(const std::vector<float>& row) {
  int32_t best = -1;
  for (size_t i = 0; i < row.size(); ++i) {
    if (std::isnan(row[i])) continue;
    if (best < 0 || row[i] > row[static_cast<size_t>(best)]) best = static_cast<int32_t>(i);
  }
  return best < 0 ? 0 : best;
}

int32_t ArgmaxByKeys(const std::vector<float>& row) {
  uint64_t best = 0;
  for (size_t i = 0; i < row.size(); ++i) {
    best = std::max(best, ArgmaxKey(std::bit_cast<uint32_t>(row[i]), static_cast<uint32_t>(i)));
  }
  return ArgmaxIndexOfKey(best);
}

// The packed keys pick what the old kernel picked: ties (-0 and +0 too),
// NaN of either sign, infinities, denormals, all-NaN rows, in any order.
TEST(CudaLaunchShapes, ArgmaxKeysMatchTheScan) {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> specials = {0.0f, -0.0f,  1.0f,    -1.0f,   inf,      -inf, nan,
                                       -nan, 1e-45f, -1e-45f, 3.4e38f, -3.4e38f, 0.5f, 2.0f};
  std::mt19937 random(7);
  for (int trial = 0; trial < 20000; ++trial) {
    std::vector<float> row(1 + random() % 12);
    for (float& v : row) v = specials[random() % specials.size()];
    ASSERT_EQ(ArgmaxByKeys(row), ArgmaxReference(row)) << "trial " << trial;
  }
  EXPECT_EQ(ArgmaxByKeys({nan, nan}), 0);
  EXPECT_EQ(ArgmaxByKeys({-inf, -inf}), 0);
  EXPECT_EQ(ArgmaxByKeys({-1.0f, -0.0f, 0.0f}), 1);
  EXPECT_EQ(ArgmaxByKeys({nan, -inf}), 1);
}

// Paged attention, lanes: for every head_dim the kernel takes, the lanes of
// one position cover each dim exactly once (chunk = lane % lanes, dims
// [8 chunk, 8 chunk + 8) when 8 chunk < head_dim), and lanes is a power of
// two dividing the warp.
TEST(CudaLaunchShapes, AttentionLanesCoverEveryDimOnce) {
  for (int32_t hd = 8; hd <= kMaxAttentionHeadDim; hd += 8) {
    const int lanes = AttentionLanes(hd);
    ASSERT_GE(lanes, 1);
    ASSERT_LE(lanes, 32);
    ASSERT_EQ(32 % lanes, 0) << hd;
    for (int offset = 0; offset < 32 / lanes; ++offset) {
      std::vector<int> seen(static_cast<size_t>(hd), 0);
      for (int lane = offset * lanes; lane < (offset + 1) * lanes; ++lane) {
        const int chunk = lane % lanes;
        if (chunk * kAttentionDimsPerLane >= hd) continue;  // has_dims false
        for (int i = 0; i < kAttentionDimsPerLane; ++i) {
          ASSERT_LT(chunk * kAttentionDimsPerLane + i, hd);
          ++seen[static_cast<size_t>(chunk * kAttentionDimsPerLane + i)];
        }
      }
      for (int32_t d = 0; d < hd; ++d) ASSERT_EQ(seen[static_cast<size_t>(d)], 1) << hd << " " << d;
    }
  }
}

// Every query head of a KV head's group is in exactly one block's chunk, at
// most kMaxAttentionGroup per block, none empty.
TEST(CudaLaunchShapes, AttentionHeadChunksCoverTheGroupOnce) {
  for (int32_t group = 1; group <= 64; ++group) {
    const AttentionHeadChunks c = AttentionHeadChunksFor(group);
    ASSERT_LE(c.per_chunk, kMaxAttentionGroup) << group;
    std::vector<int> seen(static_cast<size_t>(group), 0);
    for (int32_t chunk = 0; chunk < c.chunks; ++chunk) {
      // The kernel's h0 (within the group) and head count.
      const int32_t h0 = chunk * c.per_chunk;
      const int32_t heads = std::min(c.per_chunk, group - h0);
      ASSERT_GE(heads, 1) << group << " chunk " << chunk;
      for (int32_t h = h0; h < h0 + heads; ++h) ++seen[static_cast<size_t>(h)];
    }
    for (int32_t h = 0; h < group; ++h) ASSERT_EQ(seen[static_cast<size_t>(h)], 1) << group;
  }
}

// Every position 0..n-1 of a token is attended exactly once over the splits
// it uses, the warps' KV blocks and each warp's load steps, for any block
// size, split count, minimum and positions per load (32 / lanes), with the
// kernel's loops transcribed; split 0 is never empty; splits past the
// token's count do nothing.
TEST(CudaLaunchShapes, AttentionSplitsCoverEveryPositionOnce) {
  for (int32_t bt : {1, 2, 5, 8, 16, 32}) {
    for (int32_t n = 1; n <= 160; n += (n < 40 ? 1 : 7)) {
      const int32_t kv_blocks = (n + bt - 1) / bt;
      for (int32_t splits : {1, 2, 3, 7, 16, 32}) {
        for (int32_t min_blocks : {1, 4, 8}) {
          const int32_t used = AttentionTokenSplits(kv_blocks, splits, min_blocks);
          ASSERT_GE(used, 1);
          ASSERT_LE(used, splits);
          ASSERT_LE(used, (kv_blocks + min_blocks - 1) / min_blocks);
          ASSERT_LT(AttentionSplitRange(kv_blocks, used, 0).first,
                    AttentionSplitRange(kv_blocks, used, 0).last);
          for (int k_steps : {2, 4}) {
            for (int lanes : {1, 2, 4, 8, 16, 32}) {
              const int32_t per_load = 32 / lanes;
              std::vector<int> seen(static_cast<size_t>(n), 0);
              for (int32_t split = 0; split < used; ++split) {
                const AttentionBlockRange range = AttentionSplitRange(kv_blocks, used, split);
                for (int warp = 0; warp < kAttentionWarps; ++warp) {
                  for (int32_t kb = range.first + warp; kb < range.last; kb += kAttentionWarps) {
                    for (int32_t s0 = 0; s0 < bt; s0 += k_steps * per_load) {
                      for (int u = 0; u < k_steps; ++u) {
                        if (s0 + u * per_load >= bt) break;
                        for (int32_t offset = 0; offset < per_load; ++offset) {
                          const int32_t slot = s0 + u * per_load + offset;
                          if (slot < bt && kb * bt + slot < n) {
                            ++seen[static_cast<size_t>(kb * bt + slot)];
                          }
                        }
                      }
                    }
                  }
                }
              }
              for (int32_t p = 0; p < n; ++p) {
                ASSERT_EQ(seen[static_cast<size_t>(p)], 1)
                    << "bt " << bt << " n " << n << " splits " << splits << " min " << min_blocks
                    << " steps " << k_steps << " lanes " << lanes << " position " << p;
              }
            }
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace tokenmill::devices::cuda::core
