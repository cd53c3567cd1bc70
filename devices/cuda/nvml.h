// NVML (libnvidia-ml.so.1), reached through dlopen: the GPU's power, energy,
// utilization, temperature and memory use, without creating a CUDA context.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "devices/dynamic_library.h"

namespace tokenmill::devices::cuda {

// NVML's opaque device handle (nvmlDevice_t); owned by NVML, valid while the
// Nvml object that returned it lives.
struct NvmlDeviceOpaque;
using NvmlDevice = NvmlDeviceOpaque*;

// Memory of one GPU as NVML counts it (nvmlMemory_t), in bytes.
struct NvmlMemory {
  uint64_t total_bytes = 0;
  uint64_t free_bytes = 0;
  uint64_t used_bytes = 0;
};

// An initialized NVML; nvmlShutdown runs on destruction. Thread safe (NVML
// is). A call the GPU does not support returns an error, typically
// "Not Supported", and the caller leaves that figure out.
class Nvml {
 public:
  // dlopens `library`, binds the calls and runs nvmlInit_v2. kNotFound when
  // the library or a symbol is missing, kUnavailable when init fails.
  static absl::StatusOr<std::unique_ptr<Nvml>> Load(const std::string& library);

  ~Nvml();
  Nvml(const Nvml&) = delete;
  Nvml& operator=(const Nvml&) = delete;

  // The handle of the GPU at `pci_bus_id` as cuDeviceGetPCIBusId writes it;
  // the bus id joins the two APIs, whose device orders can differ.
  absl::StatusOr<NvmlDevice> DeviceByPciBusId(const std::string& pci_bus_id) const;

  // "GPU-8d7d4...".
  absl::StatusOr<std::string> Uuid(NvmlDevice device) const;
  // Board power draw now, from milliwatts.
  absl::StatusOr<double> PowerWatts(NvmlDevice device) const;
  // Energy since the driver loaded, from millijoules (Volta and later).
  absl::StatusOr<double> EnergyJoules(NvmlDevice device) const;
  // Share of the last sample period in which a kernel ran, 0..1.
  absl::StatusOr<double> GpuUtilization(NvmlDevice device) const;
  // GPU die temperature.
  absl::StatusOr<double> TemperatureCelsius(NvmlDevice device) const;
  absl::StatusOr<NvmlMemory> Memory(NvmlDevice device) const;

 private:
  using NvmlReturn = int;  // nvmlReturn_t
  struct RawUtilization {  // nvmlUtilization_t
    unsigned int gpu;
    unsigned int memory;
  };
  struct RawMemory {  // nvmlMemory_t
    unsigned long long total;
    unsigned long long free;
    unsigned long long used;
  };

  explicit Nvml(DynamicLibrary library) : library_(std::move(library)) {}

  absl::Status Check(const char* call, NvmlReturn result) const;

  DynamicLibrary library_;
  bool initialized_ = false;

  NvmlReturn (*init_)() = nullptr;
  NvmlReturn (*shutdown_)() = nullptr;
  const char* (*error_string_)(NvmlReturn result) = nullptr;
  NvmlReturn (*get_handle_by_pci_bus_id_)(const char* bus_id, NvmlDevice* device) = nullptr;
  NvmlReturn (*get_uuid_)(NvmlDevice device, char* uuid, unsigned int length) = nullptr;
  NvmlReturn (*get_power_usage_)(NvmlDevice device, unsigned int* milliwatts) = nullptr;
  NvmlReturn (*get_total_energy_)(NvmlDevice device, unsigned long long* millijoules) = nullptr;
  NvmlReturn (*get_utilization_)(NvmlDevice device, RawUtilization* rates) = nullptr;
  NvmlReturn (*get_temperature_)(NvmlDevice device, int sensor, unsigned int* celsius) = nullptr;
  NvmlReturn (*get_memory_info_)(NvmlDevice device, RawMemory* memory) = nullptr;
};

}  // namespace tokenmill::devices::cuda
