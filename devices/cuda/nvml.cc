#include "devices/cuda/nvml.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace tokenmill::devices::cuda {
namespace {

constexpr int kNvmlSuccess = 0;
constexpr int kNvmlTemperatureGpu = 0;    // NVML_TEMPERATURE_GPU
constexpr unsigned int kUuidLength = 96;  // NVML_DEVICE_UUID_V2_BUFFER_SIZE

}  // namespace

absl::StatusOr<std::unique_ptr<Nvml>> Nvml::Load(const std::string& library) {
  absl::StatusOr<DynamicLibrary> opened = DynamicLibrary::Open(library);
  if (!opened.ok()) return opened.status();
  std::unique_ptr<Nvml> nvml(new Nvml(std::move(*opened)));
  const DynamicLibrary& lib = nvml->library_;
  for (absl::Status status : {
           lib.Resolve("nvmlInit_v2", &nvml->init_),
           lib.Resolve("nvmlShutdown", &nvml->shutdown_),
           lib.Resolve("nvmlErrorString", &nvml->error_string_),
           lib.Resolve("nvmlDeviceGetHandleByPciBusId_v2", &nvml->get_handle_by_pci_bus_id_),
           lib.Resolve("nvmlDeviceGetUUID", &nvml->get_uuid_),
           lib.Resolve("nvmlDeviceGetPowerUsage", &nvml->get_power_usage_),
           lib.Resolve("nvmlDeviceGetTotalEnergyConsumption", &nvml->get_total_energy_),
           lib.Resolve("nvmlDeviceGetUtilizationRates", &nvml->get_utilization_),
           lib.Resolve("nvmlDeviceGetTemperature", &nvml->get_temperature_),
           lib.Resolve("nvmlDeviceGetMemoryInfo", &nvml->get_memory_info_),
       }) {
    if (!status.ok()) return status;
  }
  if (const NvmlReturn r = nvml->init_(); r != kNvmlSuccess) {
    return absl::UnavailableError(
        absl::StrCat("nvmlInit_v2: ", nvml->error_string_(r), " (", r, ")"));
  }
  nvml->initialized_ = true;
  return nvml;
}

Nvml::~Nvml() {
  // Init and shutdown are reference counted by NVML, so this pairs with our
  // own init only.
  if (initialized_) shutdown_();
}

absl::Status Nvml::Check(const char* call, NvmlReturn result) const {
  if (result == kNvmlSuccess) return absl::OkStatus();
  return absl::UnavailableError(absl::StrCat(call, ": ", error_string_(result), " (", result, ")"));
}

absl::StatusOr<NvmlDevice> Nvml::DeviceByPciBusId(const std::string& pci_bus_id) const {
  NvmlDevice device = nullptr;
  if (absl::Status s = Check("nvmlDeviceGetHandleByPciBusId_v2",
                             get_handle_by_pci_bus_id_(pci_bus_id.c_str(), &device));
      !s.ok()) {
    return s;
  }
  return device;
}

absl::StatusOr<std::string> Nvml::Uuid(NvmlDevice device) const {
  char uuid[kUuidLength] = {};
  if (absl::Status s = Check("nvmlDeviceGetUUID", get_uuid_(device, uuid, kUuidLength - 1));
      !s.ok()) {
    return s;
  }
  return std::string(uuid);
}

absl::StatusOr<double> Nvml::PowerWatts(NvmlDevice device) const {
  unsigned int milliwatts = 0;
  if (absl::Status s = Check("nvmlDeviceGetPowerUsage", get_power_usage_(device, &milliwatts));
      !s.ok()) {
    return s;
  }
  return milliwatts / 1000.0;
}

absl::StatusOr<double> Nvml::EnergyJoules(NvmlDevice device) const {
  unsigned long long millijoules = 0;
  if (absl::Status s =
          Check("nvmlDeviceGetTotalEnergyConsumption", get_total_energy_(device, &millijoules));
      !s.ok()) {
    return s;
  }
  return static_cast<double>(millijoules) / 1000.0;
}

absl::StatusOr<double> Nvml::GpuUtilization(NvmlDevice device) const {
  RawUtilization rates{};
  if (absl::Status s = Check("nvmlDeviceGetUtilizationRates", get_utilization_(device, &rates));
      !s.ok()) {
    return s;
  }
  return rates.gpu / 100.0;
}

absl::StatusOr<double> Nvml::TemperatureCelsius(NvmlDevice device) const {
  unsigned int celsius = 0;
  if (absl::Status s = Check("nvmlDeviceGetTemperature",
                             get_temperature_(device, kNvmlTemperatureGpu, &celsius));
      !s.ok()) {
    return s;
  }
  return static_cast<double>(celsius);
}

absl::StatusOr<NvmlMemory> Nvml::Memory(NvmlDevice device) const {
  RawMemory memory{};
  if (absl::Status s = Check("nvmlDeviceGetMemoryInfo", get_memory_info_(device, &memory));
      !s.ok()) {
    return s;
  }
  return NvmlMemory{memory.total, memory.free, memory.used};
}

}  // namespace tokenmill::devices::cuda
