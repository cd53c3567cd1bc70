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

}  // namespace
}  // namespace tokenmill::devices::cuda::core
