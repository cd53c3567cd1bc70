#include "devices/cuda/cuda_driver.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace tokenmill::devices::cuda {

absl::StatusOr<std::unique_ptr<CudaDriver>> CudaDriver::Load(const std::string& library) {
  absl::StatusOr<DynamicLibrary> opened = DynamicLibrary::Open(library);
  if (!opened.ok()) return opened.status();
  std::unique_ptr<CudaDriver> driver(new CudaDriver(std::move(*opened)));
  const DynamicLibrary& lib = driver->library_;
  for (absl::Status status : {
           lib.Resolve("cuInit", &driver->cu_init_),
           lib.Resolve("cuDriverGetVersion", &driver->cu_driver_get_version_),
           lib.Resolve("cuDeviceGetCount", &driver->cu_device_get_count_),
           lib.Resolve("cuDeviceGet", &driver->cu_device_get_),
           lib.Resolve("cuDeviceGetName", &driver->cu_device_get_name_),
           lib.Resolve("cuDeviceTotalMem_v2", &driver->cu_device_total_mem_),
           lib.Resolve("cuDeviceGetAttribute", &driver->cu_device_get_attribute_),
           lib.Resolve("cuDeviceGetPCIBusId", &driver->cu_device_get_pci_bus_id_),
       }) {
    if (!status.ok()) return status;
  }
  // Old drivers may lack these; errors are then reported by number.
  (void)lib.Resolve("cuGetErrorName", &driver->cu_get_error_name_);
  (void)lib.Resolve("cuGetErrorString", &driver->cu_get_error_string_);

  if (const CUresult r = driver->cu_init_(0); r != kCudaSuccess) {
    return absl::UnavailableError(driver->ErrorText("cuInit", r));
  }
  if (absl::Status s = driver->Check("cuDriverGetVersion",
                                     driver->cu_driver_get_version_(&driver->driver_version_));
      !s.ok()) {
    return s;
  }
  return driver;
}

std::string CudaDriver::ErrorText(const char* call, CUresult result) const {
  const char* name = nullptr;
  const char* text = nullptr;
  if (cu_get_error_name_ == nullptr || cu_get_error_name_(result, &name) != kCudaSuccess) {
    name = nullptr;
  }
  if (cu_get_error_string_ == nullptr || cu_get_error_string_(result, &text) != kCudaSuccess) {
    text = nullptr;
  }
  return absl::StrCat(call, ": ", name != nullptr ? name : "CUresult", " ", result,
                      text != nullptr ? absl::StrCat(" (", text, ")") : "");
}

absl::Status CudaDriver::Check(const char* call, CUresult result) const {
  if (result == kCudaSuccess) return absl::OkStatus();
  return absl::InternalError(ErrorText(call, result));
}

absl::StatusOr<int> CudaDriver::DeviceCount() const {
  int count = 0;
  if (absl::Status s = Check("cuDeviceGetCount", cu_device_get_count_(&count)); !s.ok()) return s;
  return count;
}

absl::StatusOr<CudaDeviceProperties> CudaDriver::Describe(int ordinal) const {
  CudaDeviceProperties props;
  props.ordinal = ordinal;
  CUdevice device = 0;
  if (absl::Status s = Check("cuDeviceGet", cu_device_get_(&device, ordinal)); !s.ok()) return s;

  char name[256] = {};
  if (absl::Status s =
          Check("cuDeviceGetName", cu_device_get_name_(name, sizeof(name) - 1, device));
      !s.ok()) {
    return s;
  }
  props.name = name;

  size_t bytes = 0;
  if (absl::Status s = Check("cuDeviceTotalMem_v2", cu_device_total_mem_(&bytes, device));
      !s.ok()) {
    return s;
  }
  props.total_memory_bytes = bytes;

  for (auto [attribute, out] : {std::pair{kComputeCapabilityMajor, &props.compute_major},
                                std::pair{kComputeCapabilityMinor, &props.compute_minor},
                                std::pair{kMultiprocessorCount, &props.multiprocessors}}) {
    if (absl::Status s =
            Check("cuDeviceGetAttribute", cu_device_get_attribute_(out, attribute, device));
        !s.ok()) {
      return s;
    }
  }

  // "0000:17:00.0" needs 13 bytes; the driver documents 13 as the minimum.
  char bus_id[64] = {};
  if (absl::Status s = Check("cuDeviceGetPCIBusId",
                             cu_device_get_pci_bus_id_(bus_id, sizeof(bus_id) - 1, device));
      !s.ok()) {
    return s;
  }
  props.pci_bus_id = bus_id;
  return props;
}

}  // namespace tokenmill::devices::cuda
