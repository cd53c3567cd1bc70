// A stand-in for libnvidia-ml.so.1, dlopen'd by the discovery tests. It
// knows the fake driver's first GPU fully; the second reads memory but not
// power or energy, as on boards whose NVML lacks those calls.
#include <cstring>

namespace {
constexpr int kSuccess = 0;
constexpr int kNotSupported = 3;  // NVML_ERROR_NOT_SUPPORTED
constexpr int kNotFound = 6;      // NVML_ERROR_NOT_FOUND

struct FakeDevice {
  int index;
};
FakeDevice devices[2] = {{0}, {1}};
int initialized = 0;
}  // namespace

extern "C" {

struct Utilization {
  unsigned int gpu;
  unsigned int memory;
};
struct Memory {
  unsigned long long total, free, used;
};

int nvmlInit_v2() {
  ++initialized;
  return kSuccess;
}
int nvmlShutdown() {
  --initialized;
  return kSuccess;
}
const char* nvmlErrorString(int result) {
  return result == kNotSupported ? "Not Supported" : result == kNotFound ? "Not Found" : "Unknown";
}

int nvmlDeviceGetHandleByPciBusId_v2(const char* bus_id, FakeDevice** device) {
  if (std::strcmp(bus_id, "0000:17:00.0") == 0) {
    *device = &devices[0];
  } else if (std::strcmp(bus_id, "0000:18:00.0") == 0) {
    *device = &devices[1];
  } else {
    return kNotFound;
  }
  return kSuccess;
}

int nvmlDeviceGetUUID(FakeDevice* device, char* uuid, unsigned int length) {
  const char* text = device->index == 0 ? "GPU-fake-0" : "GPU-fake-1";
  std::strncpy(uuid, text, length);
  return kSuccess;
}

int nvmlDeviceGetPowerUsage(FakeDevice* device, unsigned int* milliwatts) {
  if (device->index != 0) return kNotSupported;
  *milliwatts = 350500;
  return kSuccess;
}

int nvmlDeviceGetTotalEnergyConsumption(FakeDevice* device, unsigned long long* millijoules) {
  if (device->index != 0) return kNotSupported;
  *millijoules = 123456789;
  return kSuccess;
}

int nvmlDeviceGetUtilizationRates(FakeDevice* device, Utilization* rates) {
  if (device->index != 0) return kNotSupported;
  rates->gpu = 75;
  rates->memory = 40;
  return kSuccess;
}

int nvmlDeviceGetTemperature(FakeDevice* device, int sensor, unsigned int* celsius) {
  if (device->index != 0 || sensor != 0) return kNotSupported;
  *celsius = 55;
  return kSuccess;
}

int nvmlDeviceGetMemoryInfo(FakeDevice*, Memory* memory) {
  memory->total = 80ull << 30;
  memory->used = 1ull << 30;
  memory->free = memory->total - memory->used;
  return kSuccess;
}

}  // extern "C"
