// Metering: prices what the model instances report and records it. For every
// step it takes the step's cost from the CostLedger, splits it over the
// step's sequences by tokens, adds revenue at the tenant's (else the model's)
// prices, writes usage and per-request progress to the store in one batch
// and feeds the Prometheus families; for every finished request it writes
// the ledger record. All of it on the engine thread, before tokens are sent.
// Prices are values pushed in (SetModelPrices, SetTenantPrices); the step
// path reads a snapshot of them and, once its buffers have grown to the
// batch, allocates nothing per sequence.
// A ticker closes the cost ledger's intervals with the devices' energy.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "metering/cost_model.h"
#include "metering/prices.h"
#include "metering/step_committer.h"
#include "nlohmann/json.hpp"
#include "runtime/instance/usage_observer.h"
#include "runtime/support/clock.h"
#include "storage/meter_sink.h"
#include "telemetry/runtime_metrics.h"

namespace tokenmill::metering {

// Where Metering reads what changes under it. All callbacks thread-safe.
struct MeteringSources {
  // Current power of a device in watts (measured, else configured), for the
  // energy of a step; nullopt when unknown (the step's energy counts as 0).
  std::function<std::optional<double>(const std::string& device)> watts;
  // Energy counters of every device (joules, monotonic), for the ticker.
  std::function<std::map<std::string, double>()> energy_joules;
};

struct MeteringOptions {
  // Steps of every instance go through one writer thread that commits them
  // in groups (StepCommitter): for durability = "power", where each commit
  // is an fsync. Off: each engine thread writes its own step.
  bool group_commit = false;
};

class Metering {
 public:
  // `store`, `ledger`, `metrics` (may be null) and `clock` outlive it. The
  // ledger's intervals close at `clock`'s now (Tick, SetCostModel, CostJson);
  // give the ledger the same clock's start.
  Metering(storage::MeterSink& store, CostLedger& ledger, telemetry::RuntimeMetrics* metrics,
           const runtime::Clock& clock, MeteringSources sources, MeteringOptions options = {});
  ~Metering();  // stops the ticker and the writer thread; observers must be gone

  // The observer of one instance (give it to InstanceManagerOptions).
  runtime::UsageObserverPtr ObserverFor(const std::string& model, const std::string& device);

  // Model prices from the config (at start and on SIGHUP).
  void SetModelPrices(std::map<std::string, Prices> prices);
  // Every tenant's own prices (0: the model's), by tenant name: at start and
  // whenever a tenant is put, removed or replaced. Steps from the next one on
  // are priced with them.
  void SetTenantPrices(std::map<std::string, Prices> prices);
  // Prices in force for a tenant on a model: the tenant's when > 0, else the model's.
  Prices PricesFor(const std::string& tenant, const std::string& model) const;

  // At start-up: requests a crash left in flight get their ledger record
  // (outcome "interrupted") from their recorded progress. Returns how many.
  absl::StatusOr<size_t> RecoverInterrupted();

  // Starts / stops the ledger ticker (closes intervals every `period`, and
  // writes the ledger records a full disk held back once the store writes
  // again; StopTicker writes them a last time).
  void StartTicker(std::chrono::milliseconds period);
  void StopTicker();
  // Closes the ledger interval up to now (the ticker does it periodically).
  // Thread-safe: ticks from the ticker, SIGHUP and readers run one at a time.
  void Tick();
  // Closes the interval with the old cost model (and the energy measured up
  // to now), then prices from now on with `model` (SIGHUP).
  void SetCostModel(CostModelPtr model);

  // Node cost, attributed and idle cost per device and in total (nano-units
  // since the daemon started), after closing the interval up to now; for
  // GET /control/v1/cost.
  nlohmann::json CostJson();

  // Steps waiting for the writer thread (0 without group_commit); tests.
  size_t queued_steps() const { return committer_ ? committer_->queued() : 0; }

 private:
  friend class InstanceMeter;
  // A request end the store refused (unwritable): retried by the ticker once
  // the store writes again.
  struct PendingFinish {
    std::string request_id;
    std::string record;
    std::vector<storage::UsageDelta> usage;
  };
  static constexpr size_t kMaxPendingFinishes = 100000;
  void RetryFinishLater(PendingFinish finish);
  void RetryPendingFinishes();
  // The prices in force (a snapshot; replaced, never changed in place).
  std::shared_ptr<const PriceTable> prices() const;

  // Writes a step: through the writer thread when there is one.
  absl::Status CommitStep(const storage::StepRecord& step);

  storage::MeterSink& store_;
  std::unique_ptr<StepCommitter> committer_;  // group_commit only
  CostLedger& ledger_;
  telemetry::RuntimeMetrics* metrics_;
  const runtime::Clock& clock_;
  MeteringSources sources_;

  mutable absl::Mutex prices_mu_;
  std::map<std::string, Prices> model_prices_ ABSL_GUARDED_BY(prices_mu_);
  std::map<std::string, Prices> tenant_prices_ ABSL_GUARDED_BY(prices_mu_);
  std::shared_ptr<const PriceTable> price_table_ ABSL_GUARDED_BY(prices_mu_);

  // Energy each device used since the previous call (none on the first).
  std::map<std::string, double> EnergySinceLastTick() ABSL_EXCLUSIVE_LOCKS_REQUIRED(tick_mu_);

  absl::Mutex tick_mu_;
  std::map<std::string, double> last_energy_ ABSL_GUARDED_BY(tick_mu_);
  bool energy_seen_ ABSL_GUARDED_BY(tick_mu_) = false;

  absl::Mutex pending_mu_;
  std::vector<PendingFinish> pending_finishes_ ABSL_GUARDED_BY(pending_mu_);

  absl::Mutex ticker_mu_;
  bool ticker_stop_ ABSL_GUARDED_BY(ticker_mu_) = false;
  std::thread ticker_;
};

// The ledger record of a request (JSON): identity, token counts, money in
// nano-units, times and outcome. The store's recovery reads the counters
// back from the same field names.
nlohmann::json LedgerRecordJson(const runtime::RequestRecord& record,
                                const storage::UsageCounters& totals);

}  // namespace tokenmill::metering
