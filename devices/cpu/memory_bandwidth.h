// Measures the machine's memory read bandwidth the way a decode step reads
// weights: several threads streaming disjoint parts of a buffer much larger
// than the caches, with wide loads. The bandwidth bound of batch-1 decode is
// this figure divided by the bytes a token reads.
#pragma once

#include <cstddef>

namespace tokenmill::devices::cpu {

struct BandwidthResult {
  double bytes_per_second = 0.0;  // best of the repetitions
  size_t buffer_bytes = 0;
  int threads = 0;
};

// Reads a buffer of `bytes` (default 1 GiB) with `threads` threads,
// `repetitions` times, and reports the best rate.
BandwidthResult MeasureReadBandwidth(int threads, size_t bytes = size_t{1} << 30,
                                     int repetitions = 5);

}  // namespace tokenmill::devices::cpu
