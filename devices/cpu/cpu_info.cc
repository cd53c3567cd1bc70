#include "devices/cpu/cpu_info.h"

#include <sched.h>

#include <algorithm>
#include <set>
#include <thread>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

namespace tokenmill::devices {
namespace {

// "key<tabs> : value" -> {key, value}, both trimmed; false without a colon.
bool SplitKeyValue(absl::string_view line, absl::string_view* key, absl::string_view* value) {
  const size_t colon = line.find(':');
  if (colon == absl::string_view::npos) return false;
  *key = absl::StripAsciiWhitespace(line.substr(0, colon));
  *value = absl::StripAsciiWhitespace(line.substr(colon + 1));
  return true;
}

// Names for the aarch64 "CPU implementer" codes seen in servers.
std::string ArmImplementerName(absl::string_view code) {
  static constexpr std::pair<absl::string_view, absl::string_view> kNames[] = {
      {"0x41", "ARM"},       {"0x42", "Broadcom"}, {"0x43", "Cavium"},
      {"0x48", "HiSilicon"}, {"0x4e", "NVIDIA"},   {"0x51", "Qualcomm"},
      {"0x61", "Apple"},     {"0xc0", "Ampere"},   {"0x6d", "Microsoft"}};
  for (const auto& [c, name] : kNames) {
    if (absl::EqualsIgnoreCase(c, code)) return std::string(name);
  }
  return absl::StrCat("implementer ", code);
}

// Core names for the Arm Ltd part numbers common in servers; others are
// reported by number, which is still enough to tell machines apart.
std::string ArmPartName(absl::string_view implementer, absl::string_view part) {
  static constexpr std::pair<absl::string_view, absl::string_view> kArmParts[] = {
      {"0xd0c", "Neoverse-N1"}, {"0xd40", "Neoverse-V1"}, {"0xd49", "Neoverse-N2"},
      {"0xd4f", "Neoverse-V2"}, {"0xd84", "Neoverse-V3"}, {"0xd8e", "Neoverse-N3"},
      {"0xd08", "Cortex-A72"},  {"0xd0b", "Cortex-A76"},  {"0xd03", "Cortex-A53"}};
  if (absl::EqualsIgnoreCase(implementer, "0x41")) {
    for (const auto& [p, name] : kArmParts) {
      if (absl::EqualsIgnoreCase(p, part)) return std::string(name);
    }
  }
  return absl::StrCat("part ", part);
}

// One "processor" entry of /proc/cpuinfo, with the lines topology needs.
struct ProcessorEntry {
  std::string physical_id;
  std::string core_id;
};

}  // namespace

std::vector<std::string> SimdFromFlags(std::string_view flags) {
  // The order is the order of CpuDetails::simd's documentation.
  static constexpr std::pair<absl::string_view, absl::string_view> kWanted[] = {
      {"sse4_2", "sse4_2"},
      {"avx", "avx"},
      {"avx2", "avx2"},
      {"fma", "fma"},
      {"f16c", "f16c"},
      {"avx512f", "avx512f"},
      {"avx512bw", "avx512bw"},
      {"avx512vl", "avx512vl"},
      {"avx512_bf16", "avx512_bf16"},
      {"avx512_fp16", "avx512_fp16"},
      {"amx_bf16", "amx_bf16"},
      {"asimd", "neon"}};
  absl::flat_hash_set<absl::string_view> present;
  for (absl::string_view word : absl::StrSplit(absl::string_view(flags.data(), flags.size()),
                                               absl::ByAnyChar(" \t\r\n\v\f"), absl::SkipEmpty())) {
    present.insert(word);
  }
  std::vector<std::string> simd;
  for (const auto& [flag, name] : kWanted) {
    if (present.contains(flag)) simd.emplace_back(name);
  }
  return simd;
}

absl::StatusOr<CpuInfoSummary> ParseCpuInfo(std::string_view text) {
  CpuInfoSummary summary;
  std::vector<ProcessorEntry> processors;
  std::string flags, implementer, part, cpu_cores, legacy_processor;
  bool any_core_id = false;
  bool any_physical_id = false;

  for (absl::string_view line : absl::StrSplit(absl::string_view(text.data(), text.size()), '\n')) {
    absl::string_view key, value;
    if (!SplitKeyValue(line, &key, &value)) continue;
    // Keys are matched exactly: old aarch64 kernels print a global
    // "Processor" line besides the per-CPU "processor" ones.
    if (key == "processor") {
      processors.emplace_back();
      continue;
    }
    if (key == "Processor" && legacy_processor.empty()) legacy_processor = std::string(value);
    if (processors.empty()) continue;  // lines before any entry carry no topology
    ProcessorEntry& entry = processors.back();
    if (key == "physical id") {
      entry.physical_id = std::string(value);
      any_physical_id = true;
    } else if (key == "core id") {
      entry.core_id = std::string(value);
      any_core_id = true;
    } else if (key == "vendor_id" && summary.vendor.empty()) {
      summary.vendor = std::string(value);
    } else if (key == "model name" && summary.model_name.empty()) {
      summary.model_name = std::string(value);
    } else if ((key == "flags" || key == "Features") && flags.empty()) {
      flags = std::string(value);
    } else if (key == "CPU implementer" && implementer.empty()) {
      implementer = std::string(value);
    } else if (key == "CPU part" && part.empty()) {
      part = std::string(value);
    } else if (key == "cpu cores" && cpu_cores.empty()) {
      cpu_cores = std::string(value);
    }
  }
  if (processors.empty()) {
    return absl::InvalidArgumentError("cpuinfo: no 'processor' entry");
  }

  summary.logical_cpus = static_cast<uint32_t>(processors.size());
  std::set<std::string> sockets;
  std::set<std::pair<std::string, std::string>> cores;
  for (const ProcessorEntry& p : processors) {
    if (any_physical_id) sockets.insert(p.physical_id);
    // Cores are numbered per socket, so a core is a (socket, core) pair.
    if (any_core_id) cores.emplace(p.physical_id, p.core_id);
  }
  summary.sockets = sockets.empty() ? 1 : static_cast<uint32_t>(sockets.size());

  uint32_t cores_per_socket = 0;
  if (!cores.empty()) {
    summary.physical_cores = static_cast<uint32_t>(cores.size());
  } else if (absl::SimpleAtoi(cpu_cores, &cores_per_socket) && cores_per_socket > 0) {
    summary.physical_cores = std::min(cores_per_socket * summary.sockets, summary.logical_cpus);
  } else {
    summary.physical_cores = summary.logical_cpus;
  }

  if (summary.vendor.empty() && !implementer.empty()) {
    summary.vendor = ArmImplementerName(implementer);
  }
  if (summary.model_name.empty()) {
    if (!part.empty()) {
      summary.model_name = absl::StrCat(summary.vendor, " ", ArmPartName(implementer, part));
    } else {
      summary.model_name = legacy_processor;
    }
  }
  summary.simd = SimdFromFlags(flags);
  return summary;
}

absl::StatusOr<MemInfo> ParseMemInfo(std::string_view text) {
  std::optional<uint64_t> total, available, free, buffers, cached;
  for (absl::string_view line : absl::StrSplit(absl::string_view(text.data(), text.size()), '\n')) {
    absl::string_view key, value;
    if (!SplitKeyValue(line, &key, &value)) continue;
    std::optional<uint64_t>* slot = nullptr;
    if (key == "MemTotal") {
      slot = &total;
    } else if (key == "MemAvailable") {
      slot = &available;
    } else if (key == "MemFree") {
      slot = &free;
    } else if (key == "Buffers") {
      slot = &buffers;
    } else if (key == "Cached") {
      slot = &cached;
    } else {
      continue;
    }
    std::vector<absl::string_view> words =
        absl::StrSplit(value, absl::ByAnyChar(" \t\r\n\v\f"), absl::SkipEmpty());
    uint64_t number = 0;
    if (words.empty() || !absl::SimpleAtoi(words[0], &number)) {
      return absl::InvalidArgumentError(absl::StrCat("meminfo: bad value for ", key));
    }
    // The kernel writes "kB" and means KiB.
    const uint64_t unit = words.size() > 1 && words[1] == "kB" ? 1024 : 1;
    *slot = number * unit;
  }
  if (!total.has_value()) return absl::InvalidArgumentError("meminfo: no MemTotal");
  MemInfo info;
  info.total_bytes = *total;
  if (available.has_value()) {
    info.available_bytes = *available;
  } else {
    info.available_bytes = free.value_or(0) + buffers.value_or(0) + cached.value_or(0);
  }
  info.available_bytes = std::min(info.available_bytes, info.total_bytes);
  return info;
}

absl::StatusOr<std::vector<uint32_t>> ParseCpuList(std::string_view text) {
  constexpr uint64_t kMaxEntries = 1u << 20;
  std::vector<uint32_t> ids;
  const absl::string_view list =
      absl::StripAsciiWhitespace(absl::string_view(text.data(), text.size()));
  if (list.empty()) return ids;
  for (absl::string_view item : absl::StrSplit(list, ',')) {
    item = absl::StripAsciiWhitespace(item);
    absl::string_view low = item, high = item;
    if (const size_t dash = item.find('-'); dash != absl::string_view::npos) {
      low = item.substr(0, dash);
      high = item.substr(dash + 1);
    }
    // SimpleAtoi would also take "+3" and " 3"; the kernel writes neither.
    uint32_t first = 0, last = 0;
    if (low.empty() || high.empty() || !absl::ascii_isdigit(low.front()) ||
        !absl::ascii_isdigit(high.front()) || !absl::SimpleAtoi(low, &first) ||
        !absl::SimpleAtoi(high, &last) || last < first) {
      return absl::InvalidArgumentError(absl::StrCat("cpulist: bad item '", item, "'"));
    }
    if (ids.size() + (uint64_t{last} - first + 1) > kMaxEntries) {
      return absl::InvalidArgumentError("cpulist: too many entries");
    }
    for (uint64_t id = first; id <= last; ++id) ids.push_back(static_cast<uint32_t>(id));
  }
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  return ids;
}

absl::StatusOr<CpuTimes> ParseProcStat(std::string_view text) {
  for (absl::string_view line : absl::StrSplit(absl::string_view(text.data(), text.size()), '\n')) {
    std::vector<absl::string_view> words =
        absl::StrSplit(line, absl::ByAnyChar(" \t\r\n\v\f"), absl::SkipEmpty());
    if (words.empty() || words[0] != "cpu") continue;
    // user nice system idle iowait irq softirq steal; guest time is already
    // inside user and nice, so later fields are left out.
    constexpr size_t kFields = 8;
    CpuTimes times;
    size_t parsed = 0;
    for (size_t i = 1; i < words.size() && parsed < kFields; ++i, ++parsed) {
      uint64_t ticks = 0;
      if (!absl::SimpleAtoi(words[i], &ticks)) {
        return absl::InvalidArgumentError(absl::StrCat("stat: bad number '", words[i], "'"));
      }
      times.total += ticks;
      if (parsed != 3 && parsed != 4) times.busy += ticks;  // idle, iowait
    }
    if (parsed < 4) return absl::InvalidArgumentError("stat: short 'cpu' line");
    return times;
  }
  return absl::InvalidArgumentError("stat: no aggregate 'cpu' line");
}

std::optional<double> UtilizationBetween(const CpuTimes& before, const CpuTimes& now) {
  if (now.total <= before.total || now.busy < before.busy) return std::nullopt;
  const double ratio =
      static_cast<double>(now.busy - before.busy) / static_cast<double>(now.total - before.total);
  return std::clamp(ratio, 0.0, 1.0);
}

int32_t UsableCpuCount() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int count = CPU_COUNT(&set);
    if (count > 0) return count;
  }
  return std::max<int32_t>(1, static_cast<int32_t>(std::thread::hardware_concurrency()));
}

}  // namespace tokenmill::devices
