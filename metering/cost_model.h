// CostModel: what a second of a device and a joule cost on this node, split
// from the config's all-in node cost, and how a step's cost is shared among
// its sequences. CostLedger: the per-device accounting that makes attributed
// cost plus idle cost equal the node's cost over any interval.
//
// Money is integer nano-units of the configured currency everywhere, so sums
// are exact; rounding happens once per step and the split of a step hands
// out every nano-unit (largest remainder). Revenue is computed in integer
// pico-units first (prices are quantized to whole pico-units per token), so a
// request's revenue is exactly additive over its steps (see RequestRevenue).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace tokenmill::metering {

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
    std::string id;               // "cpu", "cuda:0"
    double cost_weight = 1.0;     // share of the fixed cost, >= 0 (all 0: equal shares)
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

// Names of the node cost components, as DeviceCostTotals::by_component_nano
// keys and the `component` label of tokenmill_node_cost_usd_total.
inline constexpr std::string_view kCostComponents[] = {"capex", "network", "debt", "other",
                                                       "energy"};

// A sequence's weight in a step's split.
struct TokenShare {
  int64_t prompt_tokens = 0;  // prompt + recomputed tokens of the step
  int64_t generated_tokens = 0;
};

// Working memory of CostModel::SplitInto, kept by its caller across steps so
// that a split allocates nothing once the buffers have grown to the batch.
struct SplitScratch {
  std::vector<double> weights;
  std::vector<long double> fractions;
  std::vector<size_t> order;
};

// Immutable once created; share it (CostModelPtr) across threads freely.
class CostModel {
 public:
  // kInvalidArgument naming the bad field ("cost.pue", "device[cuda:0].cost_weight"):
  // depreciation_years > 0, pue >= 1, prices >= 0, cost weights >= 0,
  // prefill_token_weight > 0, every value finite, at least one device, device
  // ids non-empty and unique.
  static absl::StatusOr<std::shared_ptr<const CostModel>> Create(CostInputs inputs);

  const CostInputs& inputs() const { return inputs_; }
  const NodeCostRates& rates() const { return rates_; }
  // The device's share of the fixed cost, per second (0 for unknown devices).
  double DeviceFixedPerSecond(const std::string& device) const;

  // Cost of `device_time` of exclusive device use plus `energy_joules`, in
  // nano-units, rounded once: round((s x DeviceFixedPerSecond + J x
  // energy_per_joule) x 1e9). Negative or NaN inputs count as 0.
  int64_t StepCostNano(const std::string& device, std::chrono::nanoseconds device_time,
                       double energy_joules) const;
  // Splits `total_nano` over the shares by weighted tokens (prompt tokens x
  // prefill_token_weight + generated tokens); the parts add up to total_nano
  // exactly (largest remainder: each part is its exact quota rounded down or
  // up; shares of weight 0 get 0). All-zero shares split equally.
  std::vector<int64_t> Split(int64_t total_nano, std::span<const TokenShare> shares) const;
  // Split into `parts` (resized to shares.size()) with the caller's scratch:
  // the same parts, and no allocation once `parts` and `scratch` have held a
  // batch this large (the engine thread's step path).
  void SplitInto(int64_t total_nano, std::span<const TokenShare> shares,
                 std::vector<int64_t>& parts, SplitScratch& scratch) const;

  // A per-million-token price as whole pico-units per token (price x 1e6,
  // rounded): prices are exact to 1e-6 of the currency per million tokens.
  static int64_t PricePicoPerToken(double price_per_mtok);
  // Revenue in pico-units; exact, so it adds up over steps. Saturates at
  // INT64_MAX instead of overflowing.
  static int64_t RevenuePico(int64_t prompt_tokens, int64_t generated_tokens,
                             double price_input_per_mtok, double price_output_per_mtok);
  // Revenue in nano-units for tokens at per-million prices: RevenuePico / 1000
  // rounded half up. Summing it over a request's steps differs from the
  // revenue of the request's totals by at most 1/2 nano-unit per step; use
  // RequestRevenue where the two must agree exactly.
  static int64_t RevenueNano(int64_t prompt_tokens, int64_t generated_tokens,
                             double price_input_per_mtok, double price_output_per_mtok);

 private:
  explicit CostModel(CostInputs inputs);
  CostInputs inputs_;
  NodeCostRates rates_;
  std::map<std::string, double> device_fixed_per_s_;
};

using CostModelPtr = std::shared_ptr<const CostModel>;

