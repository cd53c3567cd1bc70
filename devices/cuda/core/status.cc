#include "devices/cuda/core/status.h"

#include "devices/cuda/core/device_matrix.h"

namespace tokenmill::devices::cuda::core {

const char* GpuCodeName(GpuCode code) {
  switch (code) {
    case GpuCode::kOk:
      return "ok";
    case GpuCode::kInvalidArgument:
      return "invalid argument";
    case GpuCode::kUnimplemented:
      return "unimplemented";
    case GpuCode::kResourceExhausted:
      return "resource exhausted";
    case GpuCode::kUnavailable:
      return "unavailable";
    case GpuCode::kInternal:
      return "internal";
  }
  return "unknown";
}

const char* WeightTypeName(WeightType type) {
  switch (type) {
    case WeightType::kF32:
      return "f32";
    case WeightType::kF16:
      return "f16";
    case WeightType::kBF16:
      return "bf16";
    case WeightType::kQ8_0:
      return "q8_0";
  }
  return "unknown";
}

DeviceMatrix DeviceMatrix::RowRange(int64_t begin, int64_t end) const {
  DeviceMatrix m = *this;
  m.rows = end - begin;
  const size_t row_elements = static_cast<size_t>(cols);
  const size_t element_bytes = type == WeightType::kF32 ? 4 : type == WeightType::kQ8_0 ? 1 : 2;
  m.data =
      static_cast<const uint8_t*>(data) + static_cast<size_t>(begin) * row_elements * element_bytes;
  if (scales != nullptr) m.scales = scales + static_cast<size_t>(begin) * (row_elements / kQ8Block);
  return m;
}

}  // namespace tokenmill::devices::cuda::core
