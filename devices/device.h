// Device: one accelerator or the host CPU, as the rest of tokenmill sees it.
//
// The device layer is the bottom of the dependency graph: it knows nothing of
// tenants, requests or config files. Executors (devices/executor.h, next
// issues) are created by a Device for one model.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace tokenmill::devices {

enum class DeviceKind { kCpu, kCuda, kPlugin };

const char* DeviceKindName(DeviceKind kind);  // "cpu", "cuda", "plugin"

struct CpuDetails {
  std::string vendor;                 // "GenuineIntel", "AuthenticAMD", ...
  std::string model_name;             // /proc/cpuinfo "model name"
  uint32_t sockets = 0;
  uint32_t physical_cores = 0;
  uint32_t logical_cpus = 0;
  uint32_t numa_nodes = 0;
  std::vector<std::string> simd;      // of: sse4_2 avx avx2 fma f16c avx512f avx512bw
                                      // avx512vl avx512_bf16 avx512_fp16 amx_bf16 neon
  std::string power_source;           // "rapl" | "configured" | "none"
};

struct CudaDetails {
  int ordinal = 0;
  int compute_major = 0;
  int compute_minor = 0;
  uint32_t multiprocessors = 0;
  std::string pci_bus_id;             // "0000:17:00.0"
  std::string uuid;                   // "GPU-..." when NVML gives it
  int driver_version = 0;             // cuDriverGetVersion, e.g. 12080
  bool nvml = false;                  // power/util/temperature readable
};

// Static facts, read once at discovery.
struct DeviceInfo {
  std::string id;                     // "cpu", "cuda:0", a plugin's "KIND:N"
  DeviceKind kind = DeviceKind::kCpu;
  std::string name;                   // human name: CPU model or GPU name
  uint64_t memory_total_bytes = 0;
  std::optional<CpuDetails> cpu;
  std::optional<CudaDetails> cuda;
};

// A reading of what changes. Fields a device cannot read are nullopt.
struct DeviceSample {
  uint64_t memory_total_bytes = 0;
  uint64_t memory_used_bytes = 0;
  std::optional<double> power_watts;          // instantaneous or averaged since last sample
  std::optional<double> energy_joules;        // monotonic, since an arbitrary origin
  std::optional<double> utilization_ratio;    // 0..1
  std::optional<double> temperature_celsius;
};

// Thread safety: Info() is immutable; Sample() may be called from any one
// thread at a time (the telemetry sampler).
class Device {
 public:
  virtual ~Device() = default;
  virtual const DeviceInfo& Info() const = 0;
  virtual DeviceSample Sample() = 0;
};

using DevicePtr = std::unique_ptr<Device>;

}  // namespace tokenmill::devices
