// Node: the composition root. Builds the node's parts from a NodeConfig in
// dependency order (store, devices, metrics, HTTP servers) and tears them
// down in reverse. Everything is passed into constructors; nothing global.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "config/node_config.h"
#include "daemon/api_access.h"
#include "daemon/control_api.h"
#include "daemon/encode_pool.h"
#include "daemon/http/http_server.h"
#include "daemon/ledger_api.h"
#include "daemon/models_api.h"
#include "daemon/node_state.h"
#include "daemon/openai_api.h"
#include "daemon/tenants_api.h"
#include "daemon/usage_api.h"
#include "devices/backend.h"
#include "devices/device.h"
#include "metering/cost_model.h"
#include "metering/metering.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"
#include "runtime/node/instance_manager.h"
#include "runtime/support/clock.h"
#include "runtime/tenants/tenant_registry.h"
#include "storage/meter_store.h"
#include "telemetry/metrics.h"
#include "telemetry/runtime_metrics.h"

namespace tokenmill::daemon {

// What the command line adds to the config for one start.
struct NodeStartOptions {
  // tokenmilld --accept-store-loss: open a store whose write-ahead log lost
  // acknowledged writes with what is left, and record the loss (log,
  // tokenmill_store_accepted_losses_total, /control/v1/node "store").
  bool accept_store_loss = false;
};

class Node {
 public:
  // Opens the store, discovers devices, starts metrics and the API servers.
  // On error nothing is left running (and the store is closed). A store that
  // lost writes is kDataLoss naming the file and offset, unless accepted.
  static absl::StatusOr<std::unique_ptr<Node>> Start(config::NodeConfig config,
                                                     NodeStartOptions options = {});
  ~Node();  // Stop()s

  // Applies a re-read config: reloadable settings take effect; the others are
  // listed in NodeState::restart_pending() and logged.
  void Reload(config::NodeConfig next);

  // Stops admitting work, lets running requests finish (up to
  // `drain_timeout`, then cancels them), closes the servers, flushes and
  // closes the store. Idempotent.
  void Stop(std::chrono::milliseconds drain_timeout = std::chrono::seconds(30));

  // Posts a no-op onto the HTTP loop and reports whether the previous one ran
  // within max_age: the watchdog pings systemd only while the loop answers.
  bool LoopResponsive(std::chrono::milliseconds max_age);

  NodeState& state() { return *state_; }

 private:
  Node() = default;
  // Sends a request to the API that owns its path (loop thread).
  void Route(http::HttpRequest request, http::ResponseWriterPtr response);
  // What the runtime families show at scrape time.
  telemetry::RuntimeSnapshot Snapshot() const;
  // The "capacity" object of /control/v1/node, for a scheduler (loop thread).
  nlohmann::json CapacityJson() const;
  // The "store" object of /control/v1/node: writability and accepted losses.
  nlohmann::json StoreJson() const;
  // A model loaded, failed or unloaded (any thread): logged and stored by the
  // models API; an unloaded model's metric series go.
  void OnInstanceEvent(const runtime::InstanceEvent& event);

  // What the instances and metering read time from (declared first: it
  // outlives everything that holds it).
  runtime::SteadyClock clock_;
  std::unique_ptr<NodeState> state_;
  storage::MeterStorePtr store_;
  // Outlives the devices and the instance manager, which use its backends.
  std::unique_ptr<devices::BackendRegistry> backends_;
  std::vector<devices::DevicePtr> devices_;
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>* store_errors_ = nullptr;
  std::shared_ptr<prometheus::Collectable> store_collector_;
  // Losses accepted on this data dir (persistent, so the counter never goes back).
  std::vector<storage::StoreLoss> store_losses_;
  std::shared_ptr<prometheus::Collectable> state_collector_;
  std::shared_ptr<prometheus::Collectable> process_collector_;
  std::unique_ptr<telemetry::DeviceSampler> sampler_;
  std::unique_ptr<telemetry::MetricsServer> metrics_server_;
  std::unique_ptr<tenants::TenantRegistry> tenants_;
  // Metering outlives the instances whose observers point into it.
  std::unique_ptr<metering::CostLedger> cost_ledger_;
  std::unique_ptr<telemetry::RuntimeMetrics> runtime_metrics_;
  std::unique_ptr<metering::Metering> metering_;
  // Hands the tenants' prices to metering_ (at start, on every tenant change).
  void PushTenantPrices();
  absl::Mutex tenant_prices_mu_;
  std::unique_ptr<runtime::InstanceManager> instances_;
  std::unique_ptr<ApiAccess> access_;  // who reaches which API, per listener
  // Prepares data requests off the loop; its jobs hold instances, so it is
  // stopped (and destroyed) before them.
  std::unique_ptr<EncodePool> encode_pool_;
  std::unique_ptr<ControlApi> control_api_;
  std::unique_ptr<ModelsApi> models_api_;
  std::unique_ptr<TenantsApi> tenants_api_;
  std::unique_ptr<OpenAiApi> openai_api_;
  std::unique_ptr<UsageApi> usage_api_;
  std::unique_ptr<LedgerApi> ledger_api_;  // reads the store: closed before it
  std::unique_ptr<http::HttpServer> http_server_;
  std::atomic<int64_t> heartbeat_posted_ns_{0};
  std::atomic<int64_t> heartbeat_ran_ns_{0};
  bool stopped_ = false;
};

}  // namespace tokenmill::daemon
