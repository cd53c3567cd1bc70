// Reading Prometheus text exposition in tests.
#pragma once

#include <cstdlib>
#include <optional>
#include <sstream>
#include <string>

namespace tokenmill::telemetry::exposition {

// The value of the sample line that starts with `series` followed by a space,
// e.g. SeriesValue(text, "tokenmill_energy_joules_total{device=\"gpu\"}").
// Labels appear sorted by name, as prometheus-cpp writes them.
inline std::optional<double> SeriesValue(const std::string& text, const std::string& series) {
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (line.size() > series.size() && line.compare(0, series.size(), series) == 0 &&
        line[series.size()] == ' ') {
      return std::strtod(line.c_str() + series.size() + 1, nullptr);
    }
  }
  return std::nullopt;
}

}  // namespace tokenmill::telemetry::exposition
