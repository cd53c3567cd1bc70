// A stand-in for libcuda.so.1 with two GPUs, dlopen'd by the discovery
// tests. Built twice: as is, and with FAKE_CUINIT_RESULT set to a failure.
#include <cstddef>
#include <cstdio>

#ifndef FAKE_CUINIT_RESULT
#define FAKE_CUINIT_RESULT 0
#endif

namespace {
constexpr int kDevices = 2;
constexpr int kInvalidValue = 1;     // CUDA_ERROR_INVALID_VALUE
constexpr int kInvalidDevice = 101;  // CUDA_ERROR_INVALID_DEVICE
}  // namespace

extern "C" {

int cuInit(unsigned int) { return FAKE_CUINIT_RESULT; }

int cuDriverGetVersion(int* version) {
  *version = 12080;
  return 0;
}

int cuDeviceGetCount(int* count) {
  *count = kDevices;
  return 0;
}

int cuDeviceGet(int* device, int ordinal) {
  if (ordinal < 0 || ordinal >= kDevices) return kInvalidDevice;
  *device = ordinal;
  return 0;
}

int cuDeviceGetName(char* name, int length, int device) {
  std::snprintf(name, static_cast<size_t>(length), "Fake GPU %d", device);
  return 0;
}

int cuDeviceTotalMem_v2(size_t* bytes, int) {
  *bytes = size_t{80} << 30;
  return 0;
}

int cuDeviceGetAttribute(int* value, int attribute, int) {
  switch (attribute) {
    case 16:
      *value = 132;
      return 0;
    case 75:
      *value = 9;
      return 0;
    case 76:
      *value = 0;
      return 0;
    default:
      return kInvalidValue;
  }
}

int cuDeviceGetPCIBusId(char* bus_id, int length, int device) {
  std::snprintf(bus_id, static_cast<size_t>(length), "0000:%02x:00.0", 0x17 + device);
  return 0;
}

int cuGetErrorName(int result, const char** name) {
  *name = result == 100 ? "CUDA_ERROR_NO_DEVICE" : "CUDA_ERROR_UNKNOWN";
  return 0;
}

int cuGetErrorString(int result, const char** text) {
  *text = result == 100 ? "no CUDA-capable device is detected" : "unknown error";
  return 0;
}

}  // extern "C"
