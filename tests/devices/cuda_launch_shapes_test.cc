// The work splits of the CUDA layer kernels (devices/cuda/core/launch_shapes.h),
// checked without a GPU: every element of every shape is covered exactly once.
#include "devices/cuda/core/launch_shapes.h"

#include <gtest/gtest.h>

#include <cstdint>
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

}  // namespace
}  // namespace tokenmill::devices::cuda::core
