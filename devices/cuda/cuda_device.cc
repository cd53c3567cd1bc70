#include "devices/cuda/cuda_device.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace tokenmill::devices::cuda {

CudaDevice::CudaDevice(DeviceInfo info, std::shared_ptr<const CudaDriver> driver,
                       std::shared_ptr<const Nvml> nvml, NvmlDevice nvml_device,
                       std::optional<double> watts, SteadyClock clock)
    : info_(std::move(info)),
      driver_(std::move(driver)),
      nvml_(nvml_device != nullptr ? std::move(nvml) : nullptr),
      nvml_device_(nvml_device),
      clock_(ClockOrSteady(std::move(clock))) {
  if (watts.has_value()) configured_power_.emplace(*watts, clock_);
}

DeviceSample CudaDevice::Sample() {
  DeviceSample sample;
  sample.memory_total_bytes = info_.memory_total_bytes;
  if (nvml_ != nullptr) {
    if (absl::StatusOr<NvmlMemory> memory = nvml_->Memory(nvml_device_); memory.ok()) {
      sample.memory_total_bytes = memory->total_bytes;
      sample.memory_used_bytes = memory->used_bytes;
    }
    if (absl::StatusOr<double> ratio = nvml_->GpuUtilization(nvml_device_); ratio.ok()) {
      sample.utilization_ratio = *ratio;
    }
    if (absl::StatusOr<double> celsius = nvml_->TemperatureCelsius(nvml_device_); celsius.ok()) {
      sample.temperature_celsius = *celsius;
    }
  }
  SamplePower(sample);
  return sample;
}

void CudaDevice::SamplePower(DeviceSample& sample) {
  std::optional<double> watts, joules;
  if (nvml_ != nullptr) {
    if (absl::StatusOr<double> w = nvml_->PowerWatts(nvml_device_); w.ok()) watts = *w;
    if (absl::StatusOr<double> j = nvml_->EnergyJoules(nvml_device_); j.ok()) joules = *j;
  }
  const auto now = clock_();
  if (joules.has_value()) {
    const std::optional<double> mean = energy_rate_.Update(*joules, now);
    if (!watts.has_value()) watts = mean;
  } else if (watts.has_value()) {
    joules = power_integrator_.Add(*watts, now);
  }
  if (!watts.has_value() && !joules.has_value() && configured_power_.has_value()) {
    const PowerReading reading = configured_power_->Read();
    watts = reading.watts;
    joules = reading.joules;
  }
  sample.power_watts = watts;
  sample.energy_joules = joules;
}

CudaDiscovery DiscoverCudaDevices(const DiscoveryOptions& options) {
  CudaDiscovery found;
  absl::StatusOr<std::unique_ptr<CudaDriver>> loaded =
      CudaDriver::Load(options.cuda_driver_library);
  if (!loaded.ok()) {
    found.unavailable_reason = std::string(loaded.status().message());
    return found;
  }
  std::shared_ptr<const CudaDriver> driver = std::move(*loaded);
  absl::StatusOr<int> count = driver->DeviceCount();
  if (!count.ok()) {
    found.unavailable_reason = std::string(count.status().message());
    return found;
  }
  if (*count <= 0) {
    found.unavailable_reason = "the CUDA driver reports no device";
    return found;
  }

  std::shared_ptr<const Nvml> nvml;
  if (absl::StatusOr<std::unique_ptr<Nvml>> n = Nvml::Load(options.nvml_library); n.ok()) {
    nvml = std::move(*n);
  } else {
    found.nvml_unavailable_reason = std::string(n.status().message());
  }

  for (int ordinal = 0; ordinal < *count; ++ordinal) {
    absl::StatusOr<CudaDeviceProperties> props = driver->Describe(ordinal);
    if (!props.ok()) {
      // One broken GPU (fallen off the bus, say) must not hide the others.
      found.unavailable_reason = absl::StrCat("cuda:", ordinal, ": ", props.status().message());
      continue;
    }
    CudaDetails details;
    details.ordinal = ordinal;
    details.compute_major = props->compute_major;
    details.compute_minor = props->compute_minor;
    details.multiprocessors = static_cast<uint32_t>(props->multiprocessors);
    details.pci_bus_id = props->pci_bus_id;
    details.driver_version = driver->driver_version();

    NvmlDevice handle = nullptr;
    if (nvml != nullptr) {
      if (absl::StatusOr<NvmlDevice> h = nvml->DeviceByPciBusId(props->pci_bus_id); h.ok()) {
        handle = *h;
        details.nvml = true;
        if (absl::StatusOr<std::string> uuid = nvml->Uuid(handle); uuid.ok()) details.uuid = *uuid;
      } else {
        found.nvml_unavailable_reason = absl::StrCat("cuda:", ordinal, ": ", h.status().message());
      }
    }

    DeviceInfo info;
    info.id = absl::StrCat("cuda:", ordinal);
    info.kind = DeviceKind::kCuda;
    info.name = props->name;
    info.memory_total_bytes = props->total_memory_bytes;
    info.cuda = std::move(details);
    std::optional<double> watts = options.watts_for ? options.watts_for(info.id) : std::nullopt;
    if (!watts) watts = options.cuda_watts;
    found.devices.push_back(
        std::make_unique<CudaDevice>(std::move(info), driver, nvml, handle, watts, options.clock));
  }
  if (!found.devices.empty()) found.unavailable_reason.clear();
  return found;
}

}  // namespace tokenmill::devices::cuda
