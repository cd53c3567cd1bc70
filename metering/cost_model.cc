#include "metering/cost_model.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <set>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace tokenmill::metering {
namespace {

constexpr double kSecondsPerYear = 365.25 * 86400.0;
constexpr double kJoulesPerKwh = 3.6e6;
constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();

// Rounds to nearest; negative and NaN values are 0 (money here is never
// negative) and huge ones saturate.
int64_t RoundNonNegative(double value) {
  if (!(value > 0.0)) return 0;
  // 2^63 is exactly representable; anything at or above it would overflow.
  if (value >= 9223372036854775808.0) return kInt64Max;
  return std::llround(value);
}

// An amount of currency as nano-units.
int64_t RoundNano(double amount) { return RoundNonNegative(amount * 1e9); }

int64_t SaturatingAdd(int64_t a, int64_t b) {
  int64_t sum = 0;
  return __builtin_add_overflow(a, b, &sum) ? kInt64Max : sum;
}

// Pico-units to nano-units, rounded half up; `pico` >= 0.
int64_t PicoToNano(int64_t pico) { return pico / 1000 + (pico % 1000 >= 500 ? 1 : 0); }

// Splits `total` into parts proportional to `weights` (>= 0) by largest
// remainder: every part is its exact quota rounded down, and the nano-units
// the rounding left over go one each to the largest fractional parts (ties:
// larger weight, then earlier). The parts add up to `total` exactly. All-zero
// (or unusable) weights split equally. `parts` is resized to the weights;
// `fraction` and `order` are scratch, so nothing is allocated once they have
// grown (std::sort with the index as last key: stable_sort's order, without
// its temporary buffer). `weights` is modified (unusable values become 0).
void Apportion(int64_t total, std::span<double> w, std::vector<int64_t>& parts,
               std::vector<long double>& fraction, std::vector<size_t>& order) {
  const size_t n = w.size();
  parts.assign(n, 0);
  if (n == 0 || total == 0) return;
  if (total < 0) {
    // Costs are not negative, but a negative total splits as its mirror image.
    Apportion(total == std::numeric_limits<int64_t>::min() ? kInt64Max : -total, w, parts, fraction,
              order);
    for (int64_t& p : parts) p = -p;
    return;
  }
  for (double& x : w) x = std::isfinite(x) && x > 0.0 ? x : 0.0;
  long double sum = 0;
  for (double x : w) sum += x;
  if (!(sum > 0) || !std::isfinite(static_cast<double>(sum))) {
    std::fill(w.begin(), w.end(), 1.0);
    sum = static_cast<long double>(n);
  }

  fraction.assign(n, 0);
  int64_t assigned = 0;
  for (size_t i = 0; i < n; ++i) {
    const long double quota = static_cast<long double>(total) * w[i] / sum;
    const long double whole = std::floor(quota);
    parts[i] = std::clamp<int64_t>(static_cast<int64_t>(whole), 0, total);
    fraction[i] = quota - static_cast<long double>(parts[i]);
    assigned += parts[i];
  }
  order.resize(n);
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (fraction[a] != fraction[b]) return fraction[a] > fraction[b];
    if (w[a] != w[b]) return w[a] > w[b];
    return a < b;
  });
  // In exact arithmetic 0 <= left < n; the loops also absorb a nano-unit of
  // floating-point error either way without breaking the sum.
  int64_t left = total - assigned;
  for (size_t k = 0; left > 0; ++k, --left) ++parts[order[k % n]];
  for (size_t k = 0; left < 0; ++k) {
    const size_t i = order[n - 1 - k % n];
    if (parts[i] > 0) {
      --parts[i];
      ++left;
    }
  }
}

std::vector<int64_t> Apportion(int64_t total, std::span<const double> weights) {
  std::vector<double> w(weights.begin(), weights.end());
  std::vector<int64_t> parts;
  std::vector<long double> fraction;
  std::vector<size_t> order;
  Apportion(total, w, parts, fraction, order);
  return parts;
}

