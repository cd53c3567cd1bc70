// The CUDA driver API (libcuda.so.1), reached through dlopen.
//
// Only the calls device discovery needs are bound, with their C signatures
// declared here, so that this builds without the CUDA toolkit and runs on
// machines without a driver. No CUDA context is created: discovery must not
// take GPU memory.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "devices/dynamic_library.h"

namespace tokenmill::devices::cuda {

// The driver API's own types, as its C header declares them.
using CUresult = int;
using CUdevice = int;
constexpr CUresult kCudaSuccess = 0;

// The static facts of one GPU the driver reports.
struct CudaDeviceProperties {
  int ordinal = 0;
  std::string name;  // "NVIDIA H100 80GB HBM3"
  uint64_t total_memory_bytes = 0;
  int compute_major = 0;
  int compute_minor = 0;
  int multiprocessors = 0;
  std::string pci_bus_id;  // "0000:17:00.0"
};

// An initialized driver. Thread safe (the driver API is); the library stays
// loaded while the object lives.
class CudaDriver {
 public:
  // dlopens `library`, binds the calls and runs cuInit(0). kNotFound when the
  // library or a symbol is missing, kUnavailable when cuInit fails (no
  // device, driver/kernel module mismatch); the message says which.
  static absl::StatusOr<std::unique_ptr<CudaDriver>> Load(const std::string& library);

  // cuDriverGetVersion, e.g. 12080 for CUDA 12.8.
  int driver_version() const { return driver_version_; }

  // cuDeviceGetCount.
  absl::StatusOr<int> DeviceCount() const;

  // Name, memory, compute capability, SMs and PCI bus id of GPU `ordinal`.
  absl::StatusOr<CudaDeviceProperties> Describe(int ordinal) const;

 private:
  // Attributes of cuDeviceGetAttribute, by their enum values.
  enum Attribute : int {
    kMultiprocessorCount = 16,
    kComputeCapabilityMajor = 75,
    kComputeCapabilityMinor = 76,
  };

  explicit CudaDriver(DynamicLibrary library) : library_(std::move(library)) {}

  // "cuDeviceGet: CUDA_ERROR_INVALID_DEVICE (invalid device ordinal)".
  std::string ErrorText(const char* call, CUresult result) const;
  absl::Status Check(const char* call, CUresult result) const;

  DynamicLibrary library_;
  int driver_version_ = 0;

  CUresult (*cu_init_)(unsigned int flags) = nullptr;
  CUresult (*cu_driver_get_version_)(int* version) = nullptr;
  CUresult (*cu_device_get_count_)(int* count) = nullptr;
  CUresult (*cu_device_get_)(CUdevice* device, int ordinal) = nullptr;
  CUresult (*cu_device_get_name_)(char* name, int length, CUdevice device) = nullptr;
  CUresult (*cu_device_total_mem_)(size_t* bytes, CUdevice device) = nullptr;
  CUresult (*cu_device_get_attribute_)(int* value, int attribute, CUdevice device) = nullptr;
  CUresult (*cu_device_get_pci_bus_id_)(char* bus_id, int length, CUdevice device) = nullptr;
  // Optional: only for readable error messages.
  CUresult (*cu_get_error_name_)(CUresult result, const char** name) = nullptr;
  CUresult (*cu_get_error_string_)(CUresult result, const char** text) = nullptr;
};

}  // namespace tokenmill::devices::cuda
