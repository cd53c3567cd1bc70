// Checks that a ModelSpec and ExecutorOptions are something the CPU executor
// can run, before it allocates anything: every tensor present with the shape
// and type the hyperparameters imply, dims multiples of 32.
#pragma once

#include "absl/status/status.h"
#include "devices/executor.h"
#include "devices/model_spec.h"

namespace tokenmill::devices::cpu {

// kInvalidArgument naming the tensor or field and what is wrong;
// kUnimplemented for a weight type the CPU kernels do not have.
absl::Status CheckModelSpecForCpu(const ModelSpec& spec);
absl::Status CheckExecutorOptions(const ExecutorOptions& options);

}  // namespace tokenmill::devices::cpu
