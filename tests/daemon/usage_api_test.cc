// UsageApi in-process: a real MeterStore in a temp dir, filled with usage
// deltas over several hours, days, tenants and devices; answers checked
// through a fake ResponseWriter.
#include "daemon/usage_api.h"

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/meter_store.h"
#include "tests/daemon/fake_response.h"
#include "tests/support/store_reads.h"
#include "tests/support/temp_dir.h"

namespace tokenmill::daemon {
namespace {

using nlohmann::json;
using testing::FakeResponse;
using ::testing::HasSubstr;

// 2026-11-29T00:00:00Z.
constexpr uint64_t kDay0 = 1795910400;
constexpr uint64_t kHour0 = kDay0 / 3600;

storage::UsageCounters Counters(uint64_t prompt, uint64_t generated, uint64_t cost_nusd,
                                uint64_t revenue_nusd) {
  storage::UsageCounters c;
  c.prompt_tokens = prompt;
  c.cached_tokens = prompt / 10;
  c.generated_tokens = generated;
  c.requests = 1;
  c.device_ns = 2'000'000'000;
  c.energy_uj = 3'000'000;
  c.cost_nusd = cost_nusd;
  c.revenue_nusd = revenue_nusd;
  return c;
}

class UsageApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    storage::MeterStoreOptions options;
    options.dir = dir_.path() / "store";
    auto store = storage::MeterStore::Open(options);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    for (const char* name : {"acme", "beta"}) {
      tenants::TenantPolicy policy;
      policy.name = name;
      ASSERT_TRUE(registry_.Put(policy).ok());
    }
    // Day 0, hours 10 and 11; day 1, hour 3. "gone" is not in the registry
    // but has usage (a removed tenant).
    std::vector<storage::UsageDelta> deltas = {
        {{"acme", "llama", "cpu0", kHour0 + 10}, Counters(100, 50, 1'000'000'000, 3'000'000'000)},
        {{"acme", "llama", "cuda0", kHour0 + 10}, Counters(200, 50, 500'000'000, 1'000'000'000)},
        {{"acme", "llama", "cpu0", kHour0 + 11}, Counters(10, 5, 0, 0)},
        {{"acme", "qwen", "cpu0", kHour0 + 10}, Counters(40, 10, 250'000'000, 0)},
        {{"beta", "llama", "cpu0", kHour0 + 11}, Counters(1000, 1000, 2'000'000'000, 1'000'000)},
        {{"beta", "llama", "cpu0", kHour0 + 24 + 3}, Counters(30, 20, 100'000'000, 0)},
        {{"gone", "llama", "cpu0", kHour0 + 10}, Counters(7, 3, 10'000'000, 0)},
    };
    ASSERT_TRUE(::tokenmill::testing::AddUsage(*store_, deltas).ok());
    // A second delta on the same key adds up.
    ASSERT_TRUE(::tokenmill::testing::AddUsage(
                    *store_, {{{"acme", "llama", "cpu0", kHour0 + 10}, Counters(100, 50, 0, 0)}})
                    .ok());
    api_ = std::make_unique<UsageApi>(*store_, registry_, "USD", [this] { return now_; });
  }

  std::shared_ptr<FakeResponse> Get(std::string query, std::string accept = "") {
    http::HttpRequest request = testing::Request("GET", "/control/v1/usage");
    request.query = std::move(query);
    if (!accept.empty()) request.headers.emplace_back("accept", accept);
    auto response = std::make_shared<FakeResponse>();
    EXPECT_TRUE(api_->Handle(request, response));
    return response;
  }

  json GetJson(const std::string& query) {
    auto response = Get(query);
    EXPECT_EQ(response->status, 200) << response->body;
    return response->status == 200 ? response->Json() : json();
  }

  // 400 with a message containing each of `parts`.
  void ExpectBadRequest(const std::string& query, const std::vector<std::string>& parts) {
    auto response = Get(query);
    EXPECT_EQ(response->status, 400) << query << ": " << response->body;
    std::string message = response->Json()["error"]["message"];
    for (const std::string& part : parts) EXPECT_THAT(message, HasSubstr(part)) << query;
  }

  tokenmill::testing::TempDir dir_;
  tenants::TenantRegistry registry_;
  storage::MeterStorePtr store_;
  std::chrono::system_clock::time_point now_ =
      std::chrono::system_clock::from_time_t(static_cast<time_t>(kDay0 + 12 * 3600 + 90));
  std::unique_ptr<UsageApi> api_;
};

const json* FindRow(const json& rows, const std::string& tenant, const std::string& model,
                    const std::string& period) {
  for (const json& row : rows) {
    if (row["tenant"] == tenant && row["model"] == model && row["period_start"] == period) {
      return &row;
    }
  }
  return nullptr;
}

TEST_F(UsageApiTest, OtherPathsAndMethods) {
  auto response = std::make_shared<FakeResponse>();
  EXPECT_FALSE(api_->Handle(testing::Request("GET", "/control/v1/usages"), response));
  EXPECT_TRUE(api_->Handle(testing::Request("POST", "/control/v1/usage"), response));
  EXPECT_EQ(response->status, 405);
  EXPECT_EQ(response->Header("Allow"), "GET, HEAD");
}

TEST_F(UsageApiTest, DefaultRangeIsTheLastDayByHour) {
  json body = GetJson("");
  // now = 12:01:30 -> to rounds up to 13:00, from = 24 h before.
  EXPECT_EQ(body["to"], "2026-11-29T13:00:00Z");
  EXPECT_EQ(body["from"], "2026-11-28T13:00:00Z");
  EXPECT_EQ(body["group"], "hour");
  EXPECT_EQ(body["currency"], "USD");
  // Day 1's hour is in the future; the rest is in range.
  ASSERT_EQ(body["rows"].size(), 5u) << body.dump(1);
  const json* acme = FindRow(body["rows"], "acme", "llama", "2026-11-29T10:00:00Z");
  ASSERT_NE(acme, nullptr);
  EXPECT_FALSE(acme->contains("device"));
  EXPECT_EQ((*acme)["prompt_tokens"], 400);  // 100 + 100 (cpu0) + 200 (cuda0)
  EXPECT_EQ((*acme)["generated_tokens"], 150);
  EXPECT_EQ((*acme)["requests"], 3);
  EXPECT_DOUBLE_EQ((*acme)["device_seconds"].get<double>(), 6.0);
  EXPECT_DOUBLE_EQ((*acme)["energy_joules"].get<double>(), 9.0);
  EXPECT_DOUBLE_EQ((*acme)["cost"].get<double>(), 1.5);
  EXPECT_DOUBLE_EQ((*acme)["revenue"].get<double>(), 4.0);
  EXPECT_DOUBLE_EQ((*acme)["margin"].get<double>(), 2.5);
  EXPECT_DOUBLE_EQ((*acme)["cost_per_mtok"].get<double>(), 1.5 / 550 * 1e6);
  EXPECT_DOUBLE_EQ((*acme)["yield_tokens_per_usd"].get<double>(), 550 / 1.5);
  // Rows come in period order.
  EXPECT_EQ(body["rows"][0]["period_start"], "2026-11-29T10:00:00Z");
  EXPECT_EQ(body["rows"][4]["period_start"], "2026-11-29T11:00:00Z");
}

TEST_F(UsageApiTest, NullRatiosWithoutTokensOrCost) {
  json body = GetJson("tenant=acme&model=llama&from=2026-11-29T11:00:00Z&to=2026-11-29T12:00:00Z");
  ASSERT_EQ(body["rows"].size(), 1u);
  const json& row = body["rows"][0];
  EXPECT_TRUE(row["yield_tokens_per_usd"].is_null());  // cost 0
  EXPECT_DOUBLE_EQ(row["cost_per_mtok"].get<double>(), 0.0);
  json none = GetJson("model=no-such-model&from=2026-11-29&to=2026-11-30");
  EXPECT_TRUE(none["rows"].empty());
  EXPECT_TRUE(none["totals"]["cost_per_mtok"].is_null());
  EXPECT_TRUE(none["totals"]["yield_tokens_per_usd"].is_null());
  EXPECT_EQ(none["totals"]["prompt_tokens"], 0);
}

TEST_F(UsageApiTest, GroupByDayAndTotal) {
  json days = GetJson("from=2026-11-29&to=2026-12-01&group=day&tenant=beta");
  ASSERT_EQ(days["rows"].size(), 2u) << days.dump(1);
  EXPECT_EQ(days["rows"][0]["period_start"], "2026-11-29T00:00:00Z");
  EXPECT_EQ(days["rows"][0]["prompt_tokens"], 1000);
  EXPECT_EQ(days["rows"][1]["period_start"], "2026-11-30T00:00:00Z");
  EXPECT_EQ(days["rows"][1]["prompt_tokens"], 30);

  json total = GetJson("from=2026-11-29&to=2026-12-01&group=total");
  EXPECT_EQ(total["group"], "total");
  // One row per tenant and model, stamped with the range's start.
  ASSERT_EQ(total["rows"].size(), 4u) << total.dump(1);
  const json* beta = FindRow(total["rows"], "beta", "llama", "2026-11-29T00:00:00Z");
  ASSERT_NE(beta, nullptr);
  EXPECT_EQ((*beta)["prompt_tokens"], 1030);
  EXPECT_EQ((*beta)["generated_tokens"], 1020);
  EXPECT_DOUBLE_EQ((*beta)["cost"].get<double>(), 2.1);
  // Totals sum every row.
  EXPECT_EQ(total["totals"]["prompt_tokens"], 100 + 200 + 10 + 40 + 1000 + 30 + 7 + 100);
  EXPECT_EQ(total["totals"]["requests"], 8);
  EXPECT_NEAR(total["totals"]["cost"].get<double>(), 3.86, 1e-12);
  EXPECT_NEAR(total["totals"]["revenue"].get<double>(), 4.001, 1e-12);
  EXPECT_NEAR(total["totals"]["margin"].get<double>(), 4.001 - 3.86, 1e-12);
}

TEST_F(UsageApiTest, ByDeviceAndFilters) {
  json body = GetJson("from=2026-11-29&to=2026-11-30&group=total&by_device=true&tenant=acme");
  ASSERT_EQ(body["rows"].size(), 3u) << body.dump(1);  // llama cpu0, llama cuda0, qwen cpu0
  EXPECT_EQ(body["rows"][0]["device"], "cpu0");
  EXPECT_EQ(body["rows"][0]["prompt_tokens"], 210);
  EXPECT_EQ(body["rows"][1]["device"], "cuda0");
  EXPECT_EQ(body["rows"][1]["prompt_tokens"], 200);
  EXPECT_EQ(body["rows"][2]["model"], "qwen");

  json cuda = GetJson("from=2026-11-29&to=2026-11-30&group=total&device=cuda0");
  ASSERT_EQ(cuda["rows"].size(), 1u);
  EXPECT_EQ(cuda["rows"][0]["prompt_tokens"], 200);
  json qwen = GetJson("from=2026-11-29&to=2026-11-30&model=qwen");
  ASSERT_EQ(qwen["rows"].size(), 1u);
  EXPECT_EQ(qwen["rows"][0]["tenant"], "acme");
}

TEST_F(UsageApiTest, TimeForms) {
  // Unix seconds and an offset form name the same range as RFC 3339 UTC.
  json a = GetJson("from=" + std::to_string(kDay0 + 10 * 3600) +
                   "&to=" + std::to_string(kDay0 + 11 * 3600));
  json b = GetJson("from=2026-11-29T11%3A00%3A00%2B01%3A00&to=2026-11-29T10:30:00Z");
  EXPECT_EQ(a["from"], "2026-11-29T10:00:00Z");
  EXPECT_EQ(a["to"], "2026-11-29T11:00:00Z");
  EXPECT_EQ(b["from"], a["from"]);
  EXPECT_EQ(b["to"], a["to"]);  // rounded up to the hour
  EXPECT_EQ(a["rows"], b["rows"]);
  EXPECT_EQ(a["rows"].size(), 3u);  // acme llama (two devices), acme qwen, gone llama

  EXPECT_EQ(*ParseUsageTime("2026-11-29", "from"), kDay0);
  EXPECT_EQ(*ParseUsageTime("2026-11-29T00:00:00.5Z", "from"), kDay0);
  EXPECT_FALSE(ParseUsageTime("1969-12-31", "from").ok());
  EXPECT_FALSE(ParseUsageTime("99999999999999", "to").ok());
}

TEST_F(UsageApiTest, UnknownTenantIs404ButRemovedTenantWithUsageIsNot) {
  auto missing = Get("tenant=nobody");
  EXPECT_EQ(missing->status, 404);
  EXPECT_THAT(missing->body, HasSubstr("nobody"));
  json gone = GetJson("tenant=gone&from=2026-11-29&to=2026-11-30");
  ASSERT_EQ(gone["rows"].size(), 1u);
  EXPECT_EQ(gone["rows"][0]["prompt_tokens"], 7);
  // A configured tenant without usage is 200 with no rows.
  tenants::TenantPolicy fresh;
  fresh.name = "fresh";
  ASSERT_TRUE(registry_.Put(fresh).ok());
  EXPECT_TRUE(GetJson("tenant=fresh")["rows"].empty());
}

TEST_F(UsageApiTest, Csv) {
  // A tenant and model whose names need quoting.
  ASSERT_TRUE(
      ::tokenmill::testing::AddUsage(
          *store_, {{{"we, \"the\" people", "m\nx", "cpu0", kHour0 + 10}, Counters(1, 1, 3, 5)}})
          .ok());
  auto response =
      Get("from=2026-11-29T10:00:00Z&to=2026-11-29T11:00:00Z&format=csv&tenant=we%2C+%22the%22+"
          "people");
  ASSERT_EQ(response->status, 200) << response->body;
  EXPECT_EQ(response->content_type, "text/csv; charset=utf-8");
  EXPECT_EQ(
      response->body,
      "period_start,tenant,model,prompt_tokens,cached_tokens,generated_tokens,requests,"
      "device_seconds,energy_joules,cost,revenue,margin,cost_per_mtok,yield_tokens_per_usd\r\n"
      "2026-11-29T10:00:00Z,\"we, \"\"the\"\" people\",\"m\nx\",1,0,1,1,2.000000000,"
      "3.000000,0.000000003,0.000000005,0.000000002,0.0015,666666666.6666666\r\n");

  // Accept: text/csv, by device; a null ratio is an empty field; negative margin.
  auto by_accept = Get(
      "from=2026-11-29T11:00:00Z&to=2026-11-29T12:00:00Z&tenant=acme&by_device=true", "text/csv");
  ASSERT_EQ(by_accept->status, 200);
  EXPECT_THAT(by_accept->body, HasSubstr("tenant,model,device,"));
  EXPECT_THAT(by_accept->body, HasSubstr(",acme,llama,cpu0,10,1,5,1,"));
  EXPECT_THAT(by_accept->body, HasSubstr(",0.000000000,0.000000000,0.000000000,0.0,\r\n"));
  auto qwen = Get("from=2026-11-29&to=2026-11-30&model=qwen&format=csv");
  EXPECT_THAT(qwen->body, HasSubstr(",0.250000000,0.000000000,-0.250000000,"));
  // format=json wins over the Accept header.
  EXPECT_EQ(Get("format=json", "text/csv")->content_type, "application/json");
}

TEST_F(UsageApiTest, BadRequests) {
  ExpectBadRequest("colour=red", {"'colour'", "unknown", "tenant"});
  ExpectBadRequest("tenant=acme&tenant=beta", {"'tenant'", "more than once"});
  ExpectBadRequest("tenant=", {"'tenant'", "empty"});
  ExpectBadRequest("tenant=%zz", {"%-escape"});
  ExpectBadRequest("from=yesterday", {"'from'", "RFC 3339"});
  ExpectBadRequest("to=2026-13-01", {"'to'", "RFC 3339"});
  ExpectBadRequest("from=2026-11-29T10:00:00Z&to=2026-11-29T10:00:00Z", {"'from'", "before"});
  ExpectBadRequest("from=2026-11-30&to=2026-11-29", {"'from'", "before"});
  ExpectBadRequest("from=2024-01-01&to=2026-01-01&group=day", {"366 days"});
  ExpectBadRequest("from=2026-01-01&to=2026-03-01", {"'group'", "31 days", "group=day"});
  ExpectBadRequest("group=week", {"'group'", "hour, day or total"});
  ExpectBadRequest("format=xml", {"'format'", "json or csv"});
  ExpectBadRequest("by_device=yes", {"'by_device'", "true or false"});
  // The limits themselves are fine.
  EXPECT_EQ(Get("from=2026-01-01&to=2026-02-01")->status, 200);
  EXPECT_EQ(Get("from=2025-01-01&to=2026-01-02&group=total")->status, 200);
}

}  // namespace
}  // namespace tokenmill::daemon
