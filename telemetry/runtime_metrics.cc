// The serving and metering families. Series are created on a label set's
// first use and their references cached, so a step after the first touches
// only atomics and small maps; the snapshot families are built per scrape.
#include "telemetry/runtime_metrics.h"

#include <algorithm>
#include <array>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/histogram.h"
#include "prometheus/metric_family.h"

namespace tokenmill::telemetry {
namespace {

// The regimes of DESIGN.md, by their upper batch size (the last is open).
constexpr std::array<const char*, 5> kRegimes = {"1", "2-4", "5-16", "17-64", "65+"};

size_t RegimeIndex(int32_t batch_size) {
  if (batch_size <= 1) return 0;
  if (batch_size <= 4) return 1;
  if (batch_size <= 16) return 2;
  if (batch_size <= 64) return 3;
  return 4;
}

// Buckets for LLM serving: a short-prompt TTFT on a GPU is tens of ms, a long
// prefill queued behind others is tens of seconds; a whole request of
// thousands of tokens runs minutes.
prometheus::Histogram::BucketBoundaries TtftBuckets() {
  return {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120};
}
// Per output token: 1 ms (small model, small batch) to seconds (CPU, big batch).
prometheus::Histogram::BucketBoundaries TpotBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5};
}
prometheus::Histogram::BucketBoundaries DurationBuckets() {
  return {0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600};
}
prometheus::Histogram::BucketBoundaries QueueBuckets() {
  return {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120};
}
prometheus::Histogram::BucketBoundaries StepBuckets() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5};
}
// Powers of two; 1, 4, 16 and 64 are also the regime edges.
prometheus::Histogram::BucketBoundaries BatchBuckets() {
  return {1, 2, 4, 8, 16, 32, 64, 128, 256, 512};
}

prometheus::ClientMetric Sample(std::vector<prometheus::ClientMetric::Label> labels,
                                prometheus::MetricType type, double value) {
  prometheus::ClientMetric metric;
  metric.label = std::move(labels);
  if (type == prometheus::MetricType::Counter) {
    metric.counter.value = value;
  } else {
    metric.gauge.value = value;
  }
  return metric;
}

prometheus::MetricFamily MakeFamily(std::string name, std::string help,
                                    prometheus::MetricType type) {
  prometheus::MetricFamily family;
  family.name = std::move(name);
  family.help = std::move(help);
  family.type = type;
  return family;
}

// part / whole in 0..1; 0 when there is no whole.
double Ratio(uint64_t part, uint64_t whole) {
  if (whole == 0) return 0.0;
  return std::min(1.0, static_cast<double>(part) / static_cast<double>(whole));
}

