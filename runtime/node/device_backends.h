// The compiled-in device backends: the CPU always, CUDA when this build has
// nvcc. The composition root adds them to its BackendRegistry
// (devices/backend.h) next to the plugins it loads; the instance manager
// places models through that registry without knowing any kind.
#pragma once

#include "absl/status/status.h"
#include "devices/backend.h"

namespace tokenmill::runtime {

// Host memory arena and the threaded CPU executor, for the device of kind
// "cpu" (DeviceKind::kCpu).
devices::DeviceBackendPtr MakeCpuBackend();

// CUDA GPUs ("cuda:N"): discovery through libcuda/NVML, a cudaMalloc per
// arena chunk and the CUDA executor when built with CUDA; without CUDA the
// GPUs are still discovered (and sampled) but run no models.
devices::DeviceBackendPtr MakeCudaBackend();

// Adds MakeCpuBackend() and MakeCudaBackend(), in that order.
absl::Status AddBuiltinBackends(devices::BackendRegistry& registry);

}  // namespace tokenmill::runtime
