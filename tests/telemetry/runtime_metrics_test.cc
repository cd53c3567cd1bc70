#include "telemetry/runtime_metrics.h"

#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"
#include "tests/telemetry/exposition.h"

namespace tokenmill::telemetry {
namespace {

using exposition::SeriesValue;
using ::testing::DoubleNear;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::Optional;

std::string Scrape(const prometheus::Collectable& collectable) {
  return prometheus::TextSerializer().Serialize(collectable.Collect());
}

TEST(BatchRegimeTest, EdgesOfEachRegime) {
  EXPECT_EQ(BatchRegime(0), "1");
  EXPECT_EQ(BatchRegime(1), "1");
  EXPECT_EQ(BatchRegime(2), "2-4");
  EXPECT_EQ(BatchRegime(4), "2-4");
  EXPECT_EQ(BatchRegime(5), "5-16");
  EXPECT_EQ(BatchRegime(16), "5-16");
  EXPECT_EQ(BatchRegime(17), "17-64");
  EXPECT_EQ(BatchRegime(64), "17-64");
  EXPECT_EQ(BatchRegime(65), "65+");
  EXPECT_EQ(BatchRegime(100000), "65+");
}

TEST(RuntimeMetricsTest, StepsAddTokensCostRevenueAndRegimes) {
  prometheus::Registry registry;
  RuntimeMetrics metrics(registry, nullptr);
  metrics.ObserveStep("llama", "cuda:0", 3, 0.020, 0.004, 40,
                      {{.tenant = "acme",
                        .prompt_tokens = 30,
                        .cached_tokens = 16,
                        .generated_tokens = 1,
                        .cost_usd = 0.003,
                        .revenue_usd = 0.01},
                       {.tenant = "beta",
                        .prompt_tokens = 0,
                        .cached_tokens = 0,
                        .generated_tokens = 1,
                        .cost_usd = 0.001,
                        .revenue_usd = 0.002}});
  metrics.ObserveStep("llama", "cuda:0", 1, 0.010, 0.001, 1,
                      {{.tenant = "acme",
                        .prompt_tokens = 0,
                        .cached_tokens = 0,
                        .generated_tokens = 1,
                        .cost_usd = 0.001,
                        .revenue_usd = 0.0005}});
  // The same tenant and model on a second device: revenue has no device label.
  metrics.ObserveStep("llama", "cuda:1", 70, 0.5, 0.25, 70,
                      {{.tenant = "acme",
                        .prompt_tokens = 0,
                        .cached_tokens = 0,
                        .generated_tokens = 70,
                        .cost_usd = 0.25,
                        .revenue_usd = 1.0}});
  const std::string text = Scrape(registry);

  EXPECT_THAT(SeriesValue(text, R"(tokenmill_tokens_total{device="cuda:0",kind="prompt",)"
                                R"(model="llama",tenant="acme"})"),
              Optional(30.0));
  EXPECT_THAT(SeriesValue(text, R"(tokenmill_tokens_total{device="cuda:0",kind="cached",)"
                                R"(model="llama",tenant="acme"})"),
              Optional(16.0));
  EXPECT_THAT(SeriesValue(text, R"(tokenmill_tokens_total{device="cuda:0",kind="generated",)"
                                R"(model="llama",tenant="acme"})"),
              Optional(2.0));
  EXPECT_THAT(SeriesValue(text, R"(tokenmill_tokens_total{device="cuda:0",kind="generated",)"
                                R"(model="llama",tenant="beta"})"),
              Optional(1.0));
  // A kind with no tokens yet is exported as 0, so rates over kinds line up.
  EXPECT_THAT(SeriesValue(text, R"(tokenmill_tokens_total{device="cuda:0",kind="prompt",)"
                                R"(model="llama",tenant="beta"})"),
              Optional(0.0));
  EXPECT_THAT(SeriesValue(text, R"(tokenmill_cost_usd_total{device="cuda:0",model="llama",)"
                                R"(tenant="acme"})"),
              Optional(::testing::DoubleNear(0.004, 1e-12)));
  EXPECT_THAT(SeriesValue(text, R"(tokenmill_cost_usd_total{device="cuda:1",model="llama",)"
                                R"(tenant="acme"})"),
              Optional(0.25));
  EXPECT_THAT(SeriesValue(text, R"(tokenmill_revenue_usd_total{model="llama",tenant="acme"})"),
              Optional(::testing::DoubleNear(1.0105, 1e-12)));
  EXPECT_THAT(SeriesValue(text, R"(tokenmill_revenue_usd_total{model="llama",tenant="beta"})"),
              Optional(0.002));

  EXPECT_THAT(SeriesValue(text, R"(tokenmill_regime_tokens_total{batch="2-4",device="cuda:0",)"
                                R"(model="llama"})"),
              Optional(40.0));
  EXPECT_THAT(SeriesValue(text, R"(tokenmill_regime_tokens_total{batch="1",device="cuda:0",)"
                                R"(model="llama"})"),
              Optional(1.0));
  EXPECT_THAT(SeriesValue(text, R"(tokenmill_regime_cost_usd_total{batch="65+",device="cuda:1",)"
                                R"(model="llama"})"),
              Optional(0.25));
  EXPECT_THAT(SeriesValue(text, R"(tokenmill_regime_cost_usd_total{batch="5-16",device="cuda:0",)"
                                R"(model="llama"})"),
              Optional(0.0));

  EXPECT_THAT(SeriesValue(text, R"(tokenmill_step_duration_seconds_count{device="cuda:0",)"
                                R"(model="llama"})"),
              Optional(2.0));
  EXPECT_THAT(SeriesValue(text, R"(tokenmill_step_duration_seconds_sum{device="cuda:0",)"
                                R"(model="llama"})"),
              Optional(::testing::DoubleNear(0.030, 1e-12)));
  EXPECT_THAT(SeriesValue(text, R"(tokenmill_batch_size_bucket{device="cuda:0",model="llama",)"
                                R"(le="1"})"),
              Optional(1.0));
  EXPECT_THAT(SeriesValue(text, R"(tokenmill_batch_size_bucket{device="cuda:0",model="llama",)"
                                R"(le="4"})"),
              Optional(2.0));
  EXPECT_THAT(SeriesValue(text, R"(tokenmill_batch_size_bucket{device="cuda:1",model="llama",)"
                                R"(le="64"})"),
              Optional(0.0));
  EXPECT_THAT(text, Not(HasSubstr("tokenmill_requests_total{")));
  // Tenants seen on a model export 0 preemptions, so rates over them read 0.
  EXPECT_THAT(SeriesValue(text, R"(tokenmill_preemptions_total{model="llama",tenant="beta"})"),
              Optional(0.0));
}

TEST(RuntimeMetricsTest, NegativeAmountsAreDroppedSoCountersOnlyGrow) {
  prometheus::Registry registry;
  RuntimeMetrics metrics(registry, nullptr);
  metrics.ObserveStep(
      "m", "cpu", 1, 0.01, -1.0, 1,
      {{.tenant = "t", .prompt_tokens = -5, .generated_tokens = 1, .cost_usd = -0.5}});
  const std::string text = Scrape(registry);
  EXPECT_THAT(SeriesValue(text, R"(tokenmill_cost_usd_total{device="cpu",model="m",tenant="t"})"),
              Optional(0.0));
  EXPECT_THAT(
      SeriesValue(text,
                  R"(tokenmill_tokens_total{device="cpu",kind="prompt",model="m",tenant="t"})"),
      Optional(0.0));
  EXPECT_THAT(SeriesValue(text, R"(tokenmill_tokens_total{device="cpu",kind="generated",model="m",)"
                                R"(tenant="t"})"),
              Optional(1.0));
}

TEST(RuntimeMetricsTest, RequestsCountOutcomesAndObserveOnlyTheTimesGiven) {
  prometheus::Registry registry;
  RuntimeMetrics metrics(registry, nullptr);
  metrics.ObserveRequest({.tenant = "acme",
                          .model = "llama",
                          .outcome = "ok",
                          .queue_seconds = 0.002,
                          .ttft_seconds = 0.08,
                          .tpot_seconds = 0.012,
                          .e2e_seconds = 1.3});
  metrics.ObserveRequest({.tenant = "acme",
                          .model = "llama",
                          .outcome = "ok",
                          .queue_seconds = 0.5,
                          .ttft_seconds = 0.7,
                          .tpot_seconds = std::nullopt,
                          .e2e_seconds = 0.7});
  metrics.ObserveRequest({.tenant = "acme",
                          .model = "llama",
                          .outcome = "rejected",
                          .queue_seconds = std::nullopt,
                          .ttft_seconds = std::nullopt,
                          .tpot_seconds = std::nullopt,
                          .e2e_seconds = std::nullopt});
  metrics.ObservePreemption("llama", "acme");
  metrics.ObservePreemption("llama", "acme");
  const std::string text = Scrape(registry);
  EXPECT_THAT(SeriesValue(text, R"(tokenmill_requests_total{model="llama",outcome="ok",)"
                                R"(tenant="acme"})"),
              Optional(2.0));
  EXPECT_THAT(SeriesValue(text, R"(tokenmill_requests_total{model="llama",outcome="rejected",)"
                                R"(tenant="acme"})"),
              Optional(1.0));
  EXPECT_THAT(SeriesValue(text, R"(tokenmill_queue_time_seconds_count{model="llama",)"
                                R"(tenant="acme"})"),
              Optional(2.0));
  EXPECT_THAT(SeriesValue(text, R"(tokenmill_time_to_first_token_seconds_bucket{)"
                                R"(model="llama",tenant="acme",le="0.1"})"),
              Optional(1.0));
  EXPECT_THAT(SeriesValue(text, R"(tokenmill_time_to_first_token_seconds_count{)"
                                R"(model="llama",tenant="acme"})"),
              Optional(2.0));
  EXPECT_THAT(SeriesValue(text, R"(tokenmill_time_per_output_token_seconds_count{)"
                                R"(model="llama",tenant="acme"})"),
              Optional(1.0));
  EXPECT_THAT(SeriesValue(text, R"(tokenmill_request_duration_seconds_sum{)"
                                R"(model="llama",tenant="acme"})"),
              Optional(::testing::DoubleNear(2.0, 1e-12)));
  // Buckets reach minutes: a long request lands below +Inf.
  EXPECT_THAT(SeriesValue(text, R"(tokenmill_request_duration_seconds_bucket{)"
                                R"(model="llama",tenant="acme",le="600"})"),
              Optional(2.0));
  EXPECT_THAT(SeriesValue(text, R"(tokenmill_preemptions_total{model="llama",tenant="acme"})"),
              Optional(2.0));
}

TEST(RuntimeMetricsTest, SnapshotFamiliesAreReadAtScrapeTime) {
  prometheus::Registry registry;
  int calls = 0;
  uint32_t running = 3;
  RuntimeMetrics metrics(registry, [&] {
    ++calls;
    RuntimeSnapshot s;
    s.models.push_back({.model = "llama",
                        .device = "cuda:0",
                        .running = running,
                        .waiting = 7,
                        .prefix_query_tokens = 1000,
                        .prefix_hit_tokens = 250});
    s.kv.push_back({.device = "cuda:0", .used = 10, .free = 90, .cached = 5});
    s.tenant_kv.push_back({.tenant = "acme", .device = "cuda:0", .blocks = 8});
    s.costs.push_back({.device = "cuda:0",
                       .idle_usd = 1.5,
                       .by_component_usd = {{"capex", 2.0}, {"energy", 0.5}}});
    s.costs.push_back({.device = "cuda:1",
                       .idle_usd = 0.25,
                       .by_component_usd = {{"capex", 1.0}, {"network", 0.125}}});
    return s;
  });
  auto collectable = metrics.snapshot_collectable();
  ASSERT_NE(collectable, nullptr);
  EXPECT_EQ(calls, 0) << "nothing is read before a scrape";
  std::string text = Scrape(*collectable);
  EXPECT_EQ(calls, 1);
  EXPECT_THAT(SeriesValue(text, R"(tokenmill_requests{model="llama",state="running"})"),
              Optional(3.0));
  EXPECT_THAT(SeriesValue(text, R"(tokenmill_requests{model="llama",state="waiting"})"),
              Optional(7.0));
  EXPECT_THAT(text, HasSubstr("# TYPE tokenmill_requests gauge"));
  EXPECT_THAT(SeriesValue(text, R"(tokenmill_prefix_cache_queries_total{model="llama"})"),
              Optional(1000.0));
  EXPECT_THAT(SeriesValue(text, R"(tokenmill_prefix_cache_hits_total{model="llama"})"),
              Optional(250.0));
  EXPECT_THAT(text, HasSubstr("# TYPE tokenmill_prefix_cache_hits_total counter"));
  EXPECT_THAT(SeriesValue(text, R"(tokenmill_kv_blocks{device="cuda:0",state="used"})"),
              Optional(10.0));
  EXPECT_THAT(SeriesValue(text, R"(tokenmill_kv_blocks{device="cuda:0",state="free"})"),
              Optional(90.0));
  EXPECT_THAT(SeriesValue(text, R"(tokenmill_kv_blocks{device="cuda:0",state="cached"})"),
              Optional(5.0));
  EXPECT_THAT(SeriesValue(text, R"(tokenmill_kv_tenant_blocks{device="cuda:0",tenant="acme"})"),
              Optional(8.0));
  EXPECT_THAT(SeriesValue(text, R"(tokenmill_idle_cost_usd_total{device="cuda:1"})"),
              Optional(0.25));
  // Node cost is per component, summed over the devices' shares.
  EXPECT_THAT(SeriesValue(text, R"(tokenmill_node_cost_usd_total{component="capex"})"),
              Optional(3.0));
  EXPECT_THAT(SeriesValue(text, R"(tokenmill_node_cost_usd_total{component="energy"})"),
              Optional(0.5));
  EXPECT_THAT(SeriesValue(text, R"(tokenmill_node_cost_usd_total{component="network"})"),
              Optional(0.125));
  EXPECT_THAT(text, HasSubstr("# TYPE tokenmill_node_cost_usd_total counter"));

  running = 4;
  text = Scrape(*collectable);
  EXPECT_THAT(SeriesValue(text, R"(tokenmill_requests{model="llama",state="running"})"),
              Optional(4.0));
  // The snapshot families are not in the registry (no duplicate exposition).
  EXPECT_THAT(Scrape(registry), Not(HasSubstr("tokenmill_kv_blocks")));
}

// Two models on one device with different block sizes: the ratio and bytes
// families put them in one unit (the issue's 4 KiB vs 64 KiB blocks).
RuntimeSnapshot RoutingSnapshot() {
  RuntimeSnapshot s;
  s.models.push_back({.model = "small",
                      .device = "cuda:0",
                      .running = 2,
                      .waiting = 1,
                      .prefix_query_tokens = 400,
                      .prefix_hit_tokens = 100,
                      .prompt_tokens = 500,
                      .generated_tokens = 70,
                      .kv_used_bytes = 100 * 4096,
                      .kv_capacity_bytes = 1600 * 4096});
  s.models.push_back({.model = "big",
                      .device = "cuda:0",
                      .running = 3,
                      .waiting = 4,
                      .kv_used_bytes = 10 * 65536,
                      .kv_capacity_bytes = 40 * 65536});
  s.kv.push_back({.device = "cuda:0",
                  .used = 110,
                  .free = 4692479,
                  .cached = 5,
                  .used_bytes = 100 * 4096 + 10 * 65536,
                  .cached_bytes = 5 * 4096,
                  .total_bytes = 4 << 20});
  s.model_states.push_back({.model = "small", .device = "cuda:0", .state = "ready"});
  s.model_states.push_back({.model = "big", .device = "cuda:0", .state = "draining"});
  s.model_states.push_back({.model = "late", .device = "cpu", .state = "loading"});
  s.node = RuntimeSnapshot::NodeTotals{.running = 5, .waiting = 5};
  return s;
}

TEST(RuntimeMetricsTest, RoutingFamiliesShareOneUnitAcrossBlockSizes) {
  prometheus::Registry registry;
  RuntimeMetrics metrics(registry, RoutingSnapshot);
  const std::string text = Scrape(*metrics.snapshot_collectable());
  const double used = 100 * 4096 + 10 * 65536;
  EXPECT_THAT(SeriesValue(text, R"(tokenmill_kv_cache_usage_ratio{device="cuda:0"})"),
              Optional(DoubleNear(used / (4 << 20), 1e-12)));
  EXPECT_THAT(SeriesValue(text, R"(tokenmill_kv_cache_usage_ratio{device="cuda:0",model="small"})"),
              Optional(DoubleNear(100.0 / 1600, 1e-12)));
  EXPECT_THAT(SeriesValue(text, R"(tokenmill_kv_cache_usage_ratio{device="cuda:0",model="big"})"),
              Optional(DoubleNear(0.25, 1e-12)));
  EXPECT_THAT(SeriesValue(text, R"(tokenmill_node_kv_cache_usage_ratio)"),
              Optional(DoubleNear(used / (4 << 20), 1e-12)));
  EXPECT_THAT(SeriesValue(text, R"(tokenmill_kv_cache_bytes{device="cuda:0",state="used"})"),
              Optional(used));
  EXPECT_THAT(SeriesValue(text, R"(tokenmill_kv_cache_bytes{device="cuda:0",state="cached"})"),
              Optional(5.0 * 4096));
  EXPECT_THAT(SeriesValue(text, R"(tokenmill_kv_cache_bytes{device="cuda:0",state="free"})"),
              Optional((4 << 20) - used - 5.0 * 4096));
  EXPECT_THAT(SeriesValue(text, R"(tokenmill_node_requests{state="waiting"})"), Optional(5.0));
  EXPECT_THAT(SeriesValue(text, R"(tokenmill_node_requests{state="running"})"), Optional(5.0));
  EXPECT_THAT(
      SeriesValue(text, R"(tokenmill_model_state{device="cuda:0",model="big",state="draining"})"),
      Optional(1.0));
  EXPECT_THAT(
      SeriesValue(text, R"(tokenmill_model_state{device="cuda:0",model="big",state="ready"})"),
      Optional(0.0));
  EXPECT_THAT(
      SeriesValue(text, R"(tokenmill_model_state{device="cpu",model="late",state="loading"})"),
      Optional(1.0));
  EXPECT_THAT(text, HasSubstr("# TYPE tokenmill_kv_cache_usage_ratio gauge"));
  // Without the option there are no vLLM names.
  EXPECT_THAT(text, Not(HasSubstr("vllm:")));
}

TEST(RuntimeMetricsTest, VllmNamesCarryTheSameFiguresPerModelName) {
  prometheus::Registry registry;
  RuntimeMetrics metrics(registry, RoutingSnapshot, MetricNames::kTokenmillAndVllm);
  const std::string text = Scrape(*metrics.snapshot_collectable());
  EXPECT_THAT(SeriesValue(text, R"(vllm:num_requests_running{model_name="big"})"), Optional(3.0));
  EXPECT_THAT(SeriesValue(text, R"(vllm:num_requests_waiting{model_name="big"})"), Optional(4.0));
  EXPECT_THAT(SeriesValue(text, R"(vllm:kv_cache_usage_perc{model_name="big"})"),
              Optional(DoubleNear(0.25, 1e-12)));
  EXPECT_THAT(SeriesValue(text, R"(vllm:gpu_cache_usage_perc{model_name="small"})"),
              Optional(DoubleNear(100.0 / 1600, 1e-12)));
  EXPECT_THAT(SeriesValue(text, R"(vllm:prompt_tokens_total{model_name="small"})"),
              Optional(500.0));
  EXPECT_THAT(SeriesValue(text, R"(vllm:generation_tokens_total{model_name="small"})"),
              Optional(70.0));
  EXPECT_THAT(SeriesValue(text, R"(vllm:prefix_cache_queries_total{model_name="small"})"),
              Optional(400.0));
  EXPECT_THAT(SeriesValue(text, R"(vllm:prefix_cache_hits_total{model_name="small"})"),
              Optional(100.0));
  EXPECT_THAT(text, HasSubstr("# TYPE vllm:prompt_tokens_total counter"));
  // The tokenmill names stay.
  EXPECT_THAT(SeriesValue(text, R"(tokenmill_requests{model="big",state="waiting"})"),
              Optional(4.0));
}

TEST(RuntimeMetricsTest, WithoutSnapshotOrDataTheCollectableExportsNothing) {
  prometheus::Registry registry;
  RuntimeMetrics none(registry, nullptr);
  EXPECT_TRUE(none.snapshot_collectable()->Collect().empty());
  prometheus::Registry registry2;
  RuntimeMetrics empty(registry2, [] { return RuntimeSnapshot{}; });
  EXPECT_TRUE(empty.snapshot_collectable()->Collect().empty());
}

// Sample lines of the scrape that carry `label`.
int LinesWith(const std::string& text, const std::string& label) {
  std::istringstream lines(text);
  int count = 0;
  for (std::string line; std::getline(lines, line);) {
    if (!line.starts_with("#") && line.find(label) != std::string::npos) ++count;
  }
  return count;
}

TEST(RuntimeMetricsTest, RemovingAModelOrTenantRemovesEverySeriesOfIt) {
  prometheus::Registry registry;
  RuntimeMetrics metrics(registry, nullptr);
  auto serve = [&](const std::string& model, const std::string& device, const std::string& tenant) {
    metrics.ObserveStep(model, device, 2, 0.01, 0.001, 5,
                        {{.tenant = tenant,
                          .prompt_tokens = 4,
                          .generated_tokens = 1,
                          .cost_usd = 0.001,
                          .revenue_usd = 0.002}});
    metrics.ObservePreemption(model, tenant);
    metrics.ObserveRequest({.tenant = tenant,
                            .model = model,
                            .outcome = "ok",
                            .queue_seconds = 0.1,
                            .ttft_seconds = 0.2,
                            .tpot_seconds = 0.01,
                            .e2e_seconds = 1.0});
  };
  serve("llama", "cpu", "acme");
  serve("llama", "cuda:0", "acme");  // a second device shares the revenue series
  serve("llama", "cpu", "beta");
  serve("qwen", "cpu", "acme");
  const std::string before = Scrape(registry);
  const int llama = LinesWith(before, "model=\"llama\"");
  EXPECT_GT(llama, 117);  // per (model, device, tenant) as the issue counted
  EXPECT_GT(LinesWith(before, "model=\"qwen\""), 100);

  metrics.RemoveModel("llama");
  const std::string after_model = Scrape(registry);
  EXPECT_EQ(LinesWith(after_model, "model=\"llama\""), 0);
  EXPECT_EQ(LinesWith(after_model, "model=\"qwen\""), LinesWith(before, "model=\"qwen\""));
  EXPECT_EQ(LinesWith(after_model, "tenant=\"beta\""), 0);  // beta used llama only

  metrics.RemoveTenant("acme");
  const std::string after_tenant = Scrape(registry);
  EXPECT_EQ(LinesWith(after_tenant, "tenant=\"acme\""), 0);
  // qwen keeps what is not per tenant (its step and regime series).
  EXPECT_GT(LinesWith(after_tenant, "model=\"qwen\""), 0);

  // Used again, the series start again from 0.
  serve("llama", "cpu", "acme");
  EXPECT_THAT(
      SeriesValue(Scrape(registry), "tokenmill_preemptions_total{model=\"llama\",tenant=\"acme\"}"),
      Optional(1.0));
}

TEST(RuntimeMetricsTest, DestructionRemovesTheFamiliesFromTheRegistry) {
  prometheus::Registry registry;
  {
    RuntimeMetrics metrics(registry, nullptr);
    metrics.ObserveStep("m", "cpu", 1, 0.01, 0.1, 1, {{.tenant = "t", .generated_tokens = 1}});
    EXPECT_THAT(Scrape(registry), HasSubstr("tokenmill_tokens_total"));
  }
  EXPECT_THAT(Scrape(registry), Not(HasSubstr("tokenmill_")));
  // A new instance on the same registry starts from zero.
  RuntimeMetrics again(registry, nullptr);
  again.ObserveStep("m", "cpu", 1, 0.01, 0.1, 1, {{.tenant = "t", .generated_tokens = 1}});
  EXPECT_THAT(SeriesValue(Scrape(registry), R"(tokenmill_tokens_total{device="cpu",)"
                                            R"(kind="generated",model="m",tenant="t"})"),
              Optional(1.0));
}

TEST(RuntimeMetricsTest, ConcurrentStepsFromManyThreadsAddUpExactly) {
  prometheus::Registry registry;
  RuntimeMetrics metrics(registry, nullptr);
  constexpr int kThreads = 4;
  constexpr int kSteps = 2000;
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      // Two threads share a (model, device), so first uses race too.
      const std::string device = i % 2 == 0 ? "cuda:0" : "cuda:1";
      const std::vector<RuntimeMetrics::TenantStep> tenants = {
          {.tenant = "a", .generated_tokens = 1, .cost_usd = 0.5},
          {.tenant = "b", .prompt_tokens = 2, .generated_tokens = 1}};
      for (int s = 0; s < kSteps; ++s) {
        metrics.ObserveStep("m", device, 2, 0.001, 0.5, 4, tenants);
        if (s % 100 == 0) metrics.ObservePreemption("m", "b");
      }
    });
  }
  for (auto& t : threads) t.join();
  const std::string text = Scrape(registry);
  for (const char* device : {"cuda:0", "cuda:1"}) {
    const std::string d = device;
    EXPECT_THAT(SeriesValue(text, "tokenmill_tokens_total{device=\"" + d +
                                      "\",kind=\"generated\",model=\"m\",tenant=\"a\"}"),
                Optional(2.0 * kSteps));
    EXPECT_THAT(SeriesValue(text, "tokenmill_tokens_total{device=\"" + d +
                                      "\",kind=\"prompt\",model=\"m\",tenant=\"b\"}"),
                Optional(4.0 * kSteps));
    EXPECT_THAT(SeriesValue(text, "tokenmill_cost_usd_total{device=\"" + d +
                                      "\",model=\"m\",tenant=\"a\"}"),
                Optional(0.5 * 2 * kSteps));
    EXPECT_THAT(SeriesValue(text, "tokenmill_regime_tokens_total{batch=\"2-4\",device=\"" + d +
                                      "\",model=\"m\"}"),
                Optional(4.0 * 2 * kSteps));
    EXPECT_THAT(SeriesValue(text, "tokenmill_step_duration_seconds_count{device=\"" + d +
                                      "\",model=\"m\"}"),
                Optional(2.0 * kSteps));
  }
  EXPECT_THAT(SeriesValue(text, R"(tokenmill_preemptions_total{model="m",tenant="b"})"),
              Optional(kThreads * kSteps / 100.0));
}

}  // namespace
}  // namespace tokenmill::telemetry
