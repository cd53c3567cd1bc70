// Faults a model's weights into memory before it serves, reporting progress.
#pragma once

#include <atomic>

#include "absl/status/status.h"
#include "devices/model_spec.h"

namespace tokenmill::runtime {

// Reads one byte of every 4 KiB page of every distinct weight tensor, so a
// memory-mapped file is paged in now (and an unreadable one fails here, not in
// the first request). `progress` goes from 0 to 1 by bytes; kCancelled when
// `cancel` is set meanwhile.
absl::Status WarmWeights(const devices::ModelSpec& spec, std::atomic<double>& progress,
                         const std::atomic<bool>& cancel);

}  // namespace tokenmill::runtime
