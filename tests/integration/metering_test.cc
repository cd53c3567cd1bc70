// Metering against the real daemon: the cost attributed to tenants plus idle
// cost equals the node's cost, and after kill -9 in the middle of many
// streams every token a client received is in the ledger and the usage
// counters exactly once.
#include <signal.h>

#include <atomic>
#include <fstream>
#include <map>
#include <thread>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/model/synth.h"
#include "runtime/tenants/tenant_registry.h"
#include "storage/meter_store.h"
#include "tests/integration/daemon_process.h"
#include "tests/support/store_reads.h"
#include "tests/support/temp_dir.h"
#include "tests/support/tiny_model.h"
#include "tests/telemetry/exposition.h"

namespace tokenmill::testing {
namespace {

using nlohmann::json;

constexpr char kKeyA[] = "metering-key-a-0001";
constexpr char kKeyB[] = "metering-key-b-0002";
constexpr char kKeyC[] = "metering-key-c-0003";

class MeteringTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const model::SynthOptions shape = TinyModelShape();
    model_path_ = dir_.path() / "tiny.gguf";
    ASSERT_TRUE(model::WriteSynthGguf(shape, model_path_).ok());
    options_.api_toml = "tcp = \"127.0.0.1:0\"\n";
    options_.extra_toml = absl::StrCat(
        "[cost]\ncapex = 320000.0\ndepreciation_years = 4.0\npower_usd_per_kwh = 0.12\n"
        "pue = 1.3\nnetwork_usd_per_hour = 0.40\ndebt_service_usd_per_hour = 2.10\n"
        "other_usd_per_hour = 0.50\n\n"
        "[[device]]\nmatch = \"cpu\"\nkv_memory = \"64MiB\"\nwatts = 200.0\n\n"
        "[[model]]\nid = \"tiny\"\npath = \"",
        model_path_.string(), "\"\nmax_seqs = 32\n\n",
        "[[tenant]]\nname = \"a\"\napi_keys_sha256 = [\"", tenants::ApiKeySha256(kKeyA),
        "\"]\nweight = 2.0\nprice_input_per_mtok = 0.5\nprice_output_per_mtok = 1.5\n\n",
        "[[tenant]]\nname = \"b\"\napi_keys_sha256 = [\"", tenants::ApiKeySha256(kKeyB),
        "\"]\nprice_input_per_mtok = 0.25\nprice_output_per_mtok = 0.75\n\n",
        "[[tenant]]\nname = \"c\"\napi_keys_sha256 = [\"", tenants::ApiKeySha256(kKeyC),
        "\"]\nprice_input_per_mtok = 0.0375\nprice_output_per_mtok = 0.123456\n");
  }

  std::unique_ptr<DaemonProcess> StartDaemon() {
    auto d = std::make_unique<DaemonProcess>(dir_.path(), options_);
    EXPECT_TRUE(d->Start()) << d->Stderr();
    EXPECT_TRUE(d->WaitModelReady("tiny")) << d->Stderr();
    port_ = d->ApiTcpPort();
    return d;
  }

  // request_id "": no X-Request-Id.
  CurlResult Post(const json& body, const std::string& key, const std::string& request_id,
                  long timeout_ms = 60000) {
    std::vector<std::string> headers = {"Content-Type: application/json",
                                        "Authorization: Bearer " + key};
    if (!request_id.empty()) headers.push_back("X-Request-Id: " + request_id);
    return CurlRequest(absl::StrCat("http://127.0.0.1:", port_, "/v1/completions"), "", "POST",
                       body.dump(), headers, timeout_ms);
  }

