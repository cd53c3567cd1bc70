// The routing signals of a real daemon, scraped live: the KV usage ratio per
// device and per model, the node queue gauge, model states, the node's name
// and draining state, with [metrics] compat = "vllm" the vLLM names of the
// same figures, and the "capacity" object of /control/v1/node.
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/model/synth.h"
#include "runtime/tenants/tenant_registry.h"
#include "tests/integration/daemon_process.h"
#include "tests/support/temp_dir.h"
#include "tests/support/tiny_model.h"
#include "tests/telemetry/exposition.h"

namespace tokenmill::testing {
namespace {

using nlohmann::json;
using telemetry::exposition::SeriesValue;
using ::testing::DoubleNear;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::Optional;

constexpr char kKey[] = "key-routing-0123456789";

class RoutingMetricsTest : public ::testing::Test {
 protected:
  void StartDaemon(const std::string& metrics_toml) {
    const model::SynthOptions shape =
        TinyModelShape(devices::TensorType::kF16, /*vocab_size=*/300, /*context_length=*/512);
    const std::filesystem::path model_path = dir_.path() / "tiny.gguf";
    ASSERT_TRUE(model::WriteSynthGguf(shape, model_path).ok());
    DaemonOptions options;
    options.name = "rack7-node3";
    options.metrics_toml = metrics_toml;
    options.api_toml = "tcp = \"127.0.0.1:0\"\n";
    options.extra_toml =
        absl::StrCat("[[model]]\nid = \"tiny\"\npath = \"", model_path.string(), "\"\n\n",
                     "[[tenant]]\nname = \"alpha\"\napi_keys_sha256 = [\"",
                     tenants::ApiKeySha256(kKey), "\"]\n");
    daemon_ = std::make_unique<DaemonProcess>(dir_.path(), options);
    ASSERT_TRUE(daemon_->Start()) << daemon_->Stderr();
    ASSERT_TRUE(daemon_->WaitModelReady("tiny")) << daemon_->Stderr();
    // One request, with a prompt long enough to fill KV blocks and query the
    // prefix cache.
    json body = {{"model", "tiny"},
                 {"prompt", "The token factory meters every token it makes, block by block."},
                 {"max_tokens", 8},
                 {"ignore_eos", true}};
    auto r = CurlRequest(
        absl::StrCat("http://127.0.0.1:", daemon_->ApiTcpPort(), "/v1/completions"), "", "POST",
        body.dump(),
        {"Content-Type: application/json", absl::StrCat("Authorization: Bearer ", kKey)}, 30000);
    ASSERT_EQ(r.status, 200) << r.body;
  }

  void TearDown() override {
    if (daemon_) {
      EXPECT_EQ(daemon_->Stop(), 0) << daemon_->Stderr();
    }
  }

  std::string Scrape() {
    auto r = CurlRequest("http://" + daemon_->MetricsAddress() + "/metrics", "");
    EXPECT_EQ(r.status, 200);
    return r.body;
  }

