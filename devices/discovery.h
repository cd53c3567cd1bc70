// Device discovery: the CPU and every CUDA GPU the driver shows.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "devices/device.h"

namespace tokenmill::devices {

struct DiscoveryOptions {
  // Root of /proc and /sys, so that tests read fixture trees ("/" in production).
  std::filesystem::path root = "/";
  // CPU power when powercap/RAPL cannot be read; nullopt = no power figure.
  std::optional<double> cpu_watts;
  // Per-GPU wattage fallback when NVML cannot read power.
  std::optional<double> cuda_watts;
  // Look for CUDA GPUs (dlopen libcuda.so.1 / libnvidia-ml.so.1).
  bool cuda = true;
};

// Never fails for "no GPU" or "no driver": those give a CPU-only list. An
// error is returned only when the CPU itself cannot be described.
absl::StatusOr<std::vector<DevicePtr>> DiscoverDevices(const DiscoveryOptions& options);

}  // namespace tokenmill::devices
