// DeviceMatrix: a weight matrix in GPU memory, in the layout the CUDA kernels
// read. Plain C++ (no CUDA header), shared by the engine, the kernels and the
// GPU tests.
#pragma once

#include <cstddef>
#include <cstdint>

namespace tokenmill::devices::cuda::core {

// Weight element types the CUDA kernels read.
enum class WeightType : int32_t { kF32, kF16, kBF16, kQ8_0 };

const char* WeightTypeName(WeightType type);  // "f32", "f16", "bf16", "q8_0"

// Q8_0 values per scale (GGUF block size).
inline constexpr int64_t kQ8Block = 32;

// Bytes of one element in `data` (a Q8_0 element's scale is apart).
constexpr size_t WeightElementBytes(WeightType type) {
  return type == WeightType::kF32 ? 4 : type == WeightType::kQ8_0 ? 1 : 2;
}

// A row-major matrix y = W x with W of `rows` x `cols`. For F32/F16/BF16
// `data` holds rows x cols elements, row r at r x cols. For Q8_0 the GGUF
// blocks are split on upload so every load is aligned: `data` holds rows x
// cols int8 quants (row-major) and `scales` rows x (cols / 32) f16 scales
// (row-major); element (r, c) = scales[r][c / 32] * data[r][c]. Both
// pointers are device memory owned by whoever uploaded the matrix; cols is a
// multiple of 32 for Q8_0 and of 8 for the others (16-byte loads).
struct DeviceMatrix {
  WeightType type = WeightType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;
  const void* data = nullptr;
  const uint16_t* scales = nullptr;  // Q8_0 only

  bool empty() const { return data == nullptr; }
  // Bytes one pass over the matrix reads (data and scales).
  size_t bytes() const {
    const size_t n = static_cast<size_t>(rows) * static_cast<size_t>(cols);
    return n * WeightElementBytes(type) + (type == WeightType::kQ8_0 ? n / kQ8Block * 2 : 0);
  }
};

}  // namespace tokenmill::devices::cuda::core
