#include "devices/discovery.h"

#include <utility>

#include "devices/cpu/cpu_device.h"
#include "devices/cuda/cuda_device.h"

namespace tokenmill::devices {

absl::StatusOr<Discovery> Discover(const DiscoveryOptions& options) {
  Discovery found;
  DiscoveryOptions cpu_options = options;
  if (options.watts_for) {
    if (std::optional<double> w = options.watts_for("cpu")) cpu_options.cpu_watts = w;
  }
  absl::StatusOr<std::unique_ptr<CpuDevice>> cpu = CpuDevice::Create(cpu_options);
  if (!cpu.ok()) return cpu.status();
  found.devices.push_back(std::move(*cpu));
  if (options.cuda) {
    cuda::CudaDiscovery gpus = cuda::DiscoverCudaDevices(options);
    for (DevicePtr& gpu : gpus.devices) found.devices.push_back(std::move(gpu));
    found.cuda_unavailable_reason = std::move(gpus.unavailable_reason);
    found.nvml_unavailable_reason = std::move(gpus.nvml_unavailable_reason);
  }
  return found;
}

}  // namespace tokenmill::devices
