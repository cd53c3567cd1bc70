// Device discovery: the CPU and every CUDA GPU the driver shows.
#pragma once

#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "devices/device.h"
#include "devices/power_meter.h"

namespace tokenmill::devices {

struct DiscoveryOptions {
  // Root of /proc and /sys, so that tests read fixture trees ("/" in production).
  std::filesystem::path root = "/";
  // CPU power when powercap/RAPL cannot be read; nullopt = no power figure.
  std::optional<double> cpu_watts = std::nullopt;
  // Per-GPU wattage fallback when NVML cannot read power.
  std::optional<double> cuda_watts = std::nullopt;
  // Configured watts by device id ("cpu", "cuda:1"); when set it is asked
  // first for each device, and cpu_watts / cuda_watts apply where it says
  // nullopt. The daemon resolves [[device]] entries through it.
  std::function<std::optional<double>(const std::string& device_id)> watts_for = nullptr;
  // Look for CUDA GPUs (dlopen libcuda.so.1 / libnvidia-ml.so.1).
  bool cuda = true;
  // Libraries dlopen'd for CUDA; tests name missing files to exercise the
  // fallbacks. A bare name is searched the usual dlopen way.
  std::string cuda_driver_library = "libcuda.so.1";
  std::string nvml_library = "libnvidia-ml.so.1";
  // Steady time for rates and energy integration; empty = steady_clock::now.
  SteadyClock clock = nullptr;
};

// Everything discovery found, with why GPUs are missing when they are.
struct Discovery {
  std::vector<DevicePtr> devices;  // the CPU first, then cuda:0, cuda:1, ...
  // Why no CUDA GPU is listed ("libcuda.so.1: cannot open ...", "cuInit:
  // CUDA_ERROR_NO_DEVICE ..."), for a log line; empty when GPUs were found
  // or options.cuda was false.
  std::string cuda_unavailable_reason;
  // Why GPUs have no NVML figures (power, utilization, temperature); empty
  // when NVML works or there is no GPU.
  std::string nvml_unavailable_reason;
};

// Never fails for "no GPU" or "no driver": those give a CPU-only list and a
// reason. An error is returned only when the CPU itself cannot be described
// (unreadable /proc/cpuinfo or /proc/meminfo under options.root).
absl::StatusOr<Discovery> Discover(const DiscoveryOptions& options);

}  // namespace tokenmill::devices