// vLLM's names for the figures a router, an autoscaler or a vLLM dashboard
// reads (as vLLM's v1 engine exports them), labelled model_name.
void AddVllmFamilies(const RuntimeSnapshot& s, std::vector<prometheus::MetricFamily>& out) {
  using prometheus::MetricType;
  auto running = MakeFamily("vllm:num_requests_running",
                            "Requests in the model's batch (tokenmill_requests{state=\"running\"})",
                            MetricType::Gauge);
  auto waiting = MakeFamily(
      "vllm:num_requests_waiting",
      "Requests waiting for the model (tokenmill_requests{state=\"waiting\"})", MetricType::Gauge);
  auto kv = MakeFamily("vllm:kv_cache_usage_perc",
                       "KV cache usage of the model, 0..1 (tokenmill_kv_cache_usage_ratio)",
                       MetricType::Gauge);
  auto gpu_kv =
      MakeFamily("vllm:gpu_cache_usage_perc",
                 "KV cache usage of the model, 0..1 (vLLM's deprecated name)", MetricType::Gauge);
  auto prompt = MakeFamily("vllm:prompt_tokens_total",
                           "Prompt tokens of the model: computed and served from the prefix cache",
                           MetricType::Counter);
  auto generation =
      MakeFamily("vllm:generation_tokens_total", "Tokens the model generated", MetricType::Counter);
  auto queries = MakeFamily("vllm:prefix_cache_queries_total",
                            "Prompt tokens looked up in the prefix cache", MetricType::Counter);
  auto hits = MakeFamily("vllm:prefix_cache_hits_total", "Prompt tokens found in the prefix cache",
                         MetricType::Counter);
  for (const auto& m : s.models) {
    const std::vector<prometheus::ClientMetric::Label> labels = {{"model_name", m.model}};
    const double usage = Ratio(m.kv_used_bytes, m.kv_capacity_bytes);
    running.metric.push_back(Sample(labels, MetricType::Gauge, m.running));
    waiting.metric.push_back(Sample(labels, MetricType::Gauge, m.waiting));
    kv.metric.push_back(Sample(labels, MetricType::Gauge, usage));
    gpu_kv.metric.push_back(Sample(labels, MetricType::Gauge, usage));
    prompt.metric.push_back(
        Sample(labels, MetricType::Counter, static_cast<double>(m.prompt_tokens)));
    generation.metric.push_back(
        Sample(labels, MetricType::Counter, static_cast<double>(m.generated_tokens)));
    queries.metric.push_back(
        Sample(labels, MetricType::Counter, static_cast<double>(m.prefix_query_tokens)));
    hits.metric.push_back(
        Sample(labels, MetricType::Counter, static_cast<double>(m.prefix_hit_tokens)));
  }
  for (auto* family : {&running, &waiting, &kv, &gpu_kv, &prompt, &generation, &queries, &hits}) {
    if (!family->metric.empty()) out.push_back(std::move(*family));
  }
}

// The scrape-time families. Monotonic figures are counters, levels gauges.
class SnapshotCollector : public prometheus::Collectable {
 public:
  SnapshotCollector(std::function<RuntimeSnapshot()> snapshot, MetricNames names)
      : snapshot_(std::move(snapshot)), names_(names) {}

