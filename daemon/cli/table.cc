#include "daemon/cli/table.h"

#include <algorithm>
#include <cstdio>

namespace tokenmill::cli {

std::string RenderTable(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths;
  for (const auto& row : rows) {
    if (widths.size() < row.size()) widths.resize(row.size(), 0);
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(widths[i] - row[i].size() + 2, ' ');
    }
    out += line + "\n";
  }
  return out;
}

std::string FormatBytes(uint64_t bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double value = static_cast<double>(bytes);
  size_t unit = 0;
  while (value >= 1024.0 && unit + 1 < std::size(kUnits)) {
    value /= 1024.0;
    ++unit;
  }
  char buf[32];
  if (unit == 0) {
    std::snprintf(buf, sizeof(buf), "%llu B", static_cast<unsigned long long>(bytes));
  } else {
    std::snprintf(buf, sizeof(buf), "%.1f %s", value, kUnits[unit]);
  }
  return buf;
}

std::string FormatDuration(double seconds) {
  if (seconds < 0) seconds = 0;
  auto total = static_cast<unsigned long long>(seconds);
  unsigned long long d = total / 86400, h = (total / 3600) % 24, m = (total / 60) % 60,
                     s = total % 60;
  char buf[64];
  if (d > 0) {
    std::snprintf(buf, sizeof(buf), "%llud %lluh %llum", d, h, m);
  } else if (h > 0) {
    std::snprintf(buf, sizeof(buf), "%lluh %llum %llus", h, m, s);
  } else if (m > 0) {
    std::snprintf(buf, sizeof(buf), "%llum %llus", m, s);
  } else {
    std::snprintf(buf, sizeof(buf), "%llus", s);
  }
  return buf;
}

std::string FormatOptional(const std::optional<double>& value, const char* format) {
  if (!value) return "-";
  char buf[64];
  std::snprintf(buf, sizeof(buf), format, *value);
  return buf;
}

}  // namespace tokenmill::cli
