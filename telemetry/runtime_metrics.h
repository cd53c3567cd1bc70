// RuntimeMetrics: the Prometheus families of serving and metering (names,
// types and labels as in DESIGN.md's metric table). Engine threads and the
// HTTP loop update them through these calls; gauges that describe state
// (requests running/waiting, KV blocks, prefix cache, node and idle cost) are
// read at scrape time from a snapshot source. Thread-safe.
//
// Label cardinality is bounded by the config: tenants x models x devices
// series for the token, cost and histogram families (x3 kinds, x4 outcomes,
// x5 batch regimes where those labels apply; each histogram series is its
// buckets + 2). A node with 20 tenants, 4 models and 8 devices exports at
// most 20 x 4 x 8 x 3 = 1920 token series; series appear on first use, so
// pairs that never meet cost nothing, and the series of an unloaded model or
// a removed tenant are removed. Tenant and model names come from the config
// and the control API, never from requests.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "prometheus/collectable.h"
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
    // Monotonic over the instance's life (the vLLM-compatible token counters).
    uint64_t prompt_tokens = 0;  // computed and served from the prefix cache
    uint64_t generated_tokens = 0;
    // KV bytes its live sequences reference, and the most it could hold now:
    // the arena pages it holds plus the device arena's free pages.
    uint64_t kv_used_bytes = 0;
    uint64_t kv_capacity_bytes = 0;
  };
  struct DeviceKv {
    std::string device;
    uint64_t used = 0;    // blocks referenced, all instances
    uint64_t free = 0;    // blocks held empty + unused arena pages in blocks
    uint64_t cached = 0;  // unreferenced blocks kept for the prefix cache
    // The same in bytes, one unit for every model on the device: used and
    // cached as above, total the arena's capacity now (free = the rest).
    uint64_t used_bytes = 0;
    uint64_t cached_bytes = 0;
    uint64_t total_bytes = 0;
  };
  // Every model instance the node knows, whatever its state.
  struct ModelState {
    std::string model;
    std::string device;
    std::string state;  // loading | ready | draining | failed
  };
  // Node-wide totals; unset: the node families are not exported.
  struct NodeTotals {
    uint32_t running = 0;
    uint32_t waiting = 0;
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
  std::vector<ModelState> model_states;
  std::optional<NodeTotals> node;
};

// Which metric names the scrape-time families are exported under.
enum class MetricNames {
  kTokenmill,  // tokenmill_* only
  // tokenmill_* and vLLM's names for the same figures (vllm:num_requests_running,
  // vllm:num_requests_waiting, vllm:kv_cache_usage_perc, vllm:gpu_cache_usage_perc,
  // vllm:prompt_tokens_total, vllm:generation_tokens_total,
  // vllm:prefix_cache_queries_total, vllm:prefix_cache_hits_total; label
  // model_name), for dashboards, autoscalers and routers made for vLLM.
  kTokenmillAndVllm,
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
  // Registers the families in `registry`, which must outlive this object.
  // `snapshot` is called at scrape time (from the exposer's thread) by
  // snapshot_collectable(); it must be quick and thread-safe. It may be empty
  // (no snapshot families).
  // `names` picks the names of the scrape-time families.
  RuntimeMetrics(prometheus::Registry& registry, std::function<RuntimeSnapshot()> snapshot,
                 MetricNames names = MetricNames::kTokenmill);
  ~RuntimeMetrics();

  RuntimeMetrics(const RuntimeMetrics&) = delete;
  RuntimeMetrics& operator=(const RuntimeMetrics&) = delete;

  // The scrape-time families built from `snapshot`: tokenmill_requests,
  // tokenmill_node_requests, tokenmill_kv_blocks, tokenmill_kv_cache_bytes,
  // tokenmill_kv_cache_usage_ratio (per device, and per device and model),
  // tokenmill_node_kv_cache_usage_ratio, tokenmill_kv_tenant_blocks,
  // tokenmill_model_state, tokenmill_prefix_cache_{queries,hits}_total,
  // tokenmill_idle_cost_usd_total, tokenmill_node_cost_usd_total (and the
  // vLLM names, see MetricNames). A prometheus::Registry cannot hold a custom collectable, so
  // the daemon registers this one with MetricsServer::Register next to the
  // registry. It calls `snapshot`, so it must not be collected after the
  // snapshot's sources are gone; MetricsServer keeps only a weak reference,
  // and destroying this RuntimeMetrics releases it.
  std::shared_ptr<prometheus::Collectable> snapshot_collectable() const;

  // One step: tokens_total by kind, cost_usd_total, revenue_usd_total, regime
  // families, step_duration and batch_size histograms. Per tenant amounts are
  // given per (tenant) for this step. step_cost_usd and step_tokens feed the
  // regime families (the step's batch regime from batch_size). Cheap: a map
  // lookup per (model, device) and per tenant under a mutex, no registry
  // lookup after a label set's first use. Any thread.
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
  // requests_total{outcome} and the four request histograms (those set).
  void ObserveRequest(const RequestObservation& request);
  // preemptions_total{model,tenant} += 1.
  void ObservePreemption(const std::string& model, const std::string& tenant);

  // Forgets every series labelled with this model (model="ID") or tenant
  // (tenant="NAME"), so that an unloaded model or a deleted tenant leaves
  // nothing behind in /metrics; a later use starts them again from 0. Call
  // once no step or request of it can still be observed. Any thread.
  void RemoveModel(const std::string& model);
  void RemoveTenant(const std::string& tenant);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tokenmill::telemetry