  std::vector<prometheus::MetricFamily> Collect() const override {
    if (!snapshot_) return {};
    const RuntimeSnapshot s = snapshot_();
    using prometheus::MetricType;
    auto requests = MakeFamily("tokenmill_requests",
                               "Requests of a model instance now running (in the batch) or waiting",
                               MetricType::Gauge);
    auto queries = MakeFamily("tokenmill_prefix_cache_queries_total",
                              "Prompt tokens looked up in the prefix cache", MetricType::Counter);
    auto hits = MakeFamily("tokenmill_prefix_cache_hits_total",
                           "Prompt tokens found in the prefix cache", MetricType::Counter);
    auto usage = MakeFamily("tokenmill_kv_cache_usage_ratio",
                            "Fraction of KV cache bytes referenced by live sequences: per device "
                            "(of the arena's capacity) and per device and model (of what the "
                            "model holds plus the arena's free pages); cached blocks count as free",
                            MetricType::Gauge);
    for (const auto& m : s.models) {
      usage.metric.push_back(Sample({{"device", m.device}, {"model", m.model}}, MetricType::Gauge,
                                    Ratio(m.kv_used_bytes, m.kv_capacity_bytes)));
      requests.metric.push_back(
          Sample({{"model", m.model}, {"state", "running"}}, MetricType::Gauge, m.running));
      requests.metric.push_back(
          Sample({{"model", m.model}, {"state", "waiting"}}, MetricType::Gauge, m.waiting));
      queries.metric.push_back(Sample({{"model", m.model}}, MetricType::Counter,
                                      static_cast<double>(m.prefix_query_tokens)));
      hits.metric.push_back(Sample({{"model", m.model}}, MetricType::Counter,
                                   static_cast<double>(m.prefix_hit_tokens)));
    }
    auto kv = MakeFamily("tokenmill_kv_blocks",
                         "KV cache blocks of a device: used (referenced), free, cached (kept for "
                         "prefix reuse)",
                         MetricType::Gauge);
    auto kv_bytes = MakeFamily("tokenmill_kv_cache_bytes",
                               "KV cache bytes of a device: used (referenced), cached (kept for "
                               "prefix reuse), free; they add up to the arena's capacity",
                               MetricType::Gauge);
    uint64_t node_used = 0;
    uint64_t node_total = 0;
    for (const auto& d : s.kv) {
      const uint64_t taken = d.used_bytes + d.cached_bytes;
      const uint64_t free = d.total_bytes > taken ? d.total_bytes - taken : 0;
      kv_bytes.metric.push_back(Sample({{"device", d.device}, {"state", "used"}}, MetricType::Gauge,
                                       static_cast<double>(d.used_bytes)));
      kv_bytes.metric.push_back(Sample({{"device", d.device}, {"state", "cached"}},
                                       MetricType::Gauge, static_cast<double>(d.cached_bytes)));
      kv_bytes.metric.push_back(Sample({{"device", d.device}, {"state", "free"}}, MetricType::Gauge,
                                       static_cast<double>(free)));
      usage.metric.push_back(
          Sample({{"device", d.device}}, MetricType::Gauge, Ratio(d.used_bytes, d.total_bytes)));
      node_used += d.used_bytes;
      node_total += d.total_bytes;
      kv.metric.push_back(Sample({{"device", d.device}, {"state", "used"}}, MetricType::Gauge,
                                 static_cast<double>(d.used)));
      kv.metric.push_back(Sample({{"device", d.device}, {"state", "free"}}, MetricType::Gauge,
                                 static_cast<double>(d.free)));
      kv.metric.push_back(Sample({{"device", d.device}, {"state", "cached"}}, MetricType::Gauge,
                                 static_cast<double>(d.cached)));
    }
    auto tenant_kv =
        MakeFamily("tokenmill_kv_tenant_blocks",
                   "KV cache blocks a tenant's sequences reference on a device", MetricType::Gauge);
    for (const auto& t : s.tenant_kv) {
      tenant_kv.metric.push_back(Sample({{"device", t.device}, {"tenant", t.tenant}},
                                        MetricType::Gauge, static_cast<double>(t.blocks)));
    }
    auto idle = MakeFamily("tokenmill_idle_cost_usd_total",
                           "Cost of device time and energy that no step used", MetricType::Counter);
    // The node's cost is one figure per component: the devices' shares add up.
    std::map<std::string, double> by_component;
    for (const auto& c : s.costs) {
      idle.metric.push_back(Sample({{"device", c.device}}, MetricType::Counter, c.idle_usd));
      for (const auto& [component, usd] : c.by_component_usd) by_component[component] += usd;
    }
    auto node = MakeFamily("tokenmill_node_cost_usd_total",
                           "All-in cost of the node by component (capex, energy, network, debt, "
                           "other), attributed and idle",
                           MetricType::Counter);
    for (const auto& [component, usd] : by_component) {
      node.metric.push_back(Sample({{"component", component}}, MetricType::Counter, usd));
    }
    auto model_state =
        MakeFamily("tokenmill_model_state",
                   "1 for the state a model instance is in (loading, ready, draining, failed), 0 "
                   "for the others",
                   MetricType::Gauge);
    for (const auto& m : s.model_states) {
      for (const char* state : {"loading", "ready", "draining", "failed"}) {
        model_state.metric.push_back(
            Sample({{"device", m.device}, {"model", m.model}, {"state", state}}, MetricType::Gauge,
                   m.state == state ? 1.0 : 0.0));
      }
    }
    auto node_requests = MakeFamily("tokenmill_node_requests",
                                    "Requests of every model on the node now running or waiting "
                                    "(the node's queue depth)",
                                    MetricType::Gauge);
    auto node_usage = MakeFamily("tokenmill_node_kv_cache_usage_ratio",
                                 "Fraction of the node's KV cache bytes (all devices) referenced "
                                 "by live sequences",
                                 MetricType::Gauge);
    if (s.node) {
      node_requests.metric.push_back(
          Sample({{"state", "running"}}, MetricType::Gauge, s.node->running));
      node_requests.metric.push_back(
          Sample({{"state", "waiting"}}, MetricType::Gauge, s.node->waiting));
      node_usage.metric.push_back(Sample({}, MetricType::Gauge, Ratio(node_used, node_total)));
    }
    std::vector<prometheus::MetricFamily> out;
    for (auto* family : {&requests, &node_requests, &queries, &hits, &kv, &kv_bytes, &usage,
                         &node_usage, &tenant_kv, &model_state, &idle, &node}) {
      if (!family->metric.empty()) out.push_back(std::move(*family));
    }
    if (names_ == MetricNames::kTokenmillAndVllm) AddVllmFamilies(s, out);
    return out;
  }

