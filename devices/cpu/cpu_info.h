// Parsers for the Linux files that describe the host CPU: /proc/cpuinfo,
// /proc/meminfo, /proc/stat and the cpulist format of /sys (node/online).
//
// They take file contents, not paths, so unit tests feed them fixtures of
// both x86-64 and aarch64 machines.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace tokenmill::devices {

// What /proc/cpuinfo says about the CPU, with fallbacks where the kernel
// leaves lines out (VMs, containers, aarch64).
struct CpuInfoSummary {
  std::string vendor;             // x86 vendor_id; aarch64: the "CPU implementer" name
  std::string model_name;         // "model name"; aarch64 without it: from "CPU part"
  uint32_t logical_cpus = 0;      // "processor" entries
  uint32_t sockets = 0;           // distinct "physical id"; 1 when absent
  uint32_t physical_cores = 0;    // distinct (physical id, core id); see ParseCpuInfo
  std::vector<std::string> simd;  // in the order of CpuDetails::simd's list
};

// Parses /proc/cpuinfo. Physical cores fall back to "cpu cores" x sockets
// when "core id" is missing, then to the logical count (aarch64 kernels
// print no topology, and their server cores run one thread each).
// kInvalidArgument when no "processor" entry is found.
absl::StatusOr<CpuInfoSummary> ParseCpuInfo(std::string_view text);

// The SIMD extensions tokenmill's kernels care about, from an x86 "flags"
// or aarch64 "Features" line's words ("asimd" is reported as "neon").
std::vector<std::string> SimdFromFlags(std::string_view flags);

// /proc/meminfo figures, in bytes.
struct MemInfo {
  uint64_t total_bytes = 0;
  uint64_t available_bytes = 0;
};

// Parses /proc/meminfo. MemAvailable falls back to MemFree + Buffers +
// Cached on kernels older than 3.14. kInvalidArgument without MemTotal.
absl::StatusOr<MemInfo> ParseMemInfo(std::string_view text);

// Parses a kernel cpulist ("0-3,8,10-11", "0", "") into ascending ids.
// kInvalidArgument on malformed text or a range above 1<<20 entries.
absl::StatusOr<std::vector<uint32_t>> ParseCpuList(std::string_view text);

// Aggregate CPU time from the "cpu" line of /proc/stat, in clock ticks.
struct CpuTimes {
  uint64_t busy = 0;   // everything but idle and iowait
  uint64_t total = 0;  // user nice system idle iowait irq softirq steal
};

// Parses the aggregate "cpu" line of /proc/stat. kInvalidArgument when it is
// missing or has fewer than four numbers.
absl::StatusOr<CpuTimes> ParseProcStat(std::string_view text);

// CPUs the calling thread may run on (its affinity mask, which systemd's
// CPUAffinity=, taskset and cpusets set and threads inherit), at least 1;
// std::thread::hardware_concurrency() when the mask cannot be read.
int32_t UsableCpuCount();

// Share of time busy between two readings, 0..1; nullopt when no tick
// passed or the counters went backwards (a CPU taken offline).
std::optional<double> UtilizationBetween(const CpuTimes& before, const CpuTimes& now);

}  // namespace tokenmill::devices
