// Prometheus exposition: the registry, the /metrics HTTP endpoint, and the
// node-level collectors (build info, process, devices).
//
// Metric names follow docs/architecture.md: prefix tokenmill_, units in names.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "devices/device.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"

namespace prometheus {
class Exposer;
}

namespace tokenmill::telemetry {

// Serves a registry (and other collectables) at /metrics on a TCP address.
// The exposer runs its own threads; Stop() or destruction joins them.
class MetricsServer {
 public:
  // listen is "host:port"; port 0 picks a free port (see port()).
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(const std::string& listen);
  ~MetricsServer();

  void Register(std::weak_ptr<prometheus::Collectable> collectable);
  uint16_t port() const { return port_; }

 private:
  MetricsServer(std::unique_ptr<prometheus::Exposer> exposer, uint16_t port);
  std::unique_ptr<prometheus::Exposer> exposer_;
  uint16_t port_;
};

// tokenmill_build_info{version,revision} 1.
void AddBuildInfo(prometheus::Registry& registry);

// process_cpu_seconds_total, process_resident_memory_bytes,
// process_virtual_memory_bytes, process_open_fds, process_max_fds,
// process_start_time_seconds: read from /proc/self at scrape time.
std::shared_ptr<prometheus::Collectable> MakeProcessCollector();

// Samples devices on its own thread every `interval` and keeps
//   tokenmill_device_memory_bytes{device,state=used|total}
//   tokenmill_device_power_watts{device}
//   tokenmill_device_utilization_ratio{device}
//   tokenmill_device_temperature_celsius{device}
//   tokenmill_energy_joules_total{device}
// Gauges a device cannot read are not exported for it.
// The devices must outlive the sampler.
class DeviceSampler {
 public:
  DeviceSampler(prometheus::Registry& registry, std::vector<devices::Device*> devices,
                std::chrono::milliseconds interval);
  ~DeviceSampler();  // stops and joins

  // Takes one sample of every device now (also called by the thread).
  void SampleOnce();
  // Latest sample per device, in the order given to the constructor.
  std::vector<devices::DeviceSample> Latest() const;

 private:
  struct PerDevice;
  void Run();

  std::vector<std::unique_ptr<PerDevice>> per_device_;
  prometheus::Registry& registry_;
  std::chrono::milliseconds interval_;
  mutable absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace tokenmill::telemetry