  // Every ledger record and the usage counters summed, read from the store
  // of a stopped daemon.
  struct StoreView {
    std::map<std::string, json> ledger_by_client_id;
    std::map<std::string, json> ledger_by_id;
    storage::UsageCounters usage;
    storage::UsageCounters ledger_sum;
    size_t ledger_records = 0;
  };
  StoreView ReadStore() {
    StoreView v;
    storage::MeterStoreOptions o;
    o.dir = dir_.path() / "data";
    auto store = storage::MeterStore::Open(o);
    EXPECT_TRUE(store.ok()) << store.status();
    if (!store.ok()) return v;
    EXPECT_TRUE(ForEachLedgerRecord(**store, [&](std::string_view id, std::string_view record) {
                  json j = json::parse(record);
                  v.ledger_by_id[std::string(id)] = j;
                  ++v.ledger_records;
                  v.ledger_sum.prompt_tokens += j["prompt_tokens"].get<uint64_t>();
                  v.ledger_sum.cached_tokens += j["cached_tokens"].get<uint64_t>();
                  v.ledger_sum.generated_tokens += j["generated_tokens"].get<uint64_t>();
                  v.ledger_sum.cost_nusd += j["cost_nusd"].get<uint64_t>();
                  v.ledger_sum.revenue_nusd += j["revenue_nusd"].get<uint64_t>();
                  v.ledger_sum.requests += 1;
                  if (j.contains("client_request_id")) {
                    const std::string client_id = j["client_request_id"];
                    EXPECT_FALSE(v.ledger_by_client_id.contains(client_id))
                        << "twice in the ledger: " << client_id;
                    v.ledger_by_client_id[client_id] = j;
                  }
                  return true;
                }).ok());
    auto usage = UsageTotal(**store);
    EXPECT_TRUE(usage.ok()) << usage.status();
    if (usage.ok()) v.usage = *usage;
    return v;
  }

  TempDir dir_;
  std::filesystem::path model_path_;
  DaemonOptions options_;
  std::string port_;
};

// The ledger key of a streamed completion: its chunks' id is "cmpl-" + key.
std::string LedgerKeyOf(const std::string& body) {
  const size_t pos = body.find("data: ");
  if (pos == std::string::npos) return "";
  const size_t end = body.find("\n\n", pos);
  if (end == std::string::npos) return "";
  const json j = json::parse(body.substr(pos + 6, end - pos - 6), nullptr, false);
  if (j.is_discarded() || !j.contains("id")) return "";
  const std::string id = j["id"];
  return id.starts_with("cmpl-") ? id.substr(5) : "";
}

// Tokens a streamed completion delivered (one logprobs entry per token).
int64_t TokensReceived(const std::string& body) {
  int64_t n = 0;
  size_t pos = 0;
  while ((pos = body.find("data: ", pos)) != std::string::npos) {
    const size_t end = body.find("\n\n", pos);
    if (end == std::string::npos) break;  // a chunk cut by the kill: not delivered
    const json j = json::parse(body.substr(pos + 6, end - pos - 6), nullptr, false);
    pos = end + 2;
    if (j.is_discarded() || !j.contains("choices") || j["choices"].empty()) continue;
    const json& lp = j["choices"][0]["logprobs"];
    if (lp.is_object() && lp.contains("tokens")) n += static_cast<int64_t>(lp["tokens"].size());
  }
  return n;
}

