#include "devices/cpu/rapl.h"

#include <algorithm>
#include <string>
#include <system_error>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "devices/procfs.h"

namespace tokenmill::devices {

absl::StatusOr<std::unique_ptr<RaplPackageEnergy>> RaplPackageEnergy::Open(
    const std::filesystem::path& root) {
  const std::filesystem::path powercap = root / "sys" / "class" / "powercap";
  std::error_code ec;
  std::vector<std::filesystem::path> candidates;
  for (std::filesystem::directory_iterator it(powercap, ec), end; !ec && it != end;
       it.increment(ec)) {
    const std::string name = it->path().filename().string();
    // "intel-rapl:0" is a package; "intel-rapl:0:1" a subzone (core, dram).
    if (absl::StartsWith(name, "intel-rapl:") && std::count(name.begin(), name.end(), ':') == 1) {
      candidates.push_back(it->path());
    }
  }
  std::sort(candidates.begin(), candidates.end());

  std::vector<Zone> zones;
  for (const std::filesystem::path& zone : candidates) {
    absl::StatusOr<std::string> zone_name = ReadFirstLine(zone / "name");
    if (!zone_name.ok() || !absl::StartsWith(*zone_name, "package")) continue;
    absl::StatusOr<uint64_t> energy = ReadUint64File(zone / "energy_uj");
    if (!energy.ok()) continue;
    // Without a known range a wrap cannot be told from a reset; the counter
    // then only ever adds (see WrappingCounter).
    const uint64_t range = ReadUint64File(zone / "max_energy_range_uj").value_or(0);
    zones.push_back(Zone{zone / "energy_uj", WrappingCounter(*energy, range)});
  }
  if (zones.empty()) {
    return absl::NotFoundError(
        absl::StrCat("no readable RAPL package counter under ", powercap.string()));
  }
  return std::unique_ptr<RaplPackageEnergy>(new RaplPackageEnergy(std::move(zones)));
}

absl::StatusOr<double> RaplPackageEnergy::ReadJoules() {
  // Read every counter before adding any, so one failure leaves the total
  // consistent with the origins.
  std::vector<uint64_t> readings;
  readings.reserve(zones_.size());
  for (const Zone& zone : zones_) {
    absl::StatusOr<uint64_t> energy = ReadUint64File(zone.energy_file);
    if (!energy.ok()) return energy.status();
    readings.push_back(*energy);
  }
  for (size_t i = 0; i < zones_.size(); ++i) {
    total_microjoules_ += zones_[i].counter.Advance(readings[i]);
  }
  return static_cast<double>(total_microjoules_) * 1e-6;
}

}  // namespace tokenmill::devices
