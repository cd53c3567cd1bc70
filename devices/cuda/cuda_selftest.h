// A short GPU self-test: allocate, fill, copy, check, time. Run at start-up
// or by `tokenmill devices --selftest` to prove a GPU computes correctly and
// to report the memory bandwidth it reaches. Built only with CUDA; this
// header includes no CUDA header so plain C++ code can call it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace tokenmill::devices::cuda {

struct CudaSelfTestResult {
  int ordinal = 0;
  std::string device_name;     // cudaDeviceProp::name
  size_t bytes = 0;            // buffer size used: the request rounded down to 16
  double fill_gb_per_s = 0.0;  // write-only kernel, bytes / time (GB = 1e9 bytes)
  double copy_gb_per_s = 0.0;  // read+write kernel, 2 x bytes / time
  uint64_t mismatches = 0;     // 32-bit words that differ from the pattern
  bool data_ok = false;        // mismatches == 0
};

// Runs the self-test on GPU `ordinal` with two buffers of `bytes` each.
// Every CUDA error is a status naming the call and cudaGetErrorString's
// text: kUnavailable when there is no GPU or no usable driver (callers skip
// the test), kInvalidArgument for a bad ordinal or fewer than 16 bytes,
// kResourceExhausted when the buffers do not fit, kInternal otherwise. A data
// mismatch is not an error: it is reported in the result.
absl::StatusOr<CudaSelfTestResult> RunCudaSelfTest(int ordinal, size_t bytes);

}  // namespace tokenmill::devices::cuda
