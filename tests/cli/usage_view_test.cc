// `tokenmill usage` and `tokenmill top`'s pure parts: the request path, the
// usage table, and top's rates from canned /metrics text.
#include "daemon/cli/usage_view.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tokenmill::cli {
namespace {

using nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

MetricsScrape Scrape(double at, const std::string& text) {
  auto samples = ParsePrometheusText(text);
  EXPECT_TRUE(samples.ok()) << samples.status();
  return MetricsScrape{at, samples.ok() ? *samples : std::vector<MetricSample>{}};
}

const TopLine* Find(const std::vector<TopLine>& lines, const std::string& name) {
  for (const TopLine& l : lines) {
    if (l.name == name) return &l;
  }
  return nullptr;
}

TEST(UsageViewTest, UsagePathEncodesFlags) {
  EXPECT_EQ(UsagePath({}), "/control/v1/usage");
  UsageFlags flags;
  flags.tenant = "a b&c";
  flags.from = "2026-11-29T10:00:00Z";
  flags.group = "day";
  flags.by_device = true;
  flags.csv = true;
  EXPECT_EQ(UsagePath(flags),
            "/control/v1/usage?tenant=a%20b%26c&from=2026-11-29T10%3A00%3A00Z&group=day&"
            "by_device=true&format=csv");
}

TEST(UsageViewTest, UsageTable) {
  json usage = json::parse(R"({
    "from": "2026-11-29T00:00:00Z", "to": "2026-11-30T00:00:00Z", "group": "hour",
    "currency": "EUR",
    "rows": [{"tenant": "acme", "model": "llama", "period_start": "2026-11-29T10:00:00Z",
              "prompt_tokens": 400, "cached_tokens": 40, "generated_tokens": 150,
              "requests": 3, "cost": 1.5, "revenue": 4.0, "margin": 2.5,
              "cost_per_mtok": 2727.2727, "yield_tokens_per_usd": 366.67},
             {"tenant": "beta", "model": "llama", "period_start": "2026-11-29T11:00:00Z",
              "prompt_tokens": 10, "cached_tokens": 0, "generated_tokens": 5, "requests": 1,
              "cost": 0, "revenue": 0, "margin": 0, "cost_per_mtok": 0,
              "yield_tokens_per_usd": null}],
    "totals": {"prompt_tokens": 410, "generated_tokens": 155, "requests": 4, "cost": 1.5,
               "revenue": 4.0, "margin": 2.5, "cost_per_mtok": 2654.87,
               "yield_tokens_per_usd": 376.67}})");
  TableRows rows = UsageTableRows(usage);
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_THAT(rows[0], ElementsAre("PERIOD", "TENANT", "MODEL", "TOKENS IN", "TOKENS OUT",
                                   "REQUESTS", "COST", "REVENUE", "MARGIN", "EUR/MTOK", "TOK/EUR"));
  EXPECT_THAT(rows[1], ElementsAre("2026-11-29 10:00", "acme", "llama", "400", "150", "3", "1.5000",
                                   "4.0000", "2.5000", "2727.2727", "367"));
  EXPECT_EQ(rows[2][10], "-");  // null yield
  EXPECT_THAT(rows[3], ElementsAre("TOTAL", "", "", "410", "155", "4", "1.5000", "4.0000", "2.5000",
                                   "2654.8700", "377"));

  usage["group"] = "day";
  usage["rows"][0]["device"] = "cpu0";
  usage["rows"][1]["device"] = "cuda0";
  rows = UsageTableRows(usage);
  EXPECT_EQ(rows[0][3], "DEVICE");
  EXPECT_EQ(rows[1][0], "2026-11-29");
  EXPECT_EQ(rows[2][3], "cuda0");
  EXPECT_EQ(rows[3].size(), rows[0].size());
}

constexpr char kBefore[] = R"(# TYPE tokenmill_tokens_total counter
tokenmill_tokens_total{tenant="acme",model="llama",device="cpu0",kind="prompt"} 1000
tokenmill_tokens_total{tenant="acme",model="llama",device="cpu0",kind="generated"} 500
tokenmill_tokens_total{tenant="acme",model="llama",device="cpu0",kind="cached"} 100
tokenmill_tokens_total{tenant="beta",model="qwen",device="cpu0",kind="generated"} 900
tokenmill_cost_usd_total{tenant="acme",model="llama",device="cpu0"} 1.0
tokenmill_cost_usd_total{tenant="beta",model="qwen",device="cpu0"} 5.0
tokenmill_revenue_usd_total{tenant="acme",model="llama"} 2.0
tokenmill_requests{model="llama",state="running"} 9
)";

// Two seconds later: acme/llama did 200 prompt + 100 generated tokens for
// 0.003 USD and earned 0.01; beta/qwen's counters were reset (restart) and
// now read 50 generated for 0.001; a new series acme/qwen appears.
constexpr char kAfter[] =
    R"(tokenmill_tokens_total{tenant="acme",model="llama",device="cpu0",kind="prompt"} 1200
tokenmill_tokens_total{tenant="acme",model="llama",device="cpu0",kind="generated"} 600
tokenmill_tokens_total{tenant="acme",model="llama",device="cpu0",kind="cached"} 150
tokenmill_tokens_total{tenant="beta",model="qwen",device="cpu0",kind="generated"} 50
tokenmill_tokens_total{tenant="acme",model="qwen",device="cuda0",kind="prompt"} 10
tokenmill_cost_usd_total{tenant="acme",model="llama",device="cpu0"} 1.003
tokenmill_cost_usd_total{tenant="beta",model="qwen",device="cpu0"} 0.001
tokenmill_revenue_usd_total{tenant="acme",model="llama"} 2.01
tokenmill_requests{model="llama",state="running"} 3
tokenmill_requests{model="llama",state="waiting"} 1
tokenmill_requests{model="qwen",state="running"} 2
tokenmill_build_info{version="1"} 1
)";

