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

}  // namespace tokenmill::devices::cuda::core
