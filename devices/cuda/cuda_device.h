// CUDA GPUs as Devices: found through the driver API, sampled through NVML.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "devices/cuda/cuda_driver.h"
#include "devices/cuda/nvml.h"
#include "devices/device.h"
#include "devices/discovery.h"
#include "devices/power_meter.h"

namespace tokenmill::devices::cuda {

// One GPU. Thread safety: as Device; Sample() keeps integration state.
class CudaDevice final : public Device {
 public:
  // `nvml` and `nvml_device` are null when NVML is missing or does not know
  // this GPU; `watts` then stands in for power (nullopt: no power figure).
  // The driver is held so that it stays loaded while any GPU is in use.
  CudaDevice(DeviceInfo info, std::shared_ptr<const CudaDriver> driver,
             std::shared_ptr<const Nvml> nvml, NvmlDevice nvml_device, std::optional<double> watts,
             SteadyClock clock);

  const DeviceInfo& Info() const override { return info_; }

  // From NVML: memory used/total, power, energy, utilization, temperature.
  // Without NVML only memory total (used = 0) and configured power/energy.
  DeviceSample Sample() override;

 private:
  void SamplePower(DeviceSample& sample);

  DeviceInfo info_;
  std::shared_ptr<const CudaDriver> driver_;
  std::shared_ptr<const Nvml> nvml_;
  NvmlDevice nvml_device_;
  SteadyClock clock_;
  std::optional<ConfiguredPowerMeter> configured_power_;
  EnergyRate energy_rate_;            // power when NVML gives energy only
  PowerIntegrator power_integrator_;  // energy when NVML gives power only
};

// What CUDA discovery found.
struct CudaDiscovery {
  std::vector<DevicePtr> devices;       // cuda:0, cuda:1, ... in driver order
  std::string unavailable_reason;       // why `devices` is empty; else ""
  std::string nvml_unavailable_reason;  // why the GPUs lack NVML figures; else ""
};

// Loads options.cuda_driver_library and options.nvml_library and lists the
// GPUs. A missing library, a failing cuInit or zero devices give no GPUs and
// a reason, never an error; a missing NVML gives GPUs with nvml = false.
CudaDiscovery DiscoverCudaDevices(const DiscoveryOptions& options);

}  // namespace tokenmill::devices::cuda
