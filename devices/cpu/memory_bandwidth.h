// Measures the machine's memory bandwidth the way STREAM does, for the
// bandwidth bound of batch-1 decode (bandwidth / bytes a token reads).
//
// The read probe has STREAM's access pattern: each thread streams its own
// contiguous share of a buffer much larger than the caches with plain wide
// loads (no software prefetch), summing them so the loads are kept. Every
// repetition is kept: callers take the median as the bound and show the
// spread, so one lucky or unlucky repetition never sets the denominator.
#pragma once

#include <cstddef>
#include <vector>

namespace tokenmill::devices::cpu {

struct BandwidthSamples {
  std::vector<double> bytes_per_second;  // one per repetition, in run order
  size_t buffer_bytes = 0;
  int threads = 0;

  double Median() const;  // 0 when empty
  double Min() const;
  double Max() const;
};

// Reads a buffer of `bytes` (default 1 GiB) with `threads` threads,
// `repetitions` times.
BandwidthSamples MeasureReadBandwidth(int threads, size_t bytes = size_t{1} << 30,
                                      int repetitions = 5);

// STREAM's copy (a = b) and triad (a = b + s * c) rates with `threads`
// threads over arrays of `array_bytes` each, counted as STREAM counts them
// (copy moves 2 arrays, triad 3), best of `repetitions` as STREAM reports.
struct StreamFigures {
  double copy_bytes_per_second = 0.0;
  double triad_bytes_per_second = 0.0;
  size_t array_bytes = 0;
};
StreamFigures MeasureStream(int threads, size_t array_bytes = size_t{256} << 20,
                            int repetitions = 5);

}  // namespace tokenmill::devices::cpu
