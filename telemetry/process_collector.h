// The standard Prometheus process_* metrics, read from procfs at scrape time.
//
// The parsers are free functions so that tests can feed them odd inputs (a
// comm with spaces and parentheses), and the collector takes the procfs root
// so that tests can point it at a fake tree.
#pragma once

#include <cstdint>
#include <filesystem>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"

namespace tokenmill::telemetry {

// The fields of /proc/<pid>/stat that the process metrics need.
struct ProcStat {
  uint64_t utime_ticks = 0;           // field 14, user CPU time in clock ticks
  uint64_t stime_ticks = 0;           // field 15, system CPU time in clock ticks
  uint64_t start_time_ticks = 0;      // field 22, start time after boot in clock ticks
  uint64_t virtual_memory_bytes = 0;  // field 23, vsize
  uint64_t resident_pages = 0;        // field 24, rss
};

// Parses /proc/<pid>/stat. The comm field (2) may hold spaces and
// parentheses, so fields are counted from the last ')'.
absl::StatusOr<ProcStat> ParseProcStat(absl::string_view text);

// The "btime" line of /proc/stat: boot time in seconds since the epoch.
absl::StatusOr<uint64_t> ParseBootTime(absl::string_view proc_stat_text);

// The soft limit of "Max open files" in /proc/<pid>/limits; "unlimited" is
// +Inf.
absl::StatusOr<double> ParseMaxOpenFiles(absl::string_view limits_text);

// Where and how the collector reads. Zero means "ask sysconf".
struct ProcessCollectorOptions {
  std::filesystem::path proc_root = "/proc";  // reads <root>/self/... and <root>/stat
  long clock_ticks_per_second = 0;            // sysconf(_SC_CLK_TCK)
  long page_size_bytes = 0;                   // sysconf(_SC_PAGESIZE)
};

// Emits process_cpu_seconds_total, process_resident_memory_bytes,
// process_virtual_memory_bytes, process_open_fds, process_max_fds and
// process_start_time_seconds. A family whose source cannot be read or parsed
// is left out of that scrape rather than reported as 0. Stateless between
// scrapes, so Collect() is thread-safe.
class ProcessCollector : public prometheus::Collectable {
 public:
  explicit ProcessCollector(ProcessCollectorOptions options = {});
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  ProcessCollectorOptions options_;
};

}  // namespace tokenmill::telemetry
