#include "metering/metering.h"

#include <cmath>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "spdlog/spdlog.h"

namespace tokenmill::metering {
namespace {

using nlohmann::json;

uint64_t HourOf(std::chrono::system_clock::time_point t) {
  const auto s = std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
  return s < 0 ? 0 : static_cast<uint64_t>(s) / 3600;
}

double Seconds(runtime::SteadyTime from, runtime::SteadyTime to) {
  return std::chrono::duration<double>(to - from).count();
}

std::string OutcomeOf(runtime::FinishReason reason) {
  switch (reason) {
    case runtime::FinishReason::kStop:
    case runtime::FinishReason::kLength:
      return "ok";
    case runtime::FinishReason::kCancelled:
    case runtime::FinishReason::kDeadline:
      return "cancelled";
    case runtime::FinishReason::kError:
      return "error";
  }
  return "error";
}

// Nonnegative int64 parts as u64 counters.
uint64_t U(int64_t v) { return v < 0 ? 0 : static_cast<uint64_t>(v); }

// Resizes a vector of string-holding values to n without freeing: elements
// cut off move to `spare` (their string buffers with them) and come back
// from it when the vector grows, so that once both have reached the largest
// batch, resizing allocates nothing. New elements keep stale content: the
// caller assigns every field.
template <typename T>
void ResizeKeeping(std::vector<T>& v, std::vector<T>& spare, size_t n) {
  while (v.size() > n) {
    spare.push_back(std::move(v.back()));
    v.pop_back();
  }
  while (v.size() < n) {
    if (spare.empty()) {
      v.emplace_back();
    } else {
      v.push_back(std::move(spare.back()));
      spare.pop_back();
    }
  }
  // Room for every element in either vector, taken while the batch grows.
  if (spare.capacity() < v.capacity()) spare.reserve(v.capacity());
}

}  // namespace

json LedgerRecordJson(const runtime::RequestRecord& r, const storage::UsageCounters& t) {
  json j = {{"request_id", r.request_id},
            {"tenant", r.tenant},
            {"model", r.model},
            {"device", r.device},
            {"outcome", std::string(runtime::FinishReasonName(r.outcome))},
            {"prompt_tokens", t.prompt_tokens},
            {"cached_tokens", t.cached_tokens},
            {"generated_tokens", t.generated_tokens},
            {"device_ns", t.device_ns},
            {"energy_uj", t.energy_uj},
            {"cost_nusd", t.cost_nusd},
            {"revenue_nusd", t.revenue_nusd},
            {"preemptions", r.usage.preemptions},
            {"finished_at_unix_ms", std::chrono::duration_cast<std::chrono::milliseconds>(
                                        r.finished_wall.time_since_epoch())
                                        .count()},
            {"duration_s", Seconds(r.queued_at, r.finished_at)}};
  if (!r.client_request_id.empty()) j["client_request_id"] = r.client_request_id;
  if (!r.user.empty()) j["user"] = r.user;
  if (r.first_token_at) j["ttft_s"] = Seconds(r.queued_at, *r.first_token_at);
  if (!r.error.empty()) j["error"] = r.error;
  return j;
}

// The observer of one instance: engine thread only, so its state needs no
// lock. Its buffers are reused from step to step (ResizeKeeping, string
// assign), so a step allocates nothing once they have grown to the batch;
// only a request's first step adds its entry to `requests_`.
class InstanceMeter final : public runtime::UsageObserver {
 public:
  InstanceMeter(Metering& m, std::string model, std::string device)
      : m_(m), model_(std::move(model)), device_(std::move(device)) {}

  absl::Status OnStep(const runtime::StepUsage& step) override;
  void OnFinish(const runtime::RequestRecord& record) override;