TEST_F(MeteringTest, AttributedPlusIdleCostEqualsNodeCost) {
  auto daemon = StartDaemon();
  std::vector<std::thread> threads;
  for (int i = 0; i < 12; ++i) {
    threads.emplace_back([&, i] {
      for (int r = 0; r < 3; ++r) {
        Post({{"model", "tiny"},
              {"prompt", absl::StrCat("cost ", i, " ", r)},
              {"max_tokens", 24},
              {"ignore_eos", true}},
             i % 2 ? kKeyA : kKeyB, absl::StrCat("cost-", i, "-", r));
      }
    });
  }
  for (auto& t : threads) t.join();
  const json cost = json::parse(daemon->Control("GET", "/control/v1/cost").body);
  const int64_t node = cost["node_nusd"];
  const int64_t attributed = cost["attributed_nusd"];
  const int64_t idle = cost["idle_nusd"];
  std::printf("node %.9f USD = attributed %.9f + idle %.9f\n", node / 1e9, attributed / 1e9,
              idle / 1e9);
  EXPECT_GT(attributed, 0);
  EXPECT_GT(node, attributed);
  EXPECT_EQ(attributed + idle, node);

  // The usage API shows the same money, and refuses bad queries clearly.
  auto usage = daemon->Control("GET", "/control/v1/usage?group=total");
  ASSERT_EQ(usage.status, 200) << usage.body;
  const json totals = json::parse(usage.body)["totals"];
  EXPECT_NEAR(totals["cost"].get<double>(), attributed / 1e9, 1e-9);
  EXPECT_EQ(totals["generated_tokens"], 36 * 24);
  auto bad = daemon->Control("GET", "/control/v1/usage?tenant=nobody");
  EXPECT_EQ(bad.status, 404) << bad.body;
  bad = daemon->Control("GET", "/control/v1/usage?from=2026-11-02&to=2026-11-01");
  EXPECT_EQ(bad.status, 400) << bad.body;
  EXPECT_NE(bad.body.find("from"), std::string::npos) << bad.body;
  bad = daemon->Control("GET", "/control/v1/usage?from=2000-01-01&to=2026-11-01&group=day");
  EXPECT_EQ(bad.status, 400) << bad.body;
  bad = daemon->Control("GET", "/control/v1/usage?group=week");
  EXPECT_EQ(bad.status, 400) << bad.body;
  ASSERT_EQ(daemon->Stop(), 0);
  const StoreView store = ReadStore();
  // What the store attributes to tenants is what the ledger priced into steps.
  EXPECT_EQ(static_cast<int64_t>(store.usage.cost_nusd), attributed);
  const double relative = std::abs(static_cast<double>(store.usage.cost_nusd + idle - node)) /
                          static_cast<double>(node);
  EXPECT_LE(relative, 1e-6) << "tenants + idle must equal the node's cost to a cent in a million";
  EXPECT_EQ(store.ledger_records, 36u);
  EXPECT_EQ(store.usage.requests, 36u);
  EXPECT_EQ(store.usage.generated_tokens, 36u * 24);
  EXPECT_GT(store.usage.revenue_nusd, 0u);
}

