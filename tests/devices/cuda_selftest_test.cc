#include "devices/cuda/cuda_selftest.h"

#include <iostream>

#include "gtest/gtest.h"

namespace tokenmill::devices::cuda {
namespace {

constexpr size_t kBytes = size_t{256} << 20;

TEST(CudaSelfTest, FillsCopiesAndChecksOnTheFirstGpu) {
  absl::StatusOr<CudaSelfTestResult> result = RunCudaSelfTest(0, kBytes);
  if (result.status().code() == absl::StatusCode::kUnavailable) {
    GTEST_SKIP() << "no CUDA GPU: " << result.status().message();
  }
  ASSERT_TRUE(result.ok()) << result.status();
  std::cout << "ran on GPU " << result->device_name << ": " << result->copy_gb_per_s
            << " GB/s copy (read+write), " << result->fill_gb_per_s << " GB/s fill\n";
  EXPECT_EQ(result->bytes, kBytes);
  EXPECT_EQ(result->mismatches, 0u);
  EXPECT_TRUE(result->data_ok);
  EXPECT_GT(result->copy_gb_per_s, 0.0);
}

TEST(CudaSelfTest, RejectsTooFewBytes) {
  EXPECT_EQ(RunCudaSelfTest(0, 15).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tokenmill::devices::cuda
