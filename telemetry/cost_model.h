// CostModel: what a second of a device and a joule cost on this node, split
// from the config's all-in node cost, and how a step's cost is shared among
// its sequences. CostLedger: the per-device accounting that makes attributed
// cost plus idle cost equal the node's cost over any interval.
//
// Money is integer nano-units of the configured currency everywhere, so sums
// are exact; rounding happens once per step and the split of a step hands
// out every nano-unit (largest remainder).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace tokenmill::telemetry {

// The config's [cost] section and the devices' shares, as plain values.
struct CostInputs {
  std::string currency = "USD";
  double capex = 0.0;               // purchase price of the node
  double depreciation_years = 4.0;  // straight line, > 0
  double power_usd_per_kwh = 0.0;
  double pue = 1.0;  // >= 1
  double network_usd_per_hour = 0.0;
  double debt_service_usd_per_hour = 0.0;
  double other_usd_per_hour = 0.0;
  double prefill_token_weight = 1.0;  // a prompt token's share vs a generated one, > 0
  struct Device {
    std::string id;            // "cpu", "cuda:0"
    double cost_weight = 1.0;  // share of the fixed cost, >= 0 (all 0: equal shares)
    std::optional<double> watts;  // configured power when none can be measured
  };
  std::vector<Device> devices;
};

// Fixed cost per second by component, node-wide (before the device split).
struct NodeCostRates {
  double capex_per_s = 0.0;
  double network_per_s = 0.0;
  double debt_per_s = 0.0;
  double other_per_s = 0.0;
  double energy_per_joule = 0.0;  // power price x PUE / 3.6e6
  double fixed_per_s() const { return capex_per_s + network_per_s + debt_per_s + other_per_s; }
};

// A sequence's weight in a step's split.
struct TokenShare {
  int64_t prompt_tokens = 0;     // prompt + recomputed tokens of the step
  int64_t generated_tokens = 0;
};

class CostModel {
 public:
  // kInvalidArgument naming the bad field.
  static absl::StatusOr<std::shared_ptr<const CostModel>> Create(CostInputs inputs);

  const CostInputs& inputs() const { return inputs_; }
  const NodeCostRates& rates() const { return rates_; }
  // The device's share of the fixed cost, per second (0 for unknown devices).
  double DeviceFixedPerSecond(const std::string& device) const;

  // Cost of `device_time` of exclusive device use plus `energy_joules`, in
  // nano-units, rounded once.
  int64_t StepCostNano(const std::string& device, std::chrono::nanoseconds device_time,
                       double energy_joules) const;
  // Splits `total_nano` over the shares by weighted tokens (prompt tokens x
  // prefill_token_weight + generated tokens); the parts add up to total_nano
  // exactly. All-zero shares split equally.
  std::vector<int64_t> Split(int64_t total_nano, std::span<const TokenShare> shares) const;
  // Revenue in nano-units for tokens at per-million prices.
  static int64_t RevenueNano(int64_t prompt_tokens, int64_t generated_tokens,
                             double price_input_per_mtok, double price_output_per_mtok);

 private:
  explicit CostModel(CostInputs inputs);
  CostInputs inputs_;
  NodeCostRates rates_;
  std::map<std::string, double> device_fixed_per_s_;
};

using CostModelPtr = std::shared_ptr<const CostModel>;

// Totals of one device, in nano-units and seconds, since the ledger started.
struct DeviceCostTotals {
  int64_t attributed_nano = 0;  // priced into steps
  int64_t idle_nano = 0;        // time and energy no step used
  int64_t node_nano = 0;        // attributed + idle: the device's share of the node's cost
  double busy_seconds = 0.0;
  double wall_seconds = 0.0;
  double energy_joules = 0.0;   // all measured (or configured) energy
  double step_energy_joules = 0.0;
  // The node cost by component: capex, network, debt, other, energy.
  std::map<std::string, int64_t> by_component_nano;
};

// Per-device cost accounting. Steps add attributed cost as they run; Tick()
// (called by the device sampler, and before any read) closes the interval
// since the last tick: its wall time x the device's fixed rate plus its
// energy is the device's node cost; whatever of it steps did not take is idle
// cost. Each interval is priced with the CostModel current at its end, so a
// SIGHUP changes prices from then on, never for time already closed.
// Thread-safe.
class CostLedger {
 public:
  CostLedger(CostModelPtr model, std::chrono::steady_clock::time_point start);

  // Replaces the model from now on (SIGHUP); closes the open interval first
  // with the old one.
  void SetModel(CostModelPtr model, std::chrono::steady_clock::time_point now);
  CostModelPtr model() const;

  // Prices one step on `device` (device time + the energy it used, from the
  // device's power now) and records it; returns its cost in nano-units.
  int64_t RecordStep(const std::string& device, std::chrono::nanoseconds device_time,
                     double step_energy_joules);

  // Closes the interval up to `now` for every device: `energy_joules` maps a
  // device to the energy it used since the previous tick (measured or
  // configured watts x time).
  void Tick(std::chrono::steady_clock::time_point now,
            const std::map<std::string, double>& energy_joules);

  std::map<std::string, DeviceCostTotals> Totals() const;

 private:
  mutable absl::Mutex mu_;
  CostModelPtr model_ ABSL_GUARDED_BY(mu_);
  std::chrono::steady_clock::time_point last_tick_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, DeviceCostTotals> totals_ ABSL_GUARDED_BY(mu_);
  // Steps priced since the last tick, per device (attributed, not yet closed).
  std::map<std::string, int64_t> open_attributed_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, double> open_busy_s_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, double> open_step_energy_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tokenmill::telemetry