// SIGHUP changes prices from then on: a request before and one after a
// tenfold price change earn revenue in the ratio 1:10; neither is repriced.
TEST_F(MeteringTest, SighupChangesPricesFromThenOnNeverRetroactively) {
  auto daemon = StartDaemon();
  const json body = {{"model", "tiny"},
                     {"prompt", "price me"},
                     {"max_tokens", 10},
                     {"temperature", 0},
                     {"ignore_eos", true}};
  ASSERT_EQ(Post(body, kKeyA, "before").status, 200);
  std::string config = daemon->BaseConfig() + options_.extra_toml;
  const std::string old_prices = "price_input_per_mtok = 0.5\nprice_output_per_mtok = 1.5";
  ASSERT_NE(config.find(old_prices), std::string::npos);
  config.replace(config.find(old_prices), old_prices.size(),
                 "price_input_per_mtok = 5.0\nprice_output_per_mtok = 15.0");
  {
    std::ofstream out(daemon->config_path());
    out << config;
  }
  ASSERT_TRUE(daemon->process().Signal(SIGHUP));
  bool reloaded = false;
  for (int i = 0; i < 200 && !reloaded; ++i) {
    reloaded = daemon->Stderr().find("config_reloaded") != std::string::npos;
    if (!reloaded) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_TRUE(reloaded) << daemon->Stderr();
  ASSERT_EQ(Post(body, kKeyA, "after").status, 200);
  ASSERT_EQ(daemon->Stop(), 0);
  const StoreView store = ReadStore();
  ASSERT_TRUE(store.ledger_by_client_id.contains("before"));
  ASSERT_TRUE(store.ledger_by_client_id.contains("after"));
  const json& before = store.ledger_by_client_id.at("before");
  const json& after = store.ledger_by_client_id.at("after");
  ASSERT_EQ(before["generated_tokens"], after["generated_tokens"]);
  ASSERT_EQ(before["prompt_tokens"], after["prompt_tokens"]);
  const double r1 = before["revenue_nusd"].get<double>();
  const double r2 = after["revenue_nusd"].get<double>();
  // Expected from the prices: tokens x price / 1e6, in nano-USD.
  const double tokens_in = before["prompt_tokens"].get<double>();
  const double tokens_out = before["generated_tokens"].get<double>();
  EXPECT_NEAR(r1, (tokens_in * 0.5 + tokens_out * 1.5) * 1e3, 1.0 * 10);
  EXPECT_NEAR(r2, (tokens_in * 5.0 + tokens_out * 15.0) * 1e3, 1.0 * 10);
}

// `n` choices: each is a ledger record of its own ("<key>", "<key>-1", ...),
// the prompt is billed once (by choice 0), every choice's tokens at the output
// price, and the ledger still adds up to usage. The choices after the first
// start from the prompt's full blocks in the prefix cache.
TEST_F(MeteringTest, ChoicesAreMeteredEachWithThePromptBilledOnce) {
  auto daemon = StartDaemon();
  const std::string metrics_url = absl::StrCat("http://", daemon->MetricsAddress(), "/metrics");
  auto prefix_hits = [&] {
    CurlResult m = CurlRequest(metrics_url, "", "GET", "", {});
    EXPECT_EQ(m.status, 200);
    // Absent until the first request looked the cache up.
    return telemetry::exposition::SeriesValue(m.body,
                                              R"(tokenmill_prefix_cache_hits_total{model="tiny"})")
        .value_or(0.0);
  };
  const double hits_before = prefix_hits();
  const json body = {{"model", "tiny"},
                     {"prompt",
                      "Choices share the prompt: one prefill serves every choice, "
                      "and the ledger bills the prompt once but every choice's tokens."},
                     {"max_tokens", 7},
                     {"temperature", 1.0},
                     {"seed", 5},
                     {"n", 3},
                     {"ignore_eos", true}};
  CurlResult r = Post(body, kKeyA, "");
  ASSERT_EQ(r.status, 200) << r.body;
  const json response = json::parse(r.body);
  ASSERT_EQ(response["choices"].size(), 3u) << r.body;
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(response["choices"][i]["index"], i);
    EXPECT_EQ(response["choices"][i]["finish_reason"], "length");
  }
  const int64_t prompt = response["usage"]["prompt_tokens"];
  EXPECT_EQ(response["usage"]["completion_tokens"], 21);
  const double hits_after = prefix_hits();
  // Two choices each found the prompt's full 16-token blocks in the cache
  // (all but the one holding its last token).
  EXPECT_GE(hits_after - hits_before, 2.0 * ((prompt - 1) / 16 * 16))
      << hits_before << " " << hits_after;
  EXPECT_GE(prompt, 17) << "the prompt fills a block";
  ASSERT_EQ(daemon->Stop(), 0);

  const StoreView store = ReadStore();
  const std::string key = response["id"].get<std::string>().substr(5);  // "cmpl-" + key
  ASSERT_TRUE(store.ledger_by_id.contains(key));
  ASSERT_TRUE(store.ledger_by_id.contains(key + "-1"));
  ASSERT_TRUE(store.ledger_by_id.contains(key + "-2"));
  const json& first = store.ledger_by_id.at(key);
  EXPECT_EQ(first["prompt_tokens"].get<int64_t>(), prompt);
  EXPECT_EQ(first["generated_tokens"], 7);
  EXPECT_NEAR(first["revenue_nusd"].get<double>(), (prompt * 0.5 + 7 * 1.5) * 1e3, 10);
  for (const std::string& sibling : {key + "-1", key + "-2"}) {
    const json& c = store.ledger_by_id.at(sibling);
    EXPECT_EQ(c["prompt_tokens"], 0) << c.dump();
    EXPECT_EQ(c["cached_tokens"], 0) << c.dump();
    EXPECT_EQ(c["generated_tokens"], 7) << c.dump();
    EXPECT_NEAR(c["revenue_nusd"].get<double>(), 7 * 1.5 * 1e3, 10) << c.dump();
    EXPECT_GT(c["cost_nusd"].get<int64_t>(), 0) << "its device time is its cost: " << c.dump();
  }
  EXPECT_EQ(store.ledger_sum.prompt_tokens, store.usage.prompt_tokens);
  EXPECT_EQ(store.ledger_sum.generated_tokens, store.usage.generated_tokens);
  EXPECT_EQ(store.ledger_sum.revenue_nusd, store.usage.revenue_nusd);
}