 private:
  std::function<RuntimeSnapshot()> snapshot_;
  MetricNames names_;
};

}  // namespace

std::string BatchRegime(int32_t batch_size) { return kRegimes[RegimeIndex(batch_size)]; }

struct RuntimeMetrics::Impl {
  // Series of one (model, device), for ObserveStep.
  struct TenantSeries {
    prometheus::Counter* prompt = nullptr;
    prometheus::Counter* cached = nullptr;
    prometheus::Counter* generated = nullptr;
    prometheus::Counter* cost = nullptr;
    prometheus::Counter* revenue = nullptr;  // by (tenant, model): shared among devices
  };
  struct StepSeries {
    prometheus::Histogram* step_duration = nullptr;
    prometheus::Histogram* batch_size = nullptr;
    std::array<prometheus::Counter*, kRegimes.size()> regime_tokens{};
    std::array<prometheus::Counter*, kRegimes.size()> regime_cost{};
    std::map<std::string, TenantSeries, std::less<>> tenants;
  };
  // Series of one (tenant, model), for ObserveRequest.
  struct RequestSeries {
    prometheus::Histogram* queue = nullptr;
    prometheus::Histogram* ttft = nullptr;
    prometheus::Histogram* tpot = nullptr;
    prometheus::Histogram* e2e = nullptr;
    std::map<std::string, prometheus::Counter*, std::less<>> by_outcome;
  };
  using Key = std::tuple<std::string, std::string>;

  Impl(prometheus::Registry& r, std::function<RuntimeSnapshot()> snapshot, MetricNames names)
      : registry(r),
        tokens(prometheus::BuildCounter()
                   .Name("tokenmill_tokens_total")
                   .Help("Tokens by kind: prompt (computed), cached (prompt tokens served from the "
                         "prefix cache), generated")
                   .Register(r)),
        requests(prometheus::BuildCounter()
                     .Name("tokenmill_requests_total")
                     .Help("Finished requests by outcome (ok, cancelled, error, rejected)")
                     .Register(r)),
        cost(prometheus::BuildCounter()
                 .Name("tokenmill_cost_usd_total")
                 .Help("Cost attributed to a tenant's tokens: device time and energy of its steps")
                 .Register(r)),
        revenue(prometheus::BuildCounter()
                    .Name("tokenmill_revenue_usd_total")
                    .Help("Revenue of a tenant's tokens at its prices")
                    .Register(r)),
        regime_tokens(prometheus::BuildCounter()
                          .Name("tokenmill_regime_tokens_total")
                          .Help("Tokens of steps by batch regime (batch = sequences in the step)")
                          .Register(r)),
        regime_cost(prometheus::BuildCounter()
                        .Name("tokenmill_regime_cost_usd_total")
                        .Help("Cost of steps by batch regime (batch = sequences in the step)")
                        .Register(r)),
        preemptions(prometheus::BuildCounter()
                        .Name("tokenmill_preemptions_total")
                        .Help("Sequences preempted (to be recomputed) when KV blocks ran out")
                        .Register(r)),
        ttft(prometheus::BuildHistogram()
                 .Name("tokenmill_time_to_first_token_seconds")
                 .Help("From arrival to the first generated token")
                 .Register(r)),
        tpot(prometheus::BuildHistogram()
                 .Name("tokenmill_time_per_output_token_seconds")
                 .Help("Mean time per generated token after the first, per request")
                 .Register(r)),
        duration(prometheus::BuildHistogram()
                     .Name("tokenmill_request_duration_seconds")
                     .Help("From arrival to the last token")
                     .Register(r)),
        queue(prometheus::BuildHistogram()
                  .Name("tokenmill_queue_time_seconds")
                  .Help("From arrival to the first step that computes the request")
                  .Register(r)),
        step_duration(prometheus::BuildHistogram()
                          .Name("tokenmill_step_duration_seconds")
                          .Help("Device time of one engine step")
                          .Register(r)),
        batch_size(prometheus::BuildHistogram()
                       .Name("tokenmill_batch_size")
                       .Help("Sequences in one engine step")
                       .Register(r)),
        collector(std::make_shared<SnapshotCollector>(std::move(snapshot), names)) {}

