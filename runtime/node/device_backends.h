// Device backends: the KV arena and the executor for a device of any kind, so
// the instance manager places models without knowing which devices this
// build can drive (CUDA only when built with nvcc).
#pragma once

#include <cstddef>

#include "absl/status/statusor.h"
#include "devices/device.h"
#include "devices/executor.h"
#include "devices/kv_arena.h"

namespace tokenmill::runtime {

// Whether this build has an executor for the device's kind (CPU always; CUDA
// when built with CUDA).
bool DeviceRunsModels(const devices::Device& device);

// The device's KV arena, growing up to `budget`: host memory for the CPU, a
// cudaMalloc per chunk on a GPU. kUnimplemented for a kind without a
// backend.
absl::StatusOr<devices::KvArenaPtr> CreateKvArenaFor(const devices::Device& device,
                                                     devices::KvArenaBudget budget,
                                                     size_t page_bytes);

// An executor for `spec` on the device (options.kv_arena is the device's).
absl::StatusOr<devices::ExecutorPtr> CreateExecutorFor(const devices::Device& device,
                                                       const devices::ModelSpec& spec,
                                                       const devices::ExecutorOptions& options);

}  // namespace tokenmill::runtime
