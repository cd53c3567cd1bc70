// Prometheus exposition: the registry, the /metrics HTTP endpoint, and the
// node-level collectors (build info, process, devices).
//
// Metric names follow the metric table of the design doc: prefix tokenmill_,
// units in names. Nothing here is a singleton: the daemon owns the registry,
// the server and the sampler and wires them together.
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
// The exposer runs its own threads; destruction stops and joins them. It can
// take up to 2 s: civetweb's listener checks its stop flag between 2 s polls.
class MetricsServer {
 public:
  // listen is "host:port" where host is an IPv4 literal, a bracketed IPv6
  // literal ("[::1]:9464") or "localhost"; port 0 picks a free port (see
  // port()). Errors: kInvalidArgument for a malformed address, kUnavailable
  // when the address cannot be bound (in use, not local, no permission).
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(const std::string& listen);
  ~MetricsServer();

  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // Adds a collectable to /metrics. The server keeps only a weak reference:
  // the caller keeps the collectable alive; an expired one is skipped.
  // Thread-safe.
  void Register(std::weak_ptr<prometheus::Collectable> collectable);
  // The bound port (the real one when Start was given port 0).
  uint16_t port() const { return port_; }

 private:
  MetricsServer(std::unique_ptr<prometheus::Exposer> exposer, uint16_t port);
  std::unique_ptr<prometheus::Exposer> exposer_;
  uint16_t port_;
};

// tokenmill_build_info{version,revision} 1, from the generated
// tokenmill/version.h.
void AddBuildInfo(prometheus::Registry& registry);

// process_cpu_seconds_total, process_resident_memory_bytes,
// process_virtual_memory_bytes, process_open_fds, process_max_fds,
// process_start_time_seconds: read from /proc/self at scrape time. A figure
// that cannot be read at a scrape is left out of that scrape. Parsers and an
// injectable /proc root live in telemetry/process_collector.h.
std::shared_ptr<prometheus::Collectable> MakeProcessCollector();

// Samples devices on its own thread every `interval` and keeps
//   tokenmill_device_memory_bytes{device,state=used|total}
//   tokenmill_device_power_watts{device}
//   tokenmill_device_utilization_ratio{device}
//   tokenmill_device_temperature_celsius{device}
//   tokenmill_energy_joules_total{device}
// Gauges a device cannot read are not exported for it: a series appears when
// the device first reports the figure (memory: a non-zero total) and goes
// away while it reports none. The energy counter grows by the positive deltas
// of the device's monotonic energy reading; a reading that goes backwards
// (device reset) only sets a new baseline.
// The constructor takes a first sample, so the families are filled before the
// first scrape. The devices and the registry must outlive the sampler; on
// destruction its series are removed from the registry.
// Thread safety: SampleOnce() and Latest() may be called from any thread;
// Device::Sample() is only ever called under the sampler's lock, so one
// thread at a time.
class DeviceSampler {
 public:
  // interval <= 0 starts no thread: samples are taken by SampleOnce() only.
  DeviceSampler(prometheus::Registry& registry, std::vector<devices::Device*> devices,
                std::chrono::milliseconds interval);
  ~DeviceSampler();  // stops and joins promptly, without waiting out the interval

  DeviceSampler(const DeviceSampler&) = delete;
  DeviceSampler& operator=(const DeviceSampler&) = delete;

  // Takes one sample of every device now (also called by the thread).
  void SampleOnce();
  // Latest sample per device, in the order given to the constructor.
  std::vector<devices::DeviceSample> Latest() const;

 private:
  struct PerDevice;
  struct Families;
  void Run();
  void SampleLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // The vector is fixed at construction; the PerDevice contents are guarded
  // by mu_.
  std::vector<std::unique_ptr<PerDevice>> per_device_;
  std::unique_ptr<Families> families_;
  prometheus::Registry& registry_;
  std::chrono::milliseconds interval_;
  mutable absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace tokenmill::telemetry