  ~Impl() {
    for (auto* family :
         {&tokens, &requests, &cost, &revenue, &regime_tokens, &regime_cost, &preemptions}) {
      registry.Remove(*family);
    }
    for (auto* family : {&ttft, &tpot, &duration, &queue, &step_duration, &batch_size}) {
      registry.Remove(*family);
    }
  }

  StepSeries& Step(const std::string& model, const std::string& device)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    auto it = steps.find(std::tie(model, device));
    if (it != steps.end()) return it->second;
    StepSeries& s = steps[Key(model, device)];
    const prometheus::Labels labels = {{"model", model}, {"device", device}};
    s.step_duration = &step_duration.Add(labels, StepBuckets());
    s.batch_size = &batch_size.Add(labels, BatchBuckets());
    for (size_t i = 0; i < kRegimes.size(); ++i) {
      prometheus::Labels with_batch = labels;
      with_batch["batch"] = kRegimes[i];
      s.regime_tokens[i] = &regime_tokens.Add(with_batch);
      s.regime_cost[i] = &regime_cost.Add(with_batch);
    }
    return s;
  }

  TenantSeries& Tenant(StepSeries& step, const std::string& tenant, const std::string& model,
                       const std::string& device) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    auto it = step.tenants.find(tenant);
    if (it != step.tenants.end()) return it->second;
    TenantSeries& t = step.tenants[tenant];
    const prometheus::Labels labels = {{"tenant", tenant}, {"model", model}, {"device", device}};
    auto with_kind = [&](const char* kind) {
      prometheus::Labels l = labels;
      l["kind"] = kind;
      return &tokens.Add(l);
    };
    t.prompt = with_kind("prompt");
    t.cached = with_kind("cached");
    t.generated = with_kind("generated");
    t.cost = &cost.Add(labels);
    t.revenue = &revenue.Add({{"tenant", tenant}, {"model", model}});
    // A tenant seen on a model exports 0 preemptions rather than no series, so
    // rates and alerts over it read 0, not "no data".
    Preemption(model, tenant);
    return t;
  }

  RequestSeries& Request(const std::string& tenant, const std::string& model)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    auto it = request_series.find(std::tie(tenant, model));
    if (it != request_series.end()) return it->second;
    RequestSeries& s = request_series[Key(tenant, model)];
    const prometheus::Labels labels = {{"tenant", tenant}, {"model", model}};
    s.queue = &queue.Add(labels, QueueBuckets());
    s.ttft = &ttft.Add(labels, TtftBuckets());
    s.tpot = &tpot.Add(labels, TpotBuckets());
    s.e2e = &duration.Add(labels, DurationBuckets());
    return s;
  }

  prometheus::Counter& Outcome(RequestSeries& s, const std::string& tenant,
                               const std::string& model, const std::string& outcome)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    auto it = s.by_outcome.find(outcome);
    if (it != s.by_outcome.end()) return *it->second;
    prometheus::Counter* c =
        &requests.Add({{"tenant", tenant}, {"model", model}, {"outcome", outcome}});
    s.by_outcome.emplace(outcome, c);
    return *c;
  }

  prometheus::Counter& Preemption(const std::string& model, const std::string& tenant)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    auto it = preemption_series.find(std::tie(model, tenant));
    if (it != preemption_series.end()) return *it->second;
    prometheus::Counter* c = &preemptions.Add({{"model", model}, {"tenant", tenant}});
    preemption_series.emplace(Key(model, tenant), c);
    return *c;
  }

  // Removes what `step` holds of one tenant's series.
  void ForgetTenantSeries(TenantSeries& t, std::set<prometheus::Counter*>& revenue_gone)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    for (prometheus::Counter* c : {t.prompt, t.cached, t.generated}) tokens.Remove(c);
    cost.Remove(t.cost);
    // A (tenant, model) revenue series is shared by the model's devices.
    if (revenue_gone.insert(t.revenue).second) revenue.Remove(t.revenue);
  }

  void ForgetRequestSeries(RequestSeries& s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    queue.Remove(s.queue);
    ttft.Remove(s.ttft);
    tpot.Remove(s.tpot);
    duration.Remove(s.e2e);
    for (auto& [outcome, counter] : s.by_outcome) requests.Remove(counter);
  }

  prometheus::Registry& registry;
  prometheus::Family<prometheus::Counter>& tokens;
  prometheus::Family<prometheus::Counter>& requests;
  prometheus::Family<prometheus::Counter>& cost;
  prometheus::Family<prometheus::Counter>& revenue;
  prometheus::Family<prometheus::Counter>& regime_tokens;
  prometheus::Family<prometheus::Counter>& regime_cost;
  prometheus::Family<prometheus::Counter>& preemptions;
  prometheus::Family<prometheus::Histogram>& ttft;
  prometheus::Family<prometheus::Histogram>& tpot;
  prometheus::Family<prometheus::Histogram>& duration;
  prometheus::Family<prometheus::Histogram>& queue;
  prometheus::Family<prometheus::Histogram>& step_duration;
  prometheus::Family<prometheus::Histogram>& batch_size;
  std::shared_ptr<prometheus::Collectable> collector;

  // Guards the caches only; the series are atomics (histograms lock their
  // own). std::map keeps references stable and finds by a tuple of
  // references without building a key.
  absl::Mutex mu;
  std::map<Key, StepSeries, std::less<>> steps ABSL_GUARDED_BY(mu);
  std::map<Key, RequestSeries, std::less<>> request_series ABSL_GUARDED_BY(mu);
  std::map<Key, prometheus::Counter*, std::less<>> preemption_series ABSL_GUARDED_BY(mu);
};

