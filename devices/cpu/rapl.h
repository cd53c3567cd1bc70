// CPU package energy from the Linux powercap interface (RAPL).
//
// Each socket shows up as /sys/class/powercap/intel-rapl:N with name
// "package-N" (AMD's driver reuses the intel-rapl name). energy_uj is a
// microjoule counter that wraps at max_energy_range_uj; since kernel 5.10 it
// is readable by root only, so an unreadable counter is normal and the
// caller falls back to a configured wattage.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "devices/power_meter.h"

namespace tokenmill::devices {

// Sum of every package's energy since Open. Not thread safe.
class RaplPackageEnergy {
 public:
  // Finds the package zones under `root`/sys/class/powercap whose counter is
  // readable now, taking their current readings as the origin. kNotFound
  // when there is none (no powercap, no permission, or a VM).
  static absl::StatusOr<std::unique_ptr<RaplPackageEnergy>> Open(const std::filesystem::path& root);

  // Joules drawn by all packages since Open, counting wrap-arounds. An error
  // when a counter that was readable no longer is; the total is kept.
  absl::StatusOr<double> ReadJoules();

  // Number of packages summed.
  size_t packages() const { return zones_.size(); }

 private:
  struct Zone {
    std::filesystem::path energy_file;
    WrappingCounter counter;
  };

  explicit RaplPackageEnergy(std::vector<Zone> zones) : zones_(std::move(zones)) {}

  std::vector<Zone> zones_;
  uint64_t total_microjoules_ = 0;
};

}  // namespace tokenmill::devices
