#include "devices/device.h"

namespace tokenmill::devices {

const char* DeviceKindName(DeviceKind kind) {
  switch (kind) {
    case DeviceKind::kCpu:
      return "cpu";
    case DeviceKind::kCuda:
      return "cuda";
    case DeviceKind::kPlugin:
      return "plugin";
  }
  return "unknown";  // an out-of-range cast; never a valid kind
}

}  // namespace tokenmill::devices