// A request's revenue, step by step: AddStep returns the step's revenue in
// nano-units such that the sum over every step so far equals RevenueNano of
// the request's token totals exactly (it carries the sub-nano remainder
// instead of rounding each step on its own). Prices may differ per step (a
// SIGHUP); the sum is then the rounded sum of each step's exact pico revenue.
// Not thread-safe: one per request, on its engine thread.
class RequestRevenue {
 public:
  int64_t AddStep(int64_t prompt_tokens, int64_t generated_tokens, double price_input_per_mtok,
                  double price_output_per_mtok);
  int64_t total_pico() const { return total_pico_; }
  int64_t total_nano() const { return total_nano_; }

 private:
  int64_t total_pico_ = 0;
  int64_t total_nano_ = 0;  // RevenueNano of total_pico_: what AddStep handed out
};

// Totals of one device, in nano-units and seconds, since the ledger started.
struct DeviceCostTotals {
  int64_t attributed_nano = 0;  // priced into steps
  int64_t idle_nano = 0;        // time and energy no step used
  int64_t node_nano = 0;        // attributed + idle: the device's share of the node's cost
  double busy_seconds = 0.0;
  double wall_seconds = 0.0;
  double energy_joules = 0.0;       // all measured (or configured) energy
  double step_energy_joules = 0.0;  // the part of it steps were priced with
  // The node cost by component (kCostComponents: capex, network, debt, other,
  // energy; every key present); adds up to node_nano exactly.
  std::map<std::string, int64_t> by_component_nano;
};

// One step priced by CostLedger::PriceStep, not yet recorded.
struct PricedStep {
  std::string device;
  int64_t cost_nano = 0;
  double busy_seconds = 0.0;
  double energy_joules = 0.0;  // the step's estimate (finite, >= 0)
};

// Per-device cost accounting. Steps add attributed cost once their usage is
// committed; Tick() (called by Metering's ticker, on SIGHUP and before any
// read) closes the interval
// since the last tick: its wall time x the device's fixed rate plus its
// energy is the device's node cost; whatever of it steps did not take is idle
// cost. Each interval is priced with the CostModel current at its end, so a
// SIGHUP changes prices from then on, never for time already closed.
//
// Per device and interval: node = round(wall x fixed rate) + round(energy x
// energy price), attributed = the sum of the interval's step costs, idle =
// node - attributed, so node == attributed + idle holds exactly, in every
// interval and in the totals. Idle may come out slightly negative when the
// steps' energy estimate exceeded the measured energy (or their device time
// the wall time); it is kept signed rather than clamped so that the identity
// holds. Devices appear in Totals() from the start (the model's devices) or
// from the first tick that saw a step or energy on them (others: their fixed
// rate is 0).
// Thread-safe.
class CostLedger {
 public:
  // `model` must not be null.
  CostLedger(CostModelPtr model, std::chrono::steady_clock::time_point start);

  // Replaces the model from now on (SIGHUP); closes the open interval first
  // with the old one, pricing `energy_joules` (as for Tick) in it. Energy not
  // passed here arrives with the next Tick and is priced with the new model;
  // a caller that ticks right before SetModel loses nothing.
  void SetModel(CostModelPtr model, std::chrono::steady_clock::time_point now,
                const std::map<std::string, double>& energy_joules = {});
  CostModelPtr model() const;

  // Prices one step on `device` (device time + the energy it used, from the
  // device's power now) with the model in force; records nothing.
  PricedStep PriceStep(const std::string& device, std::chrono::nanoseconds device_time,
                       double step_energy_joules) const;
  // Records a priced step as attributed cost of the open interval. Called
  // only once the step's usage is committed to the store, so that what the
  // ledger attributes always equals what the store's usage counters hold.
  void CommitStep(const PricedStep& step);

  // Closes the interval up to `now` for every device: `energy_joules` maps a
  // device to the energy it used since the previous tick (measured or
  // configured watts x time).
  // A `now` before the last tick closes an empty interval (wall time 0).
  void Tick(std::chrono::steady_clock::time_point now,
            const std::map<std::string, double>& energy_joules);

  // Totals as of the last tick (or SetModel); call Tick first for fresh ones.
  std::map<std::string, DeviceCostTotals> Totals() const;

 private:
  void CloseInterval(std::chrono::steady_clock::time_point now,
                     const std::map<std::string, double>& energy_joules)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  CostModelPtr model_ ABSL_GUARDED_BY(mu_);
  std::chrono::steady_clock::time_point last_tick_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, DeviceCostTotals> totals_ ABSL_GUARDED_BY(mu_);
  // Steps priced since the last tick, per device (attributed, not yet closed).
  std::map<std::string, int64_t> open_attributed_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, double> open_busy_s_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, double> open_step_energy_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tokenmill::metering
