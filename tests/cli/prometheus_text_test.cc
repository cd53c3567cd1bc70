// The Prometheus text parser on canned exposition text.
#include "daemon/cli/prometheus_text.h"

#include <cmath>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tokenmill::cli {
namespace {

using ::testing::HasSubstr;

TEST(PrometheusTextTest, SamplesLabelsAndValues) {
  auto samples = ParsePrometheusText(
      "# HELP tokenmill_tokens_total Tokens.\n"
      "# TYPE tokenmill_tokens_total counter\n"
      "tokenmill_tokens_total{tenant=\"acme\",model=\"llama\",device=\"cpu0\",kind=\"prompt\"} "
      "1234\n"
      "\n"
      "tokenmill_cost_usd_total{tenant=\"a \\\"b\\\" \\\\ c\\nd\", model=\"m\",} 1.5e-3 "
      "1700000000000\r\n"
      "tokenmill_build_info 1\n"
      "  up{job=\"x\"}\t+Inf\n"
      "nan_metric NaN\n"
      "neg{} -Inf\n"
      // prometheus-cpp's exposer writes an empty quantile as "Nan".
      "exposer_request_latencies{quantile=\"0.5\"} Nan");
  ASSERT_TRUE(samples.ok()) << samples.status();
  ASSERT_EQ(samples->size(), 7u);
  EXPECT_TRUE(std::isnan((*samples)[6].value));
  const MetricSample& tokens = (*samples)[0];
  EXPECT_EQ(tokens.name, "tokenmill_tokens_total");
  EXPECT_EQ(tokens.labels.size(), 4u);
  EXPECT_EQ(tokens.labels.at("kind"), "prompt");
  EXPECT_EQ(tokens.value, 1234);
  const MetricSample& cost = (*samples)[1];
  EXPECT_EQ(cost.labels.at("tenant"), "a \"b\" \\ c\nd");
  EXPECT_EQ(cost.labels.at("model"), "m");
  EXPECT_DOUBLE_EQ(cost.value, 1.5e-3);
  EXPECT_TRUE((*samples)[2].labels.empty());
  EXPECT_TRUE(std::isinf((*samples)[3].value) && (*samples)[3].value > 0);
  EXPECT_TRUE(std::isnan((*samples)[4].value));
  EXPECT_TRUE(std::isinf((*samples)[5].value) && (*samples)[5].value < 0);
}

TEST(PrometheusTextTest, MalformedLinesNameTheLine) {
  for (const char* bad : {"m{a=\"x\" 1", "m{a=x} 1", "m{=\"x\"} 1", "m 1 2 3", "m abc", "m",
                          "{a=\"x\"} 1", "m{a=\"x\\q\"} 1", "m{a=\"x\"", "m 1 12x"}) {
    auto samples = ParsePrometheusText(std::string("ok 1\n") + bad + "\n");
    ASSERT_FALSE(samples.ok()) << bad;
    EXPECT_THAT(std::string(samples.status().message()), HasSubstr("line 2")) << bad;
  }
  EXPECT_TRUE(ParsePrometheusText("").ok());
  EXPECT_TRUE(ParsePrometheusText("# only a comment\n").ok());
}

}  // namespace
}  // namespace tokenmill::cli
