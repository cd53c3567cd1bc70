// cuBLAS reached through dlopen instead of being linked. libcublasLt carries
// ~94 KB of static TLS; linked into a process, glibc carves that out of every
// thread's stack, and civetweb's small-stack threads (the /metrics server)
// then fail to start. Loaded with dlopen, its TLS is allocated per thread on
// demand, and a node without a GPU never loads it at all.
#pragma once

#include <cublas_v2.h>

#include <string>

namespace tokenmill::devices::cuda::core {

// The cuBLAS entry points the core uses.
struct CublasApi {
  decltype(&cublasCreate_v2) create = nullptr;
  decltype(&cublasDestroy_v2) destroy = nullptr;
  decltype(&cublasSetStream_v2) set_stream = nullptr;
  decltype(&cublasSetWorkspace_v2) set_workspace = nullptr;
  decltype(&cublasSetMathMode) set_math_mode = nullptr;
  // The C entry point (the header also has a C++ overload taking a
  // cudaDataType compute type).
  cublasStatus_t (*gemm_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int,
                            const void*, const void*, cudaDataType, int, const void*, cudaDataType,
                            int, const void*, void*, cudaDataType, int, cublasComputeType_t,
                            cublasGemmAlgo_t) = nullptr;
  decltype(&cublasGetStatusString) status_string = nullptr;
  decltype(&cublasGetStatusName) status_name = nullptr;
};

// The loaded library (libcublas.so.<major> from the loader's path, else next
// to the CUDA runtime in use when that is a shared library, else in the
// toolkit's library directory of the build), or null with `error` saying
// what failed.
// Loaded once; thread-safe.
const CublasApi* LoadCublas(std::string* error);

}  // namespace tokenmill::devices::cuda::core
