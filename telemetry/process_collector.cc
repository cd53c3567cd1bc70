#include "telemetry/process_collector.h"

#include <unistd.h>

#include <fstream>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <system_error>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "telemetry/metrics.h"

namespace tokenmill::telemetry {
namespace {

std::vector<absl::string_view> SplitFields(absl::string_view text) {
  return absl::StrSplit(text, absl::ByAnyChar(" \t\n"), absl::SkipEmpty());
}

// procfs files report size 0, so read them as a stream, not by size.
std::optional<std::string> ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return std::nullopt;
  return std::move(text).str();
}

std::optional<double> CountOpenFds(const std::filesystem::path& fd_dir) {
  std::error_code ec;
  std::filesystem::directory_iterator it(fd_dir, ec);
  if (ec) return std::nullopt;
  double count = 0;
  for (const std::filesystem::directory_iterator end; it != end; it.increment(ec)) {
    if (ec) return std::nullopt;
    ++count;
  }
  if (ec) return std::nullopt;
  return count;
}

prometheus::MetricFamily OneValueFamily(std::string name, std::string help,
                                        prometheus::MetricType type, double value) {
  prometheus::MetricFamily family;
  family.name = std::move(name);
  family.help = std::move(help);
  family.type = type;
  prometheus::ClientMetric metric;
  if (type == prometheus::MetricType::Counter) {
    metric.counter.value = value;
  } else {
    metric.gauge.value = value;
  }
  family.metric.push_back(std::move(metric));
  return family;
}

}  // namespace

absl::StatusOr<ProcStat> ParseProcStat(absl::string_view text) {
  const size_t open = text.find('(');
  const size_t close = text.rfind(')');
  if (open == absl::string_view::npos || close == absl::string_view::npos || close < open) {
    return absl::InvalidArgumentError("stat: no (comm) field");
  }
  // fields[0] is field 3 (state), so field n is fields[n - 3].
  const std::vector<absl::string_view> fields = SplitFields(text.substr(close + 1));
  constexpr size_t kUtime = 14 - 3, kStime = 15 - 3, kStartTime = 22 - 3, kVsize = 23 - 3,
                   kRss = 24 - 3;
  if (fields.size() <= kRss) {
    return absl::InvalidArgumentError("stat: fewer than 24 fields");
  }
  ProcStat stat;
  int64_t rss = 0;
  if (!absl::SimpleAtoi(fields[kUtime], &stat.utime_ticks) ||
      !absl::SimpleAtoi(fields[kStime], &stat.stime_ticks) ||
      !absl::SimpleAtoi(fields[kStartTime], &stat.start_time_ticks) ||
      !absl::SimpleAtoi(fields[kVsize], &stat.virtual_memory_bytes) ||
      !absl::SimpleAtoi(fields[kRss], &rss) || rss < 0) {
    return absl::InvalidArgumentError("stat: a needed field is not a number");
  }
  stat.resident_pages = static_cast<uint64_t>(rss);
  return stat;
}

absl::StatusOr<uint64_t> ParseBootTime(absl::string_view proc_stat_text) {
  for (absl::string_view line : absl::StrSplit(proc_stat_text, '\n')) {
    if (!absl::ConsumePrefix(&line, "btime ")) continue;
    uint64_t btime = 0;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(line), &btime)) {
      return absl::InvalidArgumentError("/proc/stat: btime is not a number");
    }
    return btime;
  }
  return absl::NotFoundError("/proc/stat: no btime line");
}

absl::StatusOr<double> ParseMaxOpenFiles(absl::string_view limits_text) {
  for (absl::string_view line : absl::StrSplit(limits_text, '\n')) {
    if (!absl::ConsumePrefix(&line, "Max open files")) continue;
    const std::vector<absl::string_view> fields = SplitFields(line);
    if (fields.empty()) break;
    if (fields[0] == "unlimited") return std::numeric_limits<double>::infinity();
    uint64_t soft = 0;
    if (!absl::SimpleAtoi(fields[0], &soft)) break;
    return static_cast<double>(soft);
  }
  return absl::NotFoundError("limits: no readable \"Max open files\" line");
}

ProcessCollector::ProcessCollector(ProcessCollectorOptions options) : options_(std::move(options)) {
  if (options_.clock_ticks_per_second <= 0) options_.clock_ticks_per_second = sysconf(_SC_CLK_TCK);
  if (options_.page_size_bytes <= 0) options_.page_size_bytes = sysconf(_SC_PAGESIZE);
}

std::vector<prometheus::MetricFamily> ProcessCollector::Collect() const {
  using prometheus::MetricType;
  std::vector<prometheus::MetricFamily> families;
  const std::filesystem::path self = options_.proc_root / "self";
  const double ticks = static_cast<double>(options_.clock_ticks_per_second);

  std::optional<ProcStat> stat;
  if (std::optional<std::string> text = ReadFile(self / "stat")) {
    if (absl::StatusOr<ProcStat> parsed = ParseProcStat(*text); parsed.ok()) stat = *parsed;
  }
  if (stat && ticks > 0) {
    families.push_back(OneValueFamily(
        "process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
        MetricType::Counter, static_cast<double>(stat->utime_ticks + stat->stime_ticks) / ticks));
  }
  if (stat) {
    families.push_back(OneValueFamily(
        "process_resident_memory_bytes", "Resident memory size in bytes.", MetricType::Gauge,
        static_cast<double>(stat->resident_pages) * static_cast<double>(options_.page_size_bytes)));
    families.push_back(OneValueFamily("process_virtual_memory_bytes",
                                      "Virtual memory size in bytes.", MetricType::Gauge,
                                      static_cast<double>(stat->virtual_memory_bytes)));
  }
  if (std::optional<double> fds = CountOpenFds(self / "fd")) {
    families.push_back(OneValueFamily("process_open_fds", "Number of open file descriptors.",
                                      MetricType::Gauge, *fds));
  }
  if (std::optional<std::string> text = ReadFile(self / "limits")) {
    if (absl::StatusOr<double> max_fds = ParseMaxOpenFiles(*text); max_fds.ok()) {
      families.push_back(OneValueFamily("process_max_fds",
                                        "Maximum number of open file descriptors.",
                                        MetricType::Gauge, *max_fds));
    }
  }
  if (stat && ticks > 0) {
    if (std::optional<std::string> text = ReadFile(options_.proc_root / "stat")) {
      if (absl::StatusOr<uint64_t> btime = ParseBootTime(*text); btime.ok()) {
        families.push_back(OneValueFamily(
            "process_start_time_seconds", "Start time of the process since unix epoch in seconds.",
            MetricType::Gauge,
            static_cast<double>(*btime) + static_cast<double>(stat->start_time_ticks) / ticks));
      }
    }
  }
  return families;
}

std::shared_ptr<prometheus::Collectable> MakeProcessCollector() {
  return std::make_shared<ProcessCollector>();
}

}  // namespace tokenmill::telemetry