TEST(UsageViewTest, TopRatesFromCounterDeltas) {
  TopView view = ComputeTop(Scrape(10.0, kBefore), Scrape(12.0, kAfter));
  EXPECT_DOUBLE_EQ(view.interval_seconds, 2.0);
  ASSERT_EQ(view.models.size(), 2u);
  const TopLine* llama = Find(view.models, "llama");
  ASSERT_NE(llama, nullptr);
  EXPECT_DOUBLE_EQ(llama->prompt_tokens_per_s, 100.0);
  EXPECT_DOUBLE_EQ(llama->generated_tokens_per_s, 50.0);
  EXPECT_NEAR(llama->cost_per_s, 0.0015, 1e-12);
  EXPECT_NEAR(llama->revenue_per_s, 0.005, 1e-12);
  ASSERT_TRUE(llama->cost_per_mtok && llama->yield);
  EXPECT_NEAR(*llama->cost_per_mtok, 0.003 / 300 * 1e6, 1e-6);
  EXPECT_NEAR(*llama->yield, 300 / 0.003, 1e-3);
  EXPECT_EQ(llama->running, 3.0);  // the gauge as of the second scrape
  EXPECT_EQ(llama->waiting, 1.0);

  const TopLine* qwen = Find(view.models, "qwen");
  ASSERT_NE(qwen, nullptr);
  EXPECT_DOUBLE_EQ(qwen->generated_tokens_per_s, 25.0);  // reset: 50 from zero
  EXPECT_DOUBLE_EQ(qwen->prompt_tokens_per_s, 5.0);      // new series: 10 from zero
  EXPECT_EQ(qwen->running, 2.0);
  EXPECT_FALSE(qwen->waiting.has_value());

  ASSERT_EQ(view.tenants.size(), 2u);
  const TopLine* beta = Find(view.tenants, "beta");
  ASSERT_NE(beta, nullptr);
  EXPECT_NEAR(*beta->yield, 50 / 0.001, 1e-6);
  EXPECT_DOUBLE_EQ(beta->revenue_per_s, 0.0);
  EXPECT_FALSE(beta->running.has_value());
  EXPECT_DOUBLE_EQ(view.total.prompt_tokens_per_s, 105.0);
  EXPECT_DOUBLE_EQ(view.total.generated_tokens_per_s, 75.0);
  EXPECT_EQ(view.total.running, 5.0);

  std::string text = RenderTop(view, "tokenmill top  127.0.0.1:9464");
  EXPECT_THAT(text, HasSubstr("tokenmill top  127.0.0.1:9464\n"));
  EXPECT_THAT(text, HasSubstr("MODEL  RUNNING  WAITING  PROMPT TOK/S"));
  EXPECT_THAT(text, HasSubstr("TENANT  PROMPT TOK/S"));
  EXPECT_THAT(text, HasSubstr("100.0"));
  EXPECT_THAT(text, HasSubstr("10.0000"));  // llama USD/MTOK
  EXPECT_THAT(text, HasSubstr("TOTAL"));
}

TEST(UsageViewTest, TopWithoutTrafficHasNoRatios) {
  TopView idle = ComputeTop(Scrape(0, kBefore), Scrape(1, kBefore));
  const TopLine* llama = Find(idle.models, "llama");
  ASSERT_NE(llama, nullptr);
  EXPECT_DOUBLE_EQ(llama->prompt_tokens_per_s, 0.0);
  EXPECT_FALSE(llama->cost_per_mtok.has_value());
  EXPECT_FALSE(llama->yield.has_value());
  EXPECT_THAT(RenderTop(idle, "t"), HasSubstr("-"));
  // Nothing exported yet: empty tables, no crash.
  TopView empty = ComputeTop(Scrape(0, ""), Scrape(1, ""));
  EXPECT_TRUE(empty.models.empty());
  EXPECT_TRUE(empty.tenants.empty());
}

TEST(UsageViewTest, MetricsAddressAndInterval) {
  EXPECT_EQ(MetricsAddress(json{{"metrics", {{"listen", "127.0.0.1:9464"}}}}), "127.0.0.1:9464");
  EXPECT_EQ(MetricsAddress(json{{"metrics", {{"listen", "0.0.0.0:9464"}}}}), "127.0.0.1:9464");
  EXPECT_EQ(MetricsAddress(json{{"metrics", {{"listen", "[::]:9464"}}}}), "[::1]:9464");
  EXPECT_EQ(MetricsAddress(json{{"metrics", {{"listen", ":9464"}}}}), "127.0.0.1:9464");
  EXPECT_FALSE(MetricsAddress(json{{"metrics", {{"listen", ""}}}}).has_value());
  EXPECT_FALSE(MetricsAddress(json::object()).has_value());

  EXPECT_EQ(ParseInterval("1s"), std::chrono::milliseconds(1000));
  EXPECT_EQ(ParseInterval("500ms"), std::chrono::milliseconds(500));
  EXPECT_EQ(ParseInterval("2m"), std::chrono::milliseconds(120000));
  EXPECT_EQ(ParseInterval("1.5"), std::chrono::milliseconds(1500));
  EXPECT_FALSE(ParseInterval("0s").has_value());
  EXPECT_FALSE(ParseInterval("-1s").has_value());
  EXPECT_FALSE(ParseInterval("fast").has_value());
  EXPECT_FALSE(ParseInterval("1h").has_value());
}

}  // namespace
}  // namespace tokenmill::cli
