#include "devices/cuda/core/cuda_call.h"

#include "devices/cuda/core/cublas_library.h"

#include <string>

namespace tokenmill::devices::cuda::core {

GpuStatus CudaStatus(const char* call, cudaError_t error) {
  if (error == cudaSuccess) return GpuStatus::Ok();
  // A failed allocation or launch configuration leaves the error for
  // cudaGetLastError to report again; clear it so the next call is judged on
  // its own (sticky errors such as a lost device stay, as they must).
  cudaGetLastError();
  std::string message =
      std::string(call) + ": " + cudaGetErrorString(error) + " (" + cudaGetErrorName(error) + ")";
  switch (error) {
    case cudaErrorMemoryAllocation:
      return GpuStatus::Error(GpuCode::kResourceExhausted, std::move(message));
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorDevicesUnavailable:
    case cudaErrorDeviceUninitialized:
    case cudaErrorLaunchFailure:
    case cudaErrorIllegalAddress:
      return GpuStatus::Error(GpuCode::kUnavailable, std::move(message));
    case cudaErrorInvalidDevice:
      return GpuStatus::Error(GpuCode::kInvalidArgument, std::move(message));
    default:
      return GpuStatus::Error(GpuCode::kInternal, std::move(message));
  }
}

GpuStatus CublasStatus(const char* call, cublasStatus_t status) {
  if (status == CUBLAS_STATUS_SUCCESS) return GpuStatus::Ok();
  // A status can only come from a loaded cuBLAS, which gives its names.
  const CublasApi* api = LoadCublas(nullptr);
  std::string message =
      std::string(call) + ": " +
      (api != nullptr
           ? std::string(api->status_string(status)) + " (" + api->status_name(status) + ")"
           : "cuBLAS status " + std::to_string(static_cast<int>(status)));
  if (status == CUBLAS_STATUS_ALLOC_FAILED) {
    return GpuStatus::Error(GpuCode::kResourceExhausted, std::move(message));
  }
  if (status == CUBLAS_STATUS_NOT_INITIALIZED) {
    return GpuStatus::Error(GpuCode::kUnavailable, std::move(message));
  }
  return GpuStatus::Error(GpuCode::kInternal, std::move(message));
}

}  // namespace tokenmill::devices::cuda::core