// A tenant the control API makes or changes is priced from its next step on:
// the daemon pushes every tenant change into metering (the engine thread no
// longer reads the tenant registry). A request before and one after a PATCH
// to tenfold prices earn revenue at exactly their prices.
TEST_F(MeteringTest, TenantPricesSetThroughTheApiApplyToTheNextRequest) {
  auto daemon = StartDaemon();
  constexpr char kKeyD[] = "metering-key-d-0004";
  auto put = daemon->Control(
      "PUT", "/control/v1/tenants/d",
      json({{"api_keys", {kKeyD}}, {"price_input_per_mtok", 0.5}, {"price_output_per_mtok", 1.5}})
          .dump());
  ASSERT_EQ(put.status, 200) << put.body;
  const json body = {{"model", "tiny"},
                     {"prompt", "price me"},
                     {"max_tokens", 10},
                     {"temperature", 0},
                     {"ignore_eos", true}};
  ASSERT_EQ(Post(body, kKeyD, "api-before").status, 200);
  auto patch = daemon->Control(
      "PATCH", "/control/v1/tenants/d",
      json({{"price_input_per_mtok", 5.0}, {"price_output_per_mtok", 15.0}}).dump());
  ASSERT_EQ(patch.status, 200) << patch.body;
  ASSERT_EQ(Post(body, kKeyD, "api-after").status, 200);
  ASSERT_EQ(daemon->Stop(), 0);
  const StoreView store = ReadStore();
  for (const auto& [id, in_pico, out_pico] :
       {std::tuple<std::string, int64_t, int64_t>{"api-before", 500000, 1500000},
        {"api-after", 5000000, 15000000}}) {
    ASSERT_TRUE(store.ledger_by_client_id.contains(id)) << id;
    const json& rec = store.ledger_by_client_id.at(id);
    const int64_t prompt = rec["prompt_tokens"];
    const int64_t generated = rec["generated_tokens"];
    EXPECT_EQ(generated, 10);
    EXPECT_EQ(rec["revenue_nusd"].get<int64_t>(),
              (prompt * in_pico + generated * out_pico + 500) / 1000)
        << id;
  }
}

// Prices with more than three decimals per million tokens (0.0375 and
// 0.123456): each request's revenue is round(tokens x price) of its own
// totals, to the nano-unit, not a sum of steps each rounded on its own.
TEST_F(MeteringTest, RevenueOfEveryRequestIsItsTokensTimesThePrice) {
  auto daemon = StartDaemon();
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      json body = {{"model", "tiny"},
                   {"prompt", absl::StrCat("fractional prices ", std::string(i * 3, 'x'))},
                   {"max_tokens", 5 + 9 * i},
                   {"ignore_eos", true}};
      if (i % 2 == 1) body["stream"] = true;
      EXPECT_EQ(Post(body, kKeyC, absl::StrCat("frac-", i)).status, 200);
    });
  }
  for (auto& t : threads) t.join();
  ASSERT_EQ(daemon->Stop(), 0);
  const StoreView store = ReadStore();
  // Pico-units per token: price x 1e6; revenue in nano-units rounded half up.
  constexpr int64_t kInPico = 37500, kOutPico = 123456;
  for (int i = 0; i < 8; ++i) {
    const std::string id = absl::StrCat("frac-", i);
    ASSERT_TRUE(store.ledger_by_client_id.contains(id)) << id;
    const json& rec = store.ledger_by_client_id.at(id);
    const int64_t prompt = rec["prompt_tokens"];
    const int64_t generated = rec["generated_tokens"];
    EXPECT_EQ(generated, 5 + 9 * i);
    const int64_t want = (prompt * kInPico + generated * kOutPico + 500) / 1000;
    EXPECT_EQ(rec["revenue_nusd"].get<int64_t>(), want)
        << id << ": " << prompt << " prompt and " << generated << " generated tokens";
  }
  EXPECT_EQ(store.usage.revenue_nusd, store.ledger_sum.revenue_nusd);
}