 private:
  Metering& m_;
  const std::string model_;
  const std::string device_;
  // What a request in flight on this instance has been metered so far.
  struct RequestTotals {
    storage::UsageCounters counters;
    // Revenue in pico-units with the sub-nano remainder carried, so that the
    // request's revenue is round(tokens x price), not a sum of rounded steps.
    RequestRevenue revenue;
  };
  absl::flat_hash_map<std::string, RequestTotals> requests_;
  // Scratch reused every step.
  std::vector<TokenShare> shares_;
  SplitScratch split_scratch_;
  std::vector<int64_t> cost_parts_, ns_parts_, energy_parts_;
  storage::StepRecord record_;
  std::vector<storage::UsageDelta> spare_usage_;
  std::vector<storage::RequestProgress> spare_requests_;
  std::vector<telemetry::RuntimeMetrics::TenantStep> tenant_steps_, spare_tenant_steps_;
  std::vector<Prices> step_prices_;       // parallel to record_.usage
  std::vector<RequestRevenue> revenues_;  // parallel to record_.requests
};

absl::Status InstanceMeter::OnStep(const runtime::StepUsage& step) {
  const double seconds = std::chrono::duration<double>(step.device_time).count();
  double energy = 0.0;
  if (m_.sources_.watts) {
    if (auto watts = m_.sources_.watts(device_)) energy = *watts * seconds;
  }
  // Priced now, attributed only once the store holds the step: a step the
  // store refuses is neither sent nor counted as attributed cost.
  const PricedStep priced = m_.ledger_.PriceStep(device_, step.device_time, energy);
  const int64_t cost = priced.cost_nano;
  const CostModelPtr model = m_.ledger_.model();
  const std::shared_ptr<const PriceTable> prices = m_.prices();

  shares_.clear();
  int64_t step_tokens = 0;
  for (const runtime::SequenceUsage& u : step.seqs) {
    shares_.push_back({u.prompt_tokens + u.recomputed_tokens, u.generated_tokens});
    step_tokens += u.prompt_tokens + u.recomputed_tokens + u.generated_tokens;
  }
  model->SplitInto(cost, shares_, cost_parts_, split_scratch_);
  model->SplitInto(step.device_time.count(), shares_, ns_parts_, split_scratch_);
  model->SplitInto(std::llround(energy * 1e6), shares_, energy_parts_, split_scratch_);

  const uint64_t hour = HourOf(step.at);
  size_t tenants = 0;
  ResizeKeeping(record_.usage, spare_usage_, 0);
  ResizeKeeping(tenant_steps_, spare_tenant_steps_, 0);
  ResizeKeeping(record_.requests, spare_requests_, step.seqs.size());
  step_prices_.clear();
  revenues_.clear();
  for (size_t i = 0; i < step.seqs.size(); ++i) {
    const runtime::SequenceUsage& u = step.seqs[i];
    // One usage key (tenant, model, device, hour) per tenant of the step, and
    // the tenant's prices looked up once per step, not once per sequence.
    size_t k = 0;
    while (k < tenants && record_.usage[k].key.tenant != u.tenant) ++k;
    if (k == tenants) {
      ++tenants;
      ResizeKeeping(record_.usage, spare_usage_, tenants);
      storage::UsageDelta& d = record_.usage[k];
      d.key.tenant.assign(u.tenant);
      d.key.model.assign(model_);
      d.key.device.assign(device_);
      d.key.hour = hour;
      d.counters = {};
      ResizeKeeping(tenant_steps_, spare_tenant_steps_, tenants);
      telemetry::RuntimeMetrics::TenantStep& ts = tenant_steps_[k];
      ts.tenant.assign(u.tenant);
      ts.prompt_tokens = ts.cached_tokens = ts.generated_tokens = 0;
      ts.cost_usd = ts.revenue_usd = 0.0;
      step_prices_.push_back(prices->For(u.tenant, model_));
    }
    const Prices& p = step_prices_[k];
    storage::UsageCounters c;
    c.prompt_tokens = U(u.prompt_tokens + u.cached_tokens);
    c.cached_tokens = U(u.cached_tokens);
    c.generated_tokens = U(u.generated_tokens);
    c.device_ns = U(ns_parts_[i]);
    c.energy_uj = U(energy_parts_[i]);
    c.cost_nusd = U(cost_parts_[i]);
    const auto known = requests_.find(absl::string_view(u.request_id.data(), u.request_id.size()));
    revenues_.push_back(known != requests_.end() ? known->second.revenue : RequestRevenue());
    c.revenue_nusd =
        U(revenues_.back().AddStep(u.prompt_tokens + u.cached_tokens, u.generated_tokens,
                                   p.input_per_mtok, p.output_per_mtok));
    storage::RequestProgress& progress = record_.requests[i];
    progress.request_id.assign(u.request_id);
    progress.tenant.assign(u.tenant);
    progress.model.assign(model_);
    progress.device.assign(device_);
    progress.client_request_id.assign(u.client_request_id);
    progress.user.assign(u.user);
    progress.delta = c;
    progress.hour = 0;
    record_.usage[k].counters += c;
    auto& ts = tenant_steps_[k];
    ts.prompt_tokens += u.prompt_tokens;
    ts.cached_tokens += u.cached_tokens;
    ts.generated_tokens += u.generated_tokens;
    ts.cost_usd += static_cast<double>(c.cost_nusd) / 1e9;
    ts.revenue_usd += static_cast<double>(c.revenue_nusd) / 1e9;
  }
  if (absl::Status s = m_.CommitStep(record_); !s.ok()) {
    spdlog::error("metering_record_failed model={} error=\"{}\"", model_, s.ToString());
    return s;
  }
  m_.ledger_.CommitStep(priced);
  for (size_t i = 0; i < record_.requests.size(); ++i) {
    const std::string& id = record_.requests[i].request_id;
    auto it = requests_.find(id);
    if (it == requests_.end()) it = requests_.try_emplace(id).first;  // its first step
    it->second.counters += record_.requests[i].delta;
    it->second.revenue = revenues_[i];
  }
  if (m_.metrics_ != nullptr) {
    m_.metrics_->ObserveStep(model_, device_, step.batch_size, seconds,
                             static_cast<double>(cost) / 1e9, step_tokens, tenant_steps_);
    for (std::string_view tenant : step.preempted_tenants) {
      m_.metrics_->ObservePreemption(model_, std::string(tenant));
    }
  }
  return absl::OkStatus();
}

void InstanceMeter::OnFinish(const runtime::RequestRecord& record) {
  storage::UsageCounters totals;
  if (auto it = requests_.find(record.request_id); it != requests_.end()) {
    totals = it->second.counters;
    requests_.erase(it);
  }
  storage::UsageCounters one;
  one.requests = 1;
  const std::vector<storage::UsageDelta> usage = {
      {storage::UsageKey{record.tenant, model_, device_, HourOf(record.finished_wall)}, one}};
  std::string ledger_record = LedgerRecordJson(record, totals).dump();
  auto written = m_.store_.FinishRequest(record.request_id, ledger_record, usage);
  if (!written.ok()) {
    spdlog::error("ledger_write_failed request_id={} error=\"{}\"", record.request_id,
                  written.status().ToString());
    // Written again once the store takes writes (a full disk freed); a
    // restart first would recover it from its inflight entry instead.
    m_.RetryFinishLater({record.request_id, std::move(ledger_record), usage});
  } else if (!*written) {
    spdlog::warn("ledger_duplicate request_id={}", record.request_id);
  }
  if (m_.metrics_ != nullptr) {
    telemetry::RequestObservation o;
    o.tenant = record.tenant;
    o.model = model_;
    o.outcome = OutcomeOf(record.outcome);
    o.e2e_seconds = Seconds(record.queued_at, record.finished_at);
    if (record.started_at) o.queue_seconds = Seconds(record.queued_at, *record.started_at);
    if (record.first_token_at) {
      o.ttft_seconds = Seconds(record.queued_at, *record.first_token_at);
      if (record.usage.completion_tokens > 1) {
        o.tpot_seconds = Seconds(*record.first_token_at, record.finished_at) /
                         (record.usage.completion_tokens - 1);
      }
    }
    m_.metrics_->ObserveRequest(o);
  }
}

Metering::Metering(storage::MeterSink& store, CostLedger& ledger,
                   telemetry::RuntimeMetrics* metrics, const runtime::Clock& clock,
                   MeteringSources sources, MeteringOptions options)
    : store_(store),
      committer_(options.group_commit ? std::make_unique<StepCommitter>(store) : nullptr),
      ledger_(ledger),
      metrics_(metrics),
      clock_(clock),
      sources_(std::move(sources)),
      price_table_(std::make_shared<const PriceTable>()) {}

Metering::~Metering() { StopTicker(); }

runtime::UsageObserverPtr Metering::ObserverFor(const std::string& model,
                                                const std::string& device) {
  return std::make_unique<InstanceMeter>(*this, model, device);
}

void Metering::SetModelPrices(std::map<std::string, Prices> prices) {
  absl::MutexLock lock(&prices_mu_);
  model_prices_ = std::move(prices);
  price_table_ = std::make_shared<const PriceTable>(model_prices_, tenant_prices_);
}

void Metering::SetTenantPrices(std::map<std::string, Prices> prices) {
  absl::MutexLock lock(&prices_mu_);
  tenant_prices_ = std::move(prices);
  price_table_ = std::make_shared<const PriceTable>(model_prices_, tenant_prices_);
}

absl::Status Metering::CommitStep(const storage::StepRecord& step) {
  return committer_ ? committer_->Commit(step) : store_.RecordStep(step);
}

std::shared_ptr<const PriceTable> Metering::prices() const {
  absl::MutexLock lock(&prices_mu_);
  return price_table_;
}

Prices Metering::PricesFor(const std::string& tenant, const std::string& model) const {
  return prices()->For(tenant, model);
}

absl::StatusOr<size_t> Metering::RecoverInterrupted() {
  return store_.RecoverInterrupted([](const storage::InterruptedRequest& r) {
    runtime::RequestRecord record;
    record.request_id = r.request_id;
    record.tenant = r.tenant;
    record.model = r.model;
    record.device = r.device;
    record.client_request_id = r.client_request_id;
    record.user = r.user;
    record.outcome = runtime::FinishReason::kError;
    record.error = "interrupted: the daemon stopped without finishing the request";
    json j = LedgerRecordJson(record, r.counters);
    j["outcome"] = "interrupted";
    j.erase("duration_s");
    j.erase("finished_at_unix_ms");
    return j.dump();
  });
}

void Metering::RetryFinishLater(PendingFinish finish) {
  absl::MutexLock lock(&pending_mu_);
  if (pending_finishes_.size() >= kMaxPendingFinishes) return;  // recovered at the next start
  pending_finishes_.push_back(std::move(finish));
}

void Metering::RetryPendingFinishes() {
  std::vector<PendingFinish> pending;
  {
    absl::MutexLock lock(&pending_mu_);
    if (pending_finishes_.empty() || !store_.WriteHealth().ok()) return;
    pending.swap(pending_finishes_);
  }
  size_t written = 0;
  for (size_t i = 0; i < pending.size(); ++i) {
    auto s = store_.FinishRequest(pending[i].request_id, pending[i].record, pending[i].usage);
    if (!s.ok()) {
      absl::MutexLock lock(&pending_mu_);
      pending_finishes_.insert(pending_finishes_.end(),
                               std::make_move_iterator(pending.begin() + i),
                               std::make_move_iterator(pending.end()));
      break;
    }
    ++written;
  }
  if (written > 0) spdlog::info("ledger_writes_retried count={}", written);
}

std::map<std::string, double> Metering::EnergySinceLastTick() {
  std::map<std::string, double> delta;
  if (!sources_.energy_joules) return delta;
  const std::map<std::string, double> now = sources_.energy_joules();
  for (const auto& [device, joules] : now) {
    auto it = last_energy_.find(device);
    // The first reading only sets the origin; counters never run backwards.
    if (energy_seen_ && it != last_energy_.end() && joules >= it->second) {
      delta[device] = joules - it->second;
    }
    last_energy_[device] = joules;
  }
  energy_seen_ = true;
  return delta;
}

void Metering::Tick() {
  // The ticker, SIGHUP and cost reads all tick: one at a time, each closing
  // the interval up to its own now with the energy read under the same lock,
  // so intervals close in order and no energy delta is priced twice or lost.
  absl::MutexLock lock(&tick_mu_);
  const std::map<std::string, double> energy = EnergySinceLastTick();
  ledger_.Tick(clock_.Now(), energy);
}

void Metering::SetCostModel(CostModelPtr model) {
  absl::MutexLock lock(&tick_mu_);
  const std::map<std::string, double> energy = EnergySinceLastTick();
  ledger_.SetModel(std::move(model), clock_.Now(), energy);
}

void Metering::StartTicker(std::chrono::milliseconds period) {
  Tick();
  ticker_ = std::thread([this, period] {
    absl::MutexLock lock(&ticker_mu_);
    while (!ticker_stop_) {
      ticker_mu_.AwaitWithTimeout(absl::Condition(&ticker_stop_), absl::FromChrono(period));
      if (ticker_stop_) break;
      ticker_mu_.Unlock();
      Tick();
      RetryPendingFinishes();
      ticker_mu_.Lock();
    }
  });
}

void Metering::StopTicker() {
  {
    absl::MutexLock lock(&ticker_mu_);
    ticker_stop_ = true;
  }
  if (ticker_.joinable()) {
    ticker_.join();
    Tick();  // the last interval up to now
    RetryPendingFinishes();
  }
}

json Metering::CostJson() {
  Tick();
  json devices = json::array();
  int64_t node = 0, attributed = 0, idle = 0;
  for (const auto& [device, t] : ledger_.Totals()) {
    json components = json::object();
    for (const auto& [name, nano] : t.by_component_nano) components[name] = nano;
    devices.push_back({{"device", device},
                       {"node_nusd", t.node_nano},
                       {"attributed_nusd", t.attributed_nano},
                       {"idle_nusd", t.idle_nano},
                       {"by_component_nusd", components},
                       {"busy_seconds", t.busy_seconds},
                       {"wall_seconds", t.wall_seconds},
                       {"energy_joules", t.energy_joules}});
    node += t.node_nano;
    attributed += t.attributed_nano;
    idle += t.idle_nano;
  }
  return {{"currency", ledger_.model()->inputs().currency},
          {"devices", devices},
          {"node_nusd", node},
          {"attributed_nusd", attributed},
          {"idle_nusd", idle}};
}

}  // namespace tokenmill::metering
