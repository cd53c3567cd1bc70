// Summary figures of timed samples, shared by the benchmarks.
#pragma once

#include <algorithm>
#include <vector>

namespace tokenmill::bench {

struct SampleFigures {
  double mean_us = 0.0;
  double p50_us = 0.0;
  double p99_us = 0.0;
  double max_us = 0.0;
};

// Mean, median, 99th percentile and max of samples in microseconds (sorts them).
inline SampleFigures Summarize(std::vector<double>& samples_us) {
  SampleFigures f;
  if (samples_us.empty()) return f;
  double sum = 0.0;
  for (double s : samples_us) sum += s;
  f.mean_us = sum / static_cast<double>(samples_us.size());
  std::sort(samples_us.begin(), samples_us.end());
  f.p50_us = samples_us[samples_us.size() / 2];
  f.p99_us = samples_us[std::min(samples_us.size() - 1, samples_us.size() * 99 / 100)];
  f.max_us = samples_us.back();
  return f;
}

}  // namespace tokenmill::bench