class MeteringKillTest : public MeteringTest, public ::testing::WithParamInterface<const char*> {
 protected:
  void SetUp() override {
    MeteringTest::SetUp();
    options_.extra_toml += absl::StrCat("\n[storage]\ndurability = \"", GetParam(), "\"\n");
  }
};

// With durability = "power" the steps go through the metering writer thread
// (group commit); with "process" each engine thread writes its own.
INSTANTIATE_TEST_SUITE_P(Durability, MeteringKillTest, ::testing::Values("process", "power"));

TEST_P(MeteringKillTest, KillNineMidStreamLosesNoTokenAndCountsNoneTwice) {
  auto daemon = StartDaemon();
  // Requests that finish before the kill: their ledger records must hold
  // exactly the tokens their clients received.
  constexpr int kFinished = 6;
  std::vector<std::string> finished_bodies(kFinished);
  {
    std::vector<std::thread> short_ones;
    for (int i = 0; i < kFinished; ++i) {
      short_ones.emplace_back([&, i] {
        finished_bodies[i] = Post({{"model", "tiny"},
                                   {"prompt", absl::StrCat("short one ", i)},
                                   {"user", absl::StrCat("done user ", i)},
                                   {"max_tokens", 12 + 5 * i},
                                   {"ignore_eos", true},
                                   {"logprobs", 1},
                                   {"stream", true}},
                                  i % 2 ? kKeyA : kKeyB, absl::StrCat("done-", i))
                                 .body;
      });
    }
    for (auto& t : short_ones) t.join();
  }
  constexpr int kClients = 24;
  std::vector<std::string> bodies(kClients);
  std::vector<std::thread> threads;
  std::atomic<int> started{0};
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&, i] {
      ++started;
      CurlResult r = Post({{"model", "tiny"},
                           {"prompt", absl::StrCat("crash test ", i)},
                           {"user", absl::StrCat("end user \u00e9 ", i)},
                           {"max_tokens", 900},
                           {"ignore_eos", true},
                           {"logprobs", 1},
                           {"stream", true}},
                          i % 2 ? kKeyA : kKeyB, absl::StrCat("crash-", i), 60000);
      bodies[i] = r.body;
    });
  }
  // Let the streams run (some thousand tokens), then kill -9 in the middle.
  for (int i = 0; i < 3000; ++i) {
    auto r = daemon->Control("GET", "/control/v1/models/tiny");
    const json j = json::parse(r.body, nullptr, false);
    if (!j.is_discarded() && j["stats"].value("generated_tokens", 0) >= 3600) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  // The node reports what the running streams have metered so far.
  const json before_kill =
      json::parse(daemon->Control("GET", "/control/v1/node").body, nullptr, false);
  EXPECT_FALSE(before_kill.is_discarded()) << daemon->Control("GET", "/control/v1/node").body;
  ASSERT_TRUE(before_kill["store"]["in_flight"].is_object()) << before_kill["store"].dump();
  EXPECT_GT(before_kill["store"]["in_flight"].value("generated_tokens", 0), 0)
      << before_kill["store"].dump();
  ASSERT_TRUE(daemon->process().Signal(SIGKILL));
  daemon->process().Wait(std::chrono::seconds(10));
  for (auto& t : threads) t.join();
  daemon.reset();  // frees its notify socket for the restart

  // Restart: recovery turns the interrupted requests into ledger records.
  auto restarted = StartDaemon();
  EXPECT_NE(restarted->Stderr().find("requests_interrupted"), std::string::npos)
      << restarted->Stderr();
  // Recovery moved every interrupted request into the ledger: nothing in flight.
  const json after_restart =
      json::parse(restarted->Control("GET", "/control/v1/node").body, nullptr, false);
  ASSERT_FALSE(after_restart.is_discarded());
  EXPECT_EQ(after_restart["store"]["in_flight"].value("generated_tokens", -1), 0)
      << after_restart["store"].dump();
  ASSERT_EQ(restarted->Stop(), 0);

  const StoreView store = ReadStore();
  for (int i = 0; i < kFinished; ++i) {
    ASSERT_NE(finished_bodies[i].find("data: [DONE]"), std::string::npos) << finished_bodies[i];
    const std::string id = absl::StrCat("done-", i);
    ASSERT_TRUE(store.ledger_by_client_id.contains(id)) << id;
    const json& rec = store.ledger_by_client_id.at(id);
    EXPECT_EQ(rec["outcome"], "length") << id;
    EXPECT_EQ(rec["generated_tokens"].get<int64_t>(), TokensReceived(finished_bodies[i]))
        << id << " was metered other than what its client received";
    EXPECT_EQ(rec["generated_tokens"].get<int64_t>(), 12 + 5 * i) << id;
    EXPECT_EQ(rec.value("user", ""), absl::StrCat("done user ", i)) << id;
  }
  // A token is metered before it is sent, so a request the kill cut holds
  // what its client received plus the tokens metered but not yet written to
  // its socket: at most a few steps' worth (the loop thread lagging the
  // engine thread). kInFlight bounds that; a meter that counted every step
  // twice would put ~2x the received tokens (~150 each here) in the ledger.
  constexpr int64_t kInFlight = 64;
  int64_t received_total = 0;
  int streams_with_tokens = 0;
  int interrupted = 0;
  for (int i = 0; i < kClients; ++i) {
    const int64_t received = TokensReceived(bodies[i]);
    received_total += received;
    streams_with_tokens += received > 0;
    if (received == 0) continue;  // killed before its first token: nothing delivered
    const std::string id = LedgerKeyOf(bodies[i]);
    ASSERT_TRUE(store.ledger_by_id.contains(id))
        << "crash-" << i << " (" << id << ") is missing from the ledger";
    const json& rec = store.ledger_by_id.at(id);
    EXPECT_GE(rec["generated_tokens"].get<int64_t>(), received) << id;
    EXPECT_LE(rec["generated_tokens"].get<int64_t>(), received + kInFlight)
        << id << " holds more than its client received plus the tokens in flight";
    EXPECT_EQ(rec.value("client_request_id", ""), absl::StrCat("crash-", i))
        << "the client's X-Request-Id must survive the crash";
    EXPECT_EQ(rec.value("user", ""), absl::StrCat("end user \u00e9 ", i))
        << "the request's user must survive the crash";
    interrupted += rec["outcome"] == "interrupted";
  }
  EXPECT_GT(streams_with_tokens, kClients / 2);
  EXPECT_GT(interrupted, 0) << "the kill was meant to hit running streams";
  std::printf("clients received %lld tokens; ledger holds %llu\n",
              static_cast<long long>(received_total),
              static_cast<unsigned long long>(store.ledger_sum.generated_tokens));
  // Counters equal the sum of the ledger, field by field.
  EXPECT_EQ(store.usage.prompt_tokens, store.ledger_sum.prompt_tokens);
  EXPECT_EQ(store.usage.cached_tokens, store.ledger_sum.cached_tokens);
  EXPECT_EQ(store.usage.generated_tokens, store.ledger_sum.generated_tokens);
  EXPECT_EQ(store.usage.cost_nusd, store.ledger_sum.cost_nusd);
  EXPECT_EQ(store.usage.revenue_nusd, store.ledger_sum.revenue_nusd);
  EXPECT_EQ(store.usage.requests, store.ledger_sum.requests);
}

}  // namespace
}  // namespace tokenmill::testing