RuntimeMetrics::RuntimeMetrics(prometheus::Registry& registry,
                               std::function<RuntimeSnapshot()> snapshot, MetricNames names)
    : impl_(std::make_unique<Impl>(registry, std::move(snapshot), names)) {}

RuntimeMetrics::~RuntimeMetrics() = default;

std::shared_ptr<prometheus::Collectable> RuntimeMetrics::snapshot_collectable() const {
  return impl_->collector;
}

void RuntimeMetrics::ObserveStep(const std::string& model, const std::string& device,
                                 int32_t batch_size, double step_seconds, double step_cost_usd,
                                 int64_t step_tokens, const std::vector<TenantStep>& tenants) {
  // Counters only grow: negative inputs (a clock step, a bug upstream) are
  // dropped rather than let prometheus-cpp ignore them silently per series.
  auto add = [](prometheus::Counter* c, double v) {
    if (v > 0) c->Increment(v);
  };
  absl::MutexLock lock(&impl_->mu);
  Impl::StepSeries& step = impl_->Step(model, device);
  if (step_seconds >= 0) step.step_duration->Observe(step_seconds);
  step.batch_size->Observe(batch_size);
  const size_t regime = RegimeIndex(batch_size);
  add(step.regime_tokens[regime], static_cast<double>(step_tokens));
  add(step.regime_cost[regime], step_cost_usd);
  for (const TenantStep& t : tenants) {
    Impl::TenantSeries& series = impl_->Tenant(step, t.tenant, model, device);
    add(series.prompt, static_cast<double>(t.prompt_tokens));
    add(series.cached, static_cast<double>(t.cached_tokens));
    add(series.generated, static_cast<double>(t.generated_tokens));
    add(series.cost, t.cost_usd);
    add(series.revenue, t.revenue_usd);
  }
}

