// GpuStatus: how the CUDA core reports errors without Abseil (the GPU test
// target builds with only the CUDA toolkit). The codes mirror the absl codes
// the executor adapter turns them into (devices/cuda/cuda_executor.cc).
#pragma once

#include <string>
#include <utility>

namespace tokenmill::devices::cuda::core {

enum class GpuCode {
  kOk,
  kInvalidArgument,    // bad model, options or batch: nothing changed
  kUnimplemented,      // a model the CUDA executor cannot run (weight type, shape)
  kResourceExhausted,  // out of device (or pinned host) memory
  kUnavailable,        // no GPU, no driver, device lost
  kInternal,           // any other CUDA or cuBLAS failure
};

struct [[nodiscard]] GpuStatus {
  GpuCode code = GpuCode::kOk;
  std::string message;

  bool ok() const { return code == GpuCode::kOk; }
  static GpuStatus Ok() { return {}; }
  static GpuStatus Error(GpuCode code, std::string message) { return {code, std::move(message)}; }
};

const char* GpuCodeName(GpuCode code);  // "ok", "invalid argument", ...

}  // namespace tokenmill::devices::cuda::core
