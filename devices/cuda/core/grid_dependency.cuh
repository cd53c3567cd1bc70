// Programmatic Dependent Launch (sm_90+) for the core's kernels: a kernel
// launched with LaunchKernel(programmatic = true) may start while the
// previous kernel on its stream is still running, once every block of that
// kernel has called LetNextGridLaunch (or finished); it must call
// WaitForPreviousGrid before it reads anything the previous kernels wrote or
// writes anything they read, and on every path (so that its completion still
// implies theirs). Both are no-ops on older architectures and for kernels
// launched without the attribute.
#pragma once

#include <cuda_runtime.h>

#include <utility>

namespace tokenmill::devices::cuda::core {

__device__ __forceinline__ void WaitForPreviousGrid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// A hint that the next kernel may be scheduled: call it early in kernels a
// GEMV follows (it never lets the next kernel see this one's writes early:
// its WaitForPreviousGrid still waits for this kernel to complete).
__device__ __forceinline__ void LetNextGridLaunch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Launches kernel<<<grid, block, 0, stream>>>(args...), with the
// programmatic stream serialization attribute when `programmatic`. Errors
// are left for the caller's cudaGetLastError, as with <<<>>>.
template <typename... Params, typename... Args>
void LaunchKernel(bool programmatic, void (*kernel)(Params...), dim3 grid, dim3 block,
                  cudaStream_t stream, Args&&... args) {
  cudaLaunchAttribute attribute[1];
  attribute[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute[0].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = 0;
  config.stream = stream;
  config.attrs = programmatic ? attribute : nullptr;
  config.numAttrs = programmatic ? 1 : 0;
  (void)cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);
}

}  // namespace tokenmill::devices::cuda::core
