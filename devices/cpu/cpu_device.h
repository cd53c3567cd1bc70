// The host CPU as a Device: facts from /proc/cpuinfo, memory from
// /proc/meminfo, load from /proc/stat, package temperature and power from
// /sys (thermal zones, powercap RAPL), all read under DiscoveryOptions::root.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "devices/cpu/cpu_info.h"
#include "devices/cpu/rapl.h"
#include "devices/device.h"
#include "devices/discovery.h"
#include "devices/power_meter.h"

namespace tokenmill::devices {

// Thread safety: as Device; Sample() keeps the previous /proc/stat and
// energy readings, so it must not run on two threads at once.
class CpuDevice final : public Device {
 public:
  // Describes the CPU and picks its power probe: RAPL when readable, else
  // options.cpu_watts, else none. Fails only when /proc/cpuinfo or
  // /proc/meminfo cannot be read or parsed.
  static absl::StatusOr<std::unique_ptr<CpuDevice>> Create(const DiscoveryOptions& options);

  const DeviceInfo& Info() const override { return info_; }

  // Memory, utilization since the previous call (nullopt on the first),
  // hottest package temperature, and power/energy from the chosen probe.
  // Unreadable files leave their fields empty rather than failing.
  DeviceSample Sample() override;

 private:
  CpuDevice() = default;

  void SamplePower(DeviceSample& sample);

  DeviceInfo info_;
  std::filesystem::path root_;
  SteadyClock clock_;
  std::optional<CpuTimes> last_times_;
  std::vector<std::filesystem::path> package_temperature_files_;
  std::unique_ptr<RaplPackageEnergy> rapl_;
  EnergyRate rapl_rate_;
  std::optional<ConfiguredPowerMeter> configured_power_;
};

}  // namespace tokenmill::devices