void RuntimeMetrics::ObserveRequest(const RequestObservation& request) {
  absl::MutexLock lock(&impl_->mu);
  Impl::RequestSeries& s = impl_->Request(request.tenant, request.model);
  impl_->Outcome(s, request.tenant, request.model, request.outcome).Increment();
  auto observe = [](prometheus::Histogram* h, const std::optional<double>& v) {
    if (v && *v >= 0) h->Observe(*v);
  };
  observe(s.queue, request.queue_seconds);
  observe(s.ttft, request.ttft_seconds);
  observe(s.tpot, request.tpot_seconds);
  observe(s.e2e, request.e2e_seconds);
}

void RuntimeMetrics::ObservePreemption(const std::string& model, const std::string& tenant) {
  absl::MutexLock lock(&impl_->mu);
  impl_->Preemption(model, tenant).Increment();
}

void RuntimeMetrics::RemoveModel(const std::string& model) {
  Impl& m = *impl_;
  absl::MutexLock lock(&m.mu);
  std::set<prometheus::Counter*> revenue_gone;
  for (auto it = m.steps.begin(); it != m.steps.end();) {
    if (std::get<0>(it->first) != model) {
      ++it;
      continue;
    }
    Impl::StepSeries& s = it->second;
    m.step_duration.Remove(s.step_duration);
    m.batch_size.Remove(s.batch_size);
    for (size_t i = 0; i < kRegimes.size(); ++i) {
      m.regime_tokens.Remove(s.regime_tokens[i]);
      m.regime_cost.Remove(s.regime_cost[i]);
    }
    for (auto& [tenant, t] : s.tenants) m.ForgetTenantSeries(t, revenue_gone);
    it = m.steps.erase(it);
  }
  for (auto it = m.request_series.begin(); it != m.request_series.end();) {
    if (std::get<1>(it->first) != model) {
      ++it;
      continue;
    }
    m.ForgetRequestSeries(it->second);
    it = m.request_series.erase(it);
  }
  for (auto it = m.preemption_series.begin(); it != m.preemption_series.end();) {
    if (std::get<0>(it->first) != model) {
      ++it;
      continue;
    }
    m.preemptions.Remove(it->second);
    it = m.preemption_series.erase(it);
  }
}

void RuntimeMetrics::RemoveTenant(const std::string& tenant) {
  Impl& m = *impl_;
  absl::MutexLock lock(&m.mu);
  std::set<prometheus::Counter*> revenue_gone;
  for (auto& [key, step] : m.steps) {
    if (auto it = step.tenants.find(tenant); it != step.tenants.end()) {
      m.ForgetTenantSeries(it->second, revenue_gone);
      step.tenants.erase(it);
    }
  }
  for (auto it = m.request_series.begin(); it != m.request_series.end();) {
    if (std::get<0>(it->first) != tenant) {
      ++it;
      continue;
    }
    m.ForgetRequestSeries(it->second);
    it = m.request_series.erase(it);
  }
  for (auto it = m.preemption_series.begin(); it != m.preemption_series.end();) {
    if (std::get<1>(it->first) != tenant) {
      ++it;
      continue;
    }
    m.preemptions.Remove(it->second);
    it = m.preemption_series.erase(it);
  }
}

}  // namespace tokenmill::telemetry