bool Finite(double v) { return std::isfinite(v); }

absl::Status CheckInputs(const CostInputs& in) {
  auto bad = [](const std::string& field, const std::string& rule, double got) {
    return absl::InvalidArgumentError(absl::StrCat(field, " must be ", rule, ", got ", got));
  };
  if (!(Finite(in.depreciation_years) && in.depreciation_years > 0)) {
    return bad("cost.depreciation_years", "> 0", in.depreciation_years);
  }
  if (!(Finite(in.pue) && in.pue >= 1)) return bad("cost.pue", ">= 1", in.pue);
  const std::pair<const char*, double> prices[] = {
      {"cost.capex", in.capex},
      {"cost.power_usd_per_kwh", in.power_usd_per_kwh},
      {"cost.network_usd_per_hour", in.network_usd_per_hour},
      {"cost.debt_service_usd_per_hour", in.debt_service_usd_per_hour},
      {"cost.other_usd_per_hour", in.other_usd_per_hour},
  };
  for (const auto& [field, value] : prices) {
    if (!(Finite(value) && value >= 0)) return bad(field, ">= 0", value);
  }
  if (!(Finite(in.prefill_token_weight) && in.prefill_token_weight > 0)) {
    return bad("cost.prefill_token_weight", "> 0", in.prefill_token_weight);
  }
  if (in.devices.empty()) {
    return absl::InvalidArgumentError("devices: the cost model needs at least one device");
  }
  std::set<std::string> seen;
  for (const CostInputs::Device& d : in.devices) {
    if (d.id.empty()) return absl::InvalidArgumentError("device.id must not be empty");
    if (!seen.insert(d.id).second) {
      return absl::InvalidArgumentError(absl::StrCat("device[", d.id, "] is listed twice"));
    }
    if (!(Finite(d.cost_weight) && d.cost_weight >= 0)) {
      return bad(absl::StrCat("device[", d.id, "].cost_weight"), ">= 0", d.cost_weight);
    }
    if (d.watts && !(Finite(*d.watts) && *d.watts > 0)) {
      return bad(absl::StrCat("device[", d.id, "].watts"), "> 0", *d.watts);
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::shared_ptr<const CostModel>> CostModel::Create(CostInputs inputs) {
  if (absl::Status s = CheckInputs(inputs); !s.ok()) return s;
  return std::shared_ptr<const CostModel>(new CostModel(std::move(inputs)));
}

CostModel::CostModel(CostInputs inputs) : inputs_(std::move(inputs)) {
  rates_.capex_per_s = inputs_.capex / (inputs_.depreciation_years * kSecondsPerYear);
  rates_.network_per_s = inputs_.network_usd_per_hour / 3600.0;
  rates_.debt_per_s = inputs_.debt_service_usd_per_hour / 3600.0;
  rates_.other_per_s = inputs_.other_usd_per_hour / 3600.0;
  rates_.energy_per_joule = inputs_.power_usd_per_kwh * inputs_.pue / kJoulesPerKwh;

  double weight_sum = 0.0;
  for (const CostInputs::Device& d : inputs_.devices) weight_sum += d.cost_weight;
  const double fixed = rates_.fixed_per_s();
  for (const CostInputs::Device& d : inputs_.devices) {
    const double share = weight_sum > 0.0 ? d.cost_weight / weight_sum
                                          : 1.0 / static_cast<double>(inputs_.devices.size());
    device_fixed_per_s_[d.id] = fixed * share;
  }
}

double CostModel::DeviceFixedPerSecond(const std::string& device) const {
  const auto it = device_fixed_per_s_.find(device);
  return it == device_fixed_per_s_.end() ? 0.0 : it->second;
}

int64_t CostModel::StepCostNano(const std::string& device, std::chrono::nanoseconds device_time,
                                double energy_joules) const {
  const double seconds = std::max(0.0, std::chrono::duration<double>(device_time).count());
  const double joules = Finite(energy_joules) ? std::max(0.0, energy_joules) : 0.0;
  return RoundNano(seconds * DeviceFixedPerSecond(device) + joules * rates_.energy_per_joule);
}

std::vector<int64_t> CostModel::Split(int64_t total_nano,
                                      std::span<const TokenShare> shares) const {
  std::vector<int64_t> parts;
  SplitScratch scratch;
  SplitInto(total_nano, shares, parts, scratch);
  return parts;
}

void CostModel::SplitInto(int64_t total_nano, std::span<const TokenShare> shares,
                          std::vector<int64_t>& parts, SplitScratch& scratch) const {
  scratch.weights.clear();
  for (const TokenShare& s : shares) {
    scratch.weights.push_back(static_cast<double>(std::max<int64_t>(0, s.prompt_tokens)) *
                                  inputs_.prefill_token_weight +
                              static_cast<double>(std::max<int64_t>(0, s.generated_tokens)));
  }
  Apportion(total_nano, scratch.weights, parts, scratch.fractions, scratch.order);
}

int64_t CostModel::PricePicoPerToken(double price_per_mtok) {
  // Currency per 1e6 tokens x 1e12 pico-units per currency unit.
  return RoundNonNegative(price_per_mtok * 1e6);
}

int64_t CostModel::RevenuePico(int64_t prompt_tokens, int64_t generated_tokens,
                               double price_input_per_mtok, double price_output_per_mtok) {
  const __int128 in = static_cast<__int128>(std::max<int64_t>(0, prompt_tokens)) *
                      PricePicoPerToken(price_input_per_mtok);
  const __int128 out = static_cast<__int128>(std::max<int64_t>(0, generated_tokens)) *
                       PricePicoPerToken(price_output_per_mtok);
  const __int128 sum = in + out;
  return sum > kInt64Max ? kInt64Max : static_cast<int64_t>(sum);
}

int64_t CostModel::RevenueNano(int64_t prompt_tokens, int64_t generated_tokens,
                               double price_input_per_mtok, double price_output_per_mtok) {
  return PicoToNano(
      RevenuePico(prompt_tokens, generated_tokens, price_input_per_mtok, price_output_per_mtok));
}

int64_t RequestRevenue::AddStep(int64_t prompt_tokens, int64_t generated_tokens,
                                double price_input_per_mtok, double price_output_per_mtok) {
  total_pico_ = SaturatingAdd(
      total_pico_, CostModel::RevenuePico(prompt_tokens, generated_tokens, price_input_per_mtok,
                                          price_output_per_mtok));
  const int64_t total_nano = PicoToNano(total_pico_);
  const int64_t step_nano = total_nano - total_nano_;
  total_nano_ = total_nano;
  return step_nano;
}

namespace {

DeviceCostTotals EmptyTotals() {
  DeviceCostTotals t;
  for (std::string_view c : kCostComponents) t.by_component_nano[std::string(c)] = 0;
  return t;
}

}  // namespace

CostLedger::CostLedger(CostModelPtr model, std::chrono::steady_clock::time_point start)
    : model_(std::move(model)), last_tick_(start) {
  for (const CostInputs::Device& d : model_->inputs().devices) totals_[d.id] = EmptyTotals();
}

void CostLedger::SetModel(CostModelPtr model, std::chrono::steady_clock::time_point now,
                          const std::map<std::string, double>& energy_joules) {
  absl::MutexLock lock(&mu_);
  CloseInterval(now, energy_joules);
  model_ = std::move(model);
  for (const CostInputs::Device& d : model_->inputs().devices) {
    if (!totals_.contains(d.id)) totals_[d.id] = EmptyTotals();
  }
}

CostModelPtr CostLedger::model() const {
  absl::MutexLock lock(&mu_);
  return model_;
}

PricedStep CostLedger::PriceStep(const std::string& device, std::chrono::nanoseconds device_time,
                                 double step_energy_joules) const {
  PricedStep step;
  step.device = device;
  step.busy_seconds = std::max(0.0, std::chrono::duration<double>(device_time).count());
  step.energy_joules =
      Finite(step_energy_joules) && step_energy_joules > 0 ? step_energy_joules : 0.0;
  absl::MutexLock lock(&mu_);
  step.cost_nano = model_->StepCostNano(device, device_time, step_energy_joules);
  return step;
}

void CostLedger::CommitStep(const PricedStep& step) {
  absl::MutexLock lock(&mu_);
  open_attributed_[step.device] += step.cost_nano;
  open_busy_s_[step.device] += step.busy_seconds;
  if (step.energy_joules > 0) open_step_energy_[step.device] += step.energy_joules;
}

void CostLedger::Tick(std::chrono::steady_clock::time_point now,
                      const std::map<std::string, double>& energy_joules) {
  absl::MutexLock lock(&mu_);
  CloseInterval(now, energy_joules);
}

void CostLedger::CloseInterval(std::chrono::steady_clock::time_point now,
                               const std::map<std::string, double>& energy_joules) {
  const double wall_s =
      now > last_tick_ ? std::chrono::duration<double>(now - last_tick_).count() : 0.0;
  last_tick_ = std::max(last_tick_, now);

  std::set<std::string> devices;
  for (const auto& [d, _] : totals_) devices.insert(d);
  for (const auto& [d, _] : open_attributed_) devices.insert(d);
  for (const auto& [d, _] : energy_joules) devices.insert(d);

  const NodeCostRates& rates = model_->rates();
  const double component_rates[] = {rates.capex_per_s, rates.network_per_s, rates.debt_per_s,
                                    rates.other_per_s};
  for (const std::string& device : devices) {
    auto [it, inserted] = totals_.try_emplace(device);
    DeviceCostTotals& t = it->second;
    if (inserted) t = EmptyTotals();

    const int64_t fixed_nano = RoundNano(wall_s * model_->DeviceFixedPerSecond(device));
    const std::vector<int64_t> fixed_parts = Apportion(fixed_nano, component_rates);
    const auto energy = energy_joules.find(device);
    const double joules = energy != energy_joules.end() && Finite(energy->second)
                              ? std::max(0.0, energy->second)
                              : 0.0;
    const int64_t energy_nano = RoundNano(joules * rates.energy_per_joule);
    const int64_t node_nano = fixed_nano + energy_nano;
    const auto attributed = open_attributed_.find(device);
    const int64_t attributed_nano = attributed == open_attributed_.end() ? 0 : attributed->second;

    t.attributed_nano += attributed_nano;
    t.idle_nano += node_nano - attributed_nano;
    t.node_nano += node_nano;
    t.wall_seconds += wall_s;
    t.energy_joules += joules;
    if (const auto busy = open_busy_s_.find(device); busy != open_busy_s_.end()) {
      t.busy_seconds += busy->second;
    }
    if (const auto e = open_step_energy_.find(device); e != open_step_energy_.end()) {
      t.step_energy_joules += e->second;
    }
    // kCostComponents order: capex, network, debt, other, energy.
    for (size_t i = 0; i < fixed_parts.size(); ++i) {
      t.by_component_nano[std::string(kCostComponents[i])] += fixed_parts[i];
    }
    t.by_component_nano["energy"] += energy_nano;
  }
  // Zeroed, not cleared: the next interval's steps find their device's
  // entries and allocate no map nodes on the engine thread.
  for (auto& [_, v] : open_attributed_) v = 0;
  for (auto& [_, v] : open_busy_s_) v = 0;
  for (auto& [_, v] : open_step_energy_) v = 0;
}

std::map<std::string, DeviceCostTotals> CostLedger::Totals() const {
  absl::MutexLock lock(&mu_);
  return totals_;
}

}  // namespace tokenmill::metering
