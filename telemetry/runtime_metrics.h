// RuntimeMetrics: the Prometheus families of serving and metering (names,
// types and labels as in DESIGN.md's metric table). Engine threads and the
// HTTP loop update them through these calls; gauges that describe state
// (requests running/waiting, KV blocks, prefix cache, node and idle cost) are
// read at scrape time from a snapshot source. Thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "prometheus/registry.h"

namespace tokenmill::telemetry {

// "1", "2-4", "5-16", "17-64", "65+".
std::string BatchRegime(int32_t batch_size);

// State read at scrape time.
struct RuntimeSnapshot {
  struct Model {
    std::string model;
    std::string device;
    uint32_t running = 0;
    uint32_t waiting = 0;
    uint64_t prefix_query_tokens = 0;  // monotonic
    uint64_t prefix_hit_tokens = 0;    // monotonic
  };
  struct DeviceKv {
    std::string device;
    uint64_t used = 0;    // blocks referenced, all instances
    uint64_t free = 0;    // blocks held empty + unused arena pages in blocks
    uint64_t cached = 0;  // unreferenced blocks kept for the prefix cache
  };
  struct TenantKv {
    std::string tenant;
    std::string device;
    uint64_t blocks = 0;
  };
  struct DeviceCost {
    std::string device;
    double idle_usd = 0.0;                           // monotonic
    std::map<std::string, double> by_component_usd;  // capex/energy/network/debt/other, monotonic
  };
  std::vector<Model> models;
  std::vector<DeviceKv> kv;
  std::vector<TenantKv> tenant_kv;
  std::vector<DeviceCost> costs;
};

// One request's end, for the counters and histograms.
struct RequestObservation {
  std::string tenant;
  std::string model;
  std::string outcome;  // ok | cancelled | error | rejected
  std::optional<double> queue_seconds;
  std::optional<double> ttft_seconds;
  std::optional<double> tpot_seconds;  // mean time per output token after the first
  std::optional<double> e2e_seconds;
};

class RuntimeMetrics {
 public:
  // Registers the families in `registry`. `snapshot` is called at scrape time
  // (from the exposer's thread); it must be quick and thread-safe.
  RuntimeMetrics(prometheus::Registry& registry, std::function<RuntimeSnapshot()> snapshot);
  ~RuntimeMetrics();

  // One step: tokens_total by kind, cost_usd_total, revenue_usd_total, regime
  // families, step_duration and batch_size histograms. Per tenant amounts are
  // given per (tenant) for this step.
  struct TenantStep {
    std::string tenant;
    int64_t prompt_tokens = 0;
    int64_t cached_tokens = 0;
    int64_t generated_tokens = 0;
    double cost_usd = 0.0;
    double revenue_usd = 0.0;
  };
  void ObserveStep(const std::string& model, const std::string& device, int32_t batch_size,
                   double step_seconds, double step_cost_usd, int64_t step_tokens,
                   const std::vector<TenantStep>& tenants);
  void ObserveRequest(const RequestObservation& request);
  void ObservePreemption(const std::string& model, const std::string& tenant);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tokenmill::telemetry