  TempDir dir_;
  std::unique_ptr<DaemonProcess> daemon_;
};

TEST_F(RoutingMetricsTest, TokenmillAndVllmNamesOnALiveScrape) {
  ASSERT_NO_FATAL_FAILURE(StartDaemon("compat = \"vllm\"\n"));
  const std::string text = Scrape();

  // The node queue and the model's own queue: idle after the request.
  EXPECT_THAT(SeriesValue(text, R"(tokenmill_node_requests{state="waiting"})"), Optional(0.0));
  EXPECT_THAT(SeriesValue(text, R"(tokenmill_node_requests{state="running"})"), Optional(0.0));
  EXPECT_THAT(SeriesValue(text, R"(vllm:num_requests_waiting{model_name="tiny"})"), Optional(0.0));
  EXPECT_THAT(SeriesValue(text, R"(vllm:num_requests_running{model_name="tiny"})"), Optional(0.0));

  // The KV ratios are fractions, per device and per model; the bytes of the
  // device add up to the capacity /control/v1/node reports.
  auto device_ratio = SeriesValue(text, R"(tokenmill_kv_cache_usage_ratio{device="cpu"})");
  auto model_ratio =
      SeriesValue(text, R"(tokenmill_kv_cache_usage_ratio{device="cpu",model="tiny"})");
  ASSERT_TRUE(device_ratio.has_value()) << text;
  ASSERT_TRUE(model_ratio.has_value()) << text;
  EXPECT_GE(*device_ratio, 0.0);
  EXPECT_LE(*device_ratio, 1.0);
  EXPECT_GE(*model_ratio, 0.0);
  EXPECT_LE(*model_ratio, 1.0);
  EXPECT_THAT(SeriesValue(text, R"(vllm:kv_cache_usage_perc{model_name="tiny"})"),
              Optional(DoubleNear(*model_ratio, 1e-12)));
  EXPECT_THAT(SeriesValue(text, R"(vllm:gpu_cache_usage_perc{model_name="tiny"})"),
              Optional(DoubleNear(*model_ratio, 1e-12)));
  EXPECT_TRUE(SeriesValue(text, "tokenmill_node_kv_cache_usage_ratio").has_value());
  const auto used = SeriesValue(text, R"(tokenmill_kv_cache_bytes{device="cpu",state="used"})");
  const auto cached = SeriesValue(text, R"(tokenmill_kv_cache_bytes{device="cpu",state="cached"})");
  const auto free = SeriesValue(text, R"(tokenmill_kv_cache_bytes{device="cpu",state="free"})");
  ASSERT_TRUE(used && cached && free) << text;
  // The finished request's blocks stay for prefix reuse.
  EXPECT_GT(*cached, 0.0);

  // Token and prefix-cache counters under both names.
  const auto prompt = SeriesValue(text, R"(vllm:prompt_tokens_total{model_name="tiny"})");
  ASSERT_TRUE(prompt.has_value());
  EXPECT_GT(*prompt, 0.0);
  EXPECT_THAT(SeriesValue(text, R"(vllm:generation_tokens_total{model_name="tiny"})"),
              Optional(8.0));
  const auto queries = SeriesValue(text, R"(tokenmill_prefix_cache_queries_total{model="tiny"})");
  ASSERT_TRUE(queries.has_value());
  EXPECT_GT(*queries, 0.0);
  EXPECT_THAT(SeriesValue(text, R"(vllm:prefix_cache_queries_total{model_name="tiny"})"),
              Optional(*queries));
  EXPECT_TRUE(SeriesValue(text, R"(vllm:prefix_cache_hits_total{model_name="tiny"})").has_value());

  // Under load: a scrape that catches requests running shows KV in use, the
  // same fraction per model as per device (one model holds the whole arena),
  // and the same running count under both names.
  std::atomic<bool> stop{false};
  std::vector<std::thread> clients;
  for (int c = 0; c < 4; ++c) {
    clients.emplace_back([&, c] {
      for (int i = 0; !stop.load(); ++i) {
        json body = {{"model", "tiny"},
                     {"prompt", absl::StrCat("client ", c, " request ", i, " of the fleet test")},
                     {"max_tokens", 200},
                     {"ignore_eos", true}};
        CurlRequest(
            absl::StrCat("http://127.0.0.1:", daemon_->ApiTcpPort(), "/v1/completions"), "", "POST",
            body.dump(),
            {"Content-Type: application/json", absl::StrCat("Authorization: Bearer ", kKey)},
            30000);
      }
    });
  }
  std::string busy;
  const bool caught = WaitUntil(
      [&] {
        busy = Scrape();
        auto running = SeriesValue(busy, R"(tokenmill_node_requests{state="running"})");
        auto in_use = SeriesValue(busy, R"(tokenmill_kv_cache_bytes{device="cpu",state="used"})");
        return running && *running > 0 && in_use && *in_use > 0;
      },
      std::chrono::seconds(20));
  stop = true;
  for (auto& t : clients) t.join();
  ASSERT_TRUE(caught) << "no scrape saw a request running";
  const auto busy_device = SeriesValue(busy, R"(tokenmill_kv_cache_usage_ratio{device="cpu"})");
  const auto busy_model =
      SeriesValue(busy, R"(tokenmill_kv_cache_usage_ratio{device="cpu",model="tiny"})");
  ASSERT_TRUE(busy_device && busy_model);
  EXPECT_GT(*busy_device, 0.0);
  EXPECT_LT(*busy_device, 1.0);
  EXPECT_NEAR(*busy_model, *busy_device, 1e-9);
  const double busy_used =
      *SeriesValue(busy, R"(tokenmill_kv_cache_bytes{device="cpu",state="used"})");
  const double busy_total =
      busy_used + *SeriesValue(busy, R"(tokenmill_kv_cache_bytes{device="cpu",state="cached"})") +
      *SeriesValue(busy, R"(tokenmill_kv_cache_bytes{device="cpu",state="free"})");
  EXPECT_NEAR(*busy_device, busy_used / busy_total, 1e-9);
  EXPECT_EQ(SeriesValue(busy, R"(vllm:num_requests_running{model_name="tiny"})"),
            SeriesValue(busy, R"(tokenmill_requests{model="tiny",state="running"})"));
  EXPECT_EQ(SeriesValue(busy, R"(tokenmill_node_requests{state="running"})"),
            SeriesValue(busy, R"(tokenmill_requests{model="tiny",state="running"})"));

  // Model state, node identity and drain state.
  EXPECT_THAT(
      SeriesValue(text, R"(tokenmill_model_state{device="cpu",model="tiny",state="ready"})"),
      Optional(1.0));
  EXPECT_THAT(
      SeriesValue(text, R"(tokenmill_model_state{device="cpu",model="tiny",state="loading"})"),
      Optional(0.0));
  EXPECT_THAT(SeriesValue(text, R"(tokenmill_node_info{node_name="rack7-node3"})"), Optional(1.0));
  EXPECT_THAT(SeriesValue(text, "tokenmill_node_draining"), Optional(0.0));

  // The capacity a scheduler reads, in the same bytes.
  auto node = daemon_->Control("GET", "/control/v1/node");
  ASSERT_EQ(node.status, 200);
  const json capacity = json::parse(node.body)["capacity"];
  ASSERT_TRUE(capacity.is_object()) << node.body;
  EXPECT_EQ(capacity["draining"], false);
  EXPECT_EQ(capacity["queue_depth"], 0);
  EXPECT_EQ(capacity["running"], 0);
  ASSERT_EQ(capacity["devices"].size(), 1u) << capacity.dump();
  const json& cpu = capacity["devices"][0];
  EXPECT_EQ(cpu["id"], "cpu");
  EXPECT_GT(cpu["kv_bytes_total"].get<uint64_t>(), 0u);
  EXPECT_EQ(cpu["kv_bytes_total"].get<uint64_t>(), cpu["kv_bytes_used"].get<uint64_t>() +
                                                       cpu["kv_bytes_cached"].get<uint64_t>() +
                                                       cpu["kv_bytes_free"].get<uint64_t>());
  // The CPU arena's cap follows the host's free memory, read anew by each
  // reader: the scrape and this answer agree to within what other processes
  // took in between.
  EXPECT_NEAR(cpu["kv_bytes_total"].get<double>(), *used + *cached + *free,
              0.1 * (*used + *cached + *free));
  EXPECT_EQ(capacity["kv_bytes_total"], cpu["kv_bytes_total"]);
  ASSERT_EQ(capacity["models"].size(), 1u);
  EXPECT_EQ(capacity["models"][0]["id"], "tiny");
  EXPECT_EQ(capacity["models"][0]["state"], "ready");
  EXPECT_EQ(capacity["models"][0]["waiting"], 0);

  // Draining shows in the gauge and in capacity.
  ASSERT_EQ(daemon_->Control("POST", "/control/v1/drain").status, 202);
  EXPECT_THAT(SeriesValue(Scrape(), "tokenmill_node_draining"), Optional(1.0));
  EXPECT_THAT(SeriesValue(Scrape(), "tokenmill_node_ready"), Optional(0.0));
  EXPECT_EQ(json::parse(daemon_->Control("GET", "/control/v1/node").body)["capacity"]["draining"],
            true);
}

TEST_F(RoutingMetricsTest, WithoutCompatThereAreNoVllmNames) {
  ASSERT_NO_FATAL_FAILURE(StartDaemon(""));
  const std::string text = Scrape();
  EXPECT_TRUE(SeriesValue(text, R"(tokenmill_kv_cache_usage_ratio{device="cpu",model="tiny"})")
                  .has_value());
  EXPECT_THAT(text, Not(HasSubstr("vllm:")));
}

}  // namespace
}  // namespace tokenmill::testing
