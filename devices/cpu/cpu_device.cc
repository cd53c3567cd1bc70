#include "devices/cpu/cpu_device.h"

#include <algorithm>
#include <string>
#include <system_error>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "devices/procfs.h"

namespace tokenmill::devices {
namespace {

// NUMA nodes from node/online; a kernel without NUMA has no such file and
// one node.
uint32_t CountNumaNodes(const std::filesystem::path& root) {
  absl::StatusOr<std::string> online =
      ReadTextFile(root / "sys" / "devices" / "system" / "node" / "online");
  if (!online.ok()) return 1;
  absl::StatusOr<std::vector<uint32_t>> nodes = ParseCpuList(*online);
  if (!nodes.ok() || nodes->empty()) return 1;
  return static_cast<uint32_t>(nodes->size());
}

// Temperature files of the thermal zones that measure a whole package.
std::vector<std::filesystem::path> FindPackageTemperatureFiles(const std::filesystem::path& root) {
  std::vector<std::filesystem::path> files;
  std::error_code ec;
  for (std::filesystem::directory_iterator it(root / "sys" / "class" / "thermal", ec), end;
       !ec && it != end; it.increment(ec)) {
    if (!absl::StartsWith(it->path().filename().string(), "thermal_zone")) continue;
    absl::StatusOr<std::string> type = ReadFirstLine(it->path() / "type");
    if (type.ok() && *type == "x86_pkg_temp") files.push_back(it->path() / "temp");
  }
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace

absl::StatusOr<std::unique_ptr<CpuDevice>> CpuDevice::Create(const DiscoveryOptions& options) {
  const std::filesystem::path proc = options.root / "proc";
  absl::StatusOr<std::string> cpuinfo_text = ReadTextFile(proc / "cpuinfo");
  if (!cpuinfo_text.ok()) return cpuinfo_text.status();
  absl::StatusOr<CpuInfoSummary> cpuinfo = ParseCpuInfo(*cpuinfo_text);
  if (!cpuinfo.ok()) return cpuinfo.status();
  absl::StatusOr<std::string> meminfo_text = ReadTextFile(proc / "meminfo");
  if (!meminfo_text.ok()) return meminfo_text.status();
  absl::StatusOr<MemInfo> meminfo = ParseMemInfo(*meminfo_text);
  if (!meminfo.ok()) return meminfo.status();

  std::unique_ptr<CpuDevice> device(new CpuDevice());
  device->root_ = options.root;
  device->clock_ = ClockOrSteady(options.clock);
  device->package_temperature_files_ = FindPackageTemperatureFiles(options.root);

  CpuDetails details;
  details.vendor = cpuinfo->vendor;
  details.model_name = cpuinfo->model_name;
  details.sockets = cpuinfo->sockets;
  details.physical_cores = cpuinfo->physical_cores;
  details.logical_cpus = cpuinfo->logical_cpus;
  details.numa_nodes = CountNumaNodes(options.root);
  details.simd = cpuinfo->simd;

  absl::StatusOr<std::unique_ptr<RaplPackageEnergy>> rapl = RaplPackageEnergy::Open(options.root);
  if (rapl.ok()) {
    device->rapl_ = std::move(*rapl);
    // The origin reading counts as the first rate point, so the first
    // Sample() already has a power figure.
    device->rapl_rate_.Update(0.0, device->clock_());
    details.power_source = "rapl";
  } else if (options.cpu_watts.has_value()) {
    device->configured_power_.emplace(*options.cpu_watts, device->clock_);
    details.power_source = "configured";
  } else {
    details.power_source = "none";
  }

  DeviceInfo& info = device->info_;
  info.id = "cpu";
  info.kind = DeviceKind::kCpu;
  info.name = cpuinfo->model_name.empty() ? "CPU" : cpuinfo->model_name;
  info.memory_total_bytes = meminfo->total_bytes;
  info.cpu = std::move(details);
  return device;
}

DeviceSample CpuDevice::Sample() {
  DeviceSample sample;
  sample.memory_total_bytes = info_.memory_total_bytes;
  if (absl::StatusOr<std::string> text = ReadTextFile(root_ / "proc" / "meminfo"); text.ok()) {
    if (absl::StatusOr<MemInfo> mem = ParseMemInfo(*text); mem.ok()) {
      sample.memory_total_bytes = mem->total_bytes;
      sample.memory_used_bytes = mem->total_bytes - mem->available_bytes;
    }
  }

  if (absl::StatusOr<std::string> text = ReadTextFile(root_ / "proc" / "stat"); text.ok()) {
    if (absl::StatusOr<CpuTimes> times = ParseProcStat(*text); times.ok()) {
      if (last_times_.has_value()) {
        sample.utilization_ratio = UtilizationBetween(*last_times_, *times);
      }
      last_times_ = *times;
    }
  }

  for (const std::filesystem::path& file : package_temperature_files_) {
    absl::StatusOr<int64_t> millidegrees = ReadInt64File(file);
    if (!millidegrees.ok()) continue;
    const double celsius = static_cast<double>(*millidegrees) / 1000.0;
    sample.temperature_celsius = std::max(sample.temperature_celsius.value_or(celsius), celsius);
  }

  SamplePower(sample);
  return sample;
}

void CpuDevice::SamplePower(DeviceSample& sample) {
  if (rapl_ != nullptr) {
    absl::StatusOr<double> joules = rapl_->ReadJoules();
    if (!joules.ok()) return;  // a counter that stopped reading: no figure this time
    sample.energy_joules = *joules;
    sample.power_watts = rapl_rate_.Update(*joules, clock_());
  } else if (configured_power_.has_value()) {
    const PowerReading reading = configured_power_->Read();
    sample.power_watts = reading.watts;
    sample.energy_joules = reading.joules;
  }
}

}  // namespace tokenmill::devices
