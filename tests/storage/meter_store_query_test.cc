// MeterStore::QueryUsage and HasTenantUsage: grouping, filters and order.
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/meter_store.h"
#include "tests/storage/temp_dir.h"
#include "tests/support/store_reads.h"

namespace tokenmill::storage {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

// 2024-06-10 00:00 UTC is hour 476'232 (a multiple of 24: a UTC day start).
constexpr uint64_t kDay0 = 476'232;

UsageCounters Generated(uint64_t n) {
  UsageCounters c;
  c.generated_tokens = n;
  c.requests = 1;
  return c;
}

UsageRow Row(uint64_t period_start, std::string tenant, std::string model, std::string device,
             uint64_t generated, uint64_t requests) {
  UsageRow row;
  row.period_start = period_start;
  row.tenant = std::move(tenant);
  row.model = std::move(model);
  row.device = std::move(device);
  row.counters.generated_tokens = generated;
  row.counters.requests = requests;
  return row;
}

class QueryUsageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    MeterStoreOptions options;
    options.dir = tmp_.path() / "data";
    auto store = MeterStore::Open(options);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    // Written out of order on purpose: rows must come back sorted.
    ASSERT_TRUE(::tokenmill::testing::AddUsage(
                    *store_, {{{"zeta", "qwen", "cuda:0", kDay0 + 1}, Generated(1)},
                              {{"acme", "llama", "cuda:1", kDay0 + 1}, Generated(2)},
                              {{"acme", "llama", "cuda:0", kDay0 + 1}, Generated(4)},
                              {{"acme", "llama", "cuda:0", kDay0}, Generated(8)},
                              {{"acme", "qwen", "cpu", kDay0 + 25}, Generated(16)},
                              {{"acme", "llama", "cuda:0", kDay0 + 30}, Generated(32)}})
                    .ok());
  }

  std::vector<UsageRow> Query(const UsageQuery& query, UsageGrouping grouping,
                              bool by_device = false) {
    auto rows = store_->QueryUsage(query, grouping, by_device);
    EXPECT_TRUE(rows.ok()) << rows.status();
    return rows.ok() ? *rows : std::vector<UsageRow>{};
  }

  testing::TempDir tmp_;
  MeterStorePtr store_;
};

TEST_F(QueryUsageTest, HourlyRowsAreOrderedByPeriodTenantModel) {
  const uint64_t h0 = kDay0 * 3600;
  EXPECT_THAT(
      Query({}, UsageGrouping::kHour),
      ElementsAre(Row(h0, "acme", "llama", "", 8, 1), Row(h0 + 3600, "acme", "llama", "", 6, 2),
                  Row(h0 + 3600, "zeta", "qwen", "", 1, 1),
                  Row(h0 + 25 * 3600, "acme", "qwen", "", 16, 1),
                  Row(h0 + 30 * 3600, "acme", "llama", "", 32, 1)));
}

TEST_F(QueryUsageTest, HourlyByDeviceKeepsDevicesApart) {
  const uint64_t h1 = (kDay0 + 1) * 3600;
  UsageQuery query;
  query.hour_begin = kDay0 + 1;
  query.hour_end = kDay0 + 2;
  EXPECT_THAT(Query(query, UsageGrouping::kHour, /*by_device=*/true),
              ElementsAre(Row(h1, "acme", "llama", "cuda:0", 4, 1),
                          Row(h1, "acme", "llama", "cuda:1", 2, 1),
                          Row(h1, "zeta", "qwen", "cuda:0", 1, 1)));
}

TEST_F(QueryUsageTest, DailyRowsStartAtUtcMidnight) {
  const uint64_t d0 = kDay0 * 3600;
  const uint64_t d1 = d0 + 86400;
  EXPECT_THAT(Query({}, UsageGrouping::kDay),
              ElementsAre(Row(d0, "acme", "llama", "", 14, 3), Row(d0, "zeta", "qwen", "", 1, 1),
                          Row(d1, "acme", "llama", "", 32, 1), Row(d1, "acme", "qwen", "", 16, 1)));
}

TEST_F(QueryUsageTest, TotalsWithFilters) {
  EXPECT_THAT(Query({}, UsageGrouping::kTotal),
              ElementsAre(Row(0, "acme", "llama", "", 46, 4), Row(0, "acme", "qwen", "", 16, 1),
                          Row(0, "zeta", "qwen", "", 1, 1)));
  UsageQuery acme;
  acme.tenant = "acme";
  acme.model = "llama";
  EXPECT_THAT(Query(acme, UsageGrouping::kTotal, /*by_device=*/true),
              ElementsAre(Row(0, "acme", "llama", "cuda:0", 44, 3),
                          Row(0, "acme", "llama", "cuda:1", 2, 1)));
  UsageQuery by_model;
  by_model.model = "qwen";
  by_model.hour_end = kDay0 + 24;
  EXPECT_THAT(Query(by_model, UsageGrouping::kTotal),
              ElementsAre(Row(0, "zeta", "qwen", "", 1, 1)));
  UsageQuery nobody;
  nobody.tenant = "nobody";
  EXPECT_THAT(Query(nobody, UsageGrouping::kDay), IsEmpty());
}

TEST_F(QueryUsageTest, HasTenantUsage) {
  for (const auto& [tenant, want] : std::vector<std::pair<std::string, bool>>{
           {"acme", true}, {"zeta", true}, {"acm", false}, {"acme2", false}, {"", false}}) {
    auto has = store_->HasTenantUsage(tenant);
    ASSERT_TRUE(has.ok()) << has.status();
    EXPECT_EQ(*has, want) << tenant;
  }
  EXPECT_EQ(store_->HasTenantUsage(std::string("a\0b", 3)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tokenmill::storage
