// Turning CUDA runtime and cuBLAS results into GpuStatus, naming the call and
// the code, for the core's host code (.cc and .cu).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "devices/cuda/core/status.h"

namespace tokenmill::devices::cuda::core {

// Ok for cudaSuccess; otherwise "<call>: <cudaGetErrorString> (<name>)" with
// kResourceExhausted for cudaErrorMemoryAllocation, kUnavailable for no
// device / insufficient driver / device lost, kInvalidArgument for an invalid
// device ordinal, kInternal otherwise. Clears the sticky-free error state
// (cudaGetLastError) so a refused allocation does not fail the next call.
GpuStatus CudaStatus(const char* call, cudaError_t error);
// The same for cuBLAS (CUBLAS_STATUS_ALLOC_FAILED -> kResourceExhausted).
GpuStatus CublasStatus(const char* call, cublasStatus_t status);

}  // namespace tokenmill::devices::cuda::core

// Returns from the enclosing function (which returns GpuStatus) when a CUDA
// runtime call fails.
#define TM_CUDA_RETURN_IF_ERROR(call)                                    \
  do {                                                                   \
    if (::tokenmill::devices::cuda::core::GpuStatus tm_status_ =         \
            ::tokenmill::devices::cuda::core::CudaStatus(#call, (call)); \
        !tm_status_.ok())                                                \
      return tm_status_;                                                 \
  } while (0)
