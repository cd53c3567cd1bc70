// MeterStore's metering path: steps of requests in flight, their end, and
// recovery of requests a crash interrupted, within one process (the SIGKILL
// case is in meter_store_process_test.cc).
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rocksdb/db.h"
#include "storage/inflight_entry.h"
#include "storage/meter_store.h"
#include "storage/store_layout.h"
#include "storage/usage_merge_operator.h"
#include "tests/storage/ledger_json.h"
#include "tests/storage/temp_dir.h"
#include "tests/support/store_reads.h"

namespace tokenmill::storage {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using testing::LedgerCounters;
using testing::LedgerFields;
using testing::LedgerJson;

constexpr uint64_t kHour = 480'000;  // an hour in 2024, unix seconds / 3600

class MeteringTest : public ::testing::Test {
 protected:
  MeterStoreOptions Options() {
    MeterStoreOptions options;
    options.dir = tmp_.path() / "data";
    options.on_error = [this](std::string_view op) {
      std::lock_guard<std::mutex> hold(mu_);
      errors_.emplace_back(op);
    };
    return options;
  }
  MeterStorePtr OpenStore(const MeterStoreOptions& options) {
    auto store = MeterStore::Open(options);
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? *std::move(store) : nullptr;
  }
  MeterStorePtr OpenStore() { return OpenStore(Options()); }
  // Checks the running in-flight total against a scan of the entries: Open seeds the total with
  // one scan, so a reopened store's total is the scan's. Leaves `store` reopened.
  void ExpectRunningTotalMatchesAScan(MeterStorePtr& store) {
    const UsageCounters running = store->InflightTotal();
    store.reset();
    store = OpenStore();
    ASSERT_NE(store, nullptr);
    EXPECT_EQ(store->InflightTotal(), running);
  }
  std::vector<std::string> errors() {
    std::lock_guard<std::mutex> hold(mu_);
    return errors_;
  }

  testing::TempDir tmp_;
  std::mutex mu_;
  std::vector<std::string> errors_;
};

UsageCounters Delta(uint64_t prompt, uint64_t generated, uint64_t cost, uint64_t revenue) {
  UsageCounters c;
  c.prompt_tokens = prompt;
  c.generated_tokens = generated;
  c.cost_nusd = cost;
  c.revenue_nusd = revenue;
  return c;
}

UsageCounters OneRequest() {
  UsageCounters c;
  c.requests = 1;
  return c;
}

// A step as the metering writer builds it: each request's delta, and usage
// aggregated per (tenant, model, device) with the step's device time.
StepRecord Step(const std::vector<RequestProgress>& requests, uint64_t hour,
                uint64_t device_ns = 1000) {
  StepRecord step;
  step.requests = requests;
  for (const RequestProgress& r : requests) {
    UsageDelta* found = nullptr;
    for (UsageDelta& d : step.usage) {
      if (d.key.tenant == r.tenant && d.key.model == r.model && d.key.device == r.device)
        found = &d;
    }
    if (found == nullptr) {
      step.usage.push_back({{r.tenant, r.model, r.device, hour}, {}});
      step.usage.back().counters.device_ns = device_ns;
      found = &step.usage.back();
    }
    found->counters += r.delta;
  }
  return step;
}

RequestProgress Progress(std::string id, std::string tenant, const UsageCounters& delta) {
  RequestProgress p;
  p.request_id = std::move(id);
  p.tenant = std::move(tenant);
  p.model = "llama";
  p.device = "cuda:0";
  p.delta = delta;
  return p;
}

UsageCounters SumUsage(MeterStore& store) {
  UsageCounters sum;
  auto all = ::tokenmill::testing::UsageDeltas(store, {});
  EXPECT_TRUE(all.ok()) << all.status();
  if (all.ok()) {
    for (const UsageDelta& d : *all) sum += d.counters;
  }
  return sum;
}

UsageCounters SumLedger(MeterStore& store) {
  UsageCounters sum;
  EXPECT_TRUE(::tokenmill::testing::ForEachLedgerRecord(store, [&](std::string_view,
                                                                   std::string_view record) {
                sum += LedgerCounters(record);
                return true;
              }).ok());
  return sum;
}

TEST_F(MeteringTest, RecordStepAddsUsageAndInflightInOneWrite) {
  MeterStorePtr store = OpenStore();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store
                  ->RecordStep(Step({Progress("a", "acme", Delta(5, 1, 100, 200)),
                                     Progress("b", "acme", Delta(7, 1, 110, 220)),
                                     Progress("c", "globex", Delta(3, 1, 90, 180))},
                                    kHour))
                  .ok());
  ASSERT_TRUE(store
                  ->RecordStep(Step({Progress("a", "acme", Delta(0, 1, 10, 20)),
                                     Progress("c", "globex", Delta(0, 1, 9, 18))},
                                    kHour))
                  .ok());
  auto acme = ::tokenmill::testing::UsageAt(*store, {"acme", "llama", "cuda:0", kHour});
  ASSERT_TRUE(acme.ok() && acme->has_value()) << acme.status();
  UsageCounters want = Delta(12, 3, 220, 440);
  want.device_ns = 2000;
  EXPECT_EQ(**acme, want);
  ExpectRunningTotalMatchesAScan(store);
  EXPECT_EQ(store->InflightTotal(), Delta(15, 5, 319, 638));
  EXPECT_EQ(LedgerFields(SumUsage(*store)), store->InflightTotal());
  EXPECT_THAT(errors(), IsEmpty());
}

TEST_F(MeteringTest, FinishRequestMovesTheRequestToTheLedgerOnce) {
  MeterStorePtr store = OpenStore();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store
                  ->RecordStep(Step({Progress("a", "acme", Delta(5, 1, 100, 200)),
                                     Progress("b", "acme", Delta(7, 1, 110, 220))},
                                    kHour))
                  .ok());
  const UsageKey key{"acme", "llama", "cuda:0", kHour};
  // The last token is counted at the end (a final count no step recorded).
  UsageCounters final_usage = Delta(0, 1, 10, 20);
  final_usage.requests = 1;
  const std::string record = LedgerJson("a", Delta(5, 2, 110, 220), "stop");
  auto first = store->FinishRequest("a", record, {{key, final_usage}});
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_TRUE(*first);
  auto second = store->FinishRequest("a", LedgerJson("a", {}, "retry"), {{key, final_usage}});
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_FALSE(*second);

  auto ledger = ::tokenmill::testing::LedgerRecord(*store, "a");
  ASSERT_TRUE(ledger.ok() && ledger->has_value());
  EXPECT_EQ(**ledger, record);
  auto usage = ::tokenmill::testing::UsageAt(*store, key);
  ASSERT_TRUE(usage.ok() && usage->has_value());
  EXPECT_EQ((*usage)->requests, 1u);
  EXPECT_EQ((*usage)->generated_tokens, 3u);  // 2 steps' tokens + the final one, not doubled
  ExpectRunningTotalMatchesAScan(store);
  EXPECT_EQ(store->InflightTotal(), Delta(7, 1, 110, 220));  // only b is left
}

TEST_F(MeteringTest, BadArgumentsAreRejectedAndWriteNothing) {
  MeterStorePtr store = OpenStore();
  ASSERT_NE(store, nullptr);
  RequestProgress good = Progress("a", "acme", Delta(1, 1, 1, 1));
  RequestProgress no_id = Progress("", "acme", Delta(1, 1, 1, 1));
  RequestProgress bad_name = Progress("b", std::string("ac\0me", 5), Delta(1, 1, 1, 1));
  for (const RequestProgress& bad : {no_id, bad_name}) {
    StepRecord step = Step({good}, kHour);
    step.requests.push_back(bad);
    EXPECT_EQ(store->RecordStep(step).code(), absl::StatusCode::kInvalidArgument);
  }
  EXPECT_EQ(store->FinishRequest(std::string(257, 'x'), "{}", {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto usage = ::tokenmill::testing::UsageDeltas(*store, {});
  ASSERT_TRUE(usage.ok());
  EXPECT_THAT(*usage, IsEmpty());
  ExpectRunningTotalMatchesAScan(store);
  EXPECT_EQ(store->InflightTotal(), UsageCounters{});
  EXPECT_TRUE(store->RecordStep({}).ok());  // an empty step is a no-op
  EXPECT_THAT(errors(), IsEmpty());
}

TEST_F(MeteringTest, RecoveryAfterReopenLedgersEveryInterruptedRequestOnce) {
  {
    MeterStorePtr store = OpenStore();
    ASSERT_NE(store, nullptr);
    for (uint64_t i = 0; i < 5; ++i) {
      std::vector<RequestProgress> requests = {
          Progress("r1", "acme", Delta(i == 0 ? 9 : 0, 1, 100 + i, 300 + i)),
          Progress("r2", "globex", Delta(i == 0 ? 4 : 0, 1, 50 + i, 70 + i))};
      if (i >= 2) requests.push_back(Progress("r3", "acme", Delta(i == 2 ? 6 : 0, 1, 11, 13)));
      ASSERT_TRUE(store->RecordStep(Step(requests, kHour)).ok());
    }
    // r2 ends before the "crash"; r1 and r3 do not.
    UsageCounters r2_total = Delta(4, 5, 260, 360);
    ASSERT_TRUE(store
                    ->FinishRequest("r2", LedgerJson("r2", r2_total, "stop"),
                                    {{{"globex", "llama", "cuda:0", kHour}, OneRequest()}})
                    .ok());
  }  // closed without finishing r1 and r3, as a crash leaves them

  MeterStorePtr store = OpenStore();
  ASSERT_NE(store, nullptr);
  // Seeded at open from what the "crash" left: r1 and r3.
  UsageCounters left = Delta(9, 5, 510, 1510);
  left += Delta(6, 3, 33, 39);
  EXPECT_EQ(store->InflightTotal(), left);
  std::vector<InterruptedRequest> seen;
  auto recovered = store->RecoverInterrupted([&](const InterruptedRequest& r) {
    seen.push_back(r);
    return LedgerJson(r.request_id, r.counters, "interrupted");
  });
  ASSERT_TRUE(recovered.ok()) << recovered.status();
  EXPECT_EQ(*recovered, 2u);
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0].request_id, "r1");
  EXPECT_EQ(seen[0].tenant, "acme");
  EXPECT_EQ(seen[0].model, "llama");
  EXPECT_EQ(seen[0].device, "cuda:0");
  EXPECT_EQ(seen[0].hour, kHour);
  EXPECT_EQ(seen[0].counters, Delta(9, 5, 510, 1510));
  EXPECT_EQ(seen[1].request_id, "r3");
  EXPECT_EQ(seen[1].counters, Delta(6, 3, 33, 39));

  auto r1 = ::tokenmill::testing::LedgerRecord(*store, "r1");
  ASSERT_TRUE(r1.ok() && r1->has_value());
  EXPECT_THAT(**r1, HasSubstr("interrupted"));
  // The invariants: the ledger sums to usage, requests count the records.
  const UsageCounters usage = SumUsage(*store);
  const UsageCounters ledger = SumLedger(*store);
  EXPECT_EQ(usage.requests, 3u);
  EXPECT_EQ(LedgerFields(usage), ledger);
  ExpectRunningTotalMatchesAScan(store);
  EXPECT_EQ(store->InflightTotal(), UsageCounters{});

  auto again = store->RecoverInterrupted([](const InterruptedRequest&) { return "{}"; });
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, 0u);
  EXPECT_EQ(SumUsage(*store), usage);
}

TEST_F(MeteringTest, RecoveryCountsTheRequestInTheHourOfItsFirstStep) {
  MeterStorePtr store = OpenStore();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->RecordStep(Step({Progress("x", "acme", Delta(8, 1, 1, 2))}, kHour)).ok());
  ASSERT_TRUE(store->RecordStep(Step({Progress("x", "acme", Delta(0, 1, 1, 2))}, kHour + 1)).ok());
  // An explicit hour wins over the step's usage.
  RequestProgress explicit_hour = Progress("y", "acme", Delta(1, 1, 1, 1));
  explicit_hour.hour = kHour - 5;
  ASSERT_TRUE(store->RecordStep(Step({explicit_hour}, kHour + 1)).ok());

  auto recovered = store->RecoverInterrupted(
      [](const InterruptedRequest& r) { return LedgerJson(r.request_id, r.counters, "x"); });
  ASSERT_TRUE(recovered.ok());
  EXPECT_EQ(*recovered, 2u);
  auto first_hour = ::tokenmill::testing::UsageAt(*store, {"acme", "llama", "cuda:0", kHour});
  auto second_hour = ::tokenmill::testing::UsageAt(*store, {"acme", "llama", "cuda:0", kHour + 1});
  auto given_hour = ::tokenmill::testing::UsageAt(*store, {"acme", "llama", "cuda:0", kHour - 5});
  ASSERT_TRUE(first_hour.ok() && first_hour->has_value());
  ASSERT_TRUE(second_hour.ok() && second_hour->has_value());
  ASSERT_TRUE(given_hour.ok() && given_hour->has_value());
  EXPECT_EQ((*first_hour)->requests, 1u);
  EXPECT_EQ((*second_hour)->requests, 0u);
  EXPECT_EQ((*given_hour)->requests, 1u);
  EXPECT_EQ((*given_hour)->generated_tokens, 0u);  // its tokens went to the step's hour
}

TEST_F(MeteringTest, RecoveryOnlyDeletesEntriesWhoseIdIsInTheLedger) {
  MeterStorePtr store = OpenStore();
  ASSERT_NE(store, nullptr);
  auto put =
      ::tokenmill::testing::PutLedger(*store, "dup", LedgerJson("dup", Delta(1, 1, 1, 1), "stop"));
  ASSERT_TRUE(put.ok() && *put);
  ASSERT_TRUE(store->RecordStep(Step({Progress("dup", "acme", Delta(2, 2, 2, 2))}, kHour)).ok());
  bool called = false;
  auto recovered = store->RecoverInterrupted([&](const InterruptedRequest&) {
    called = true;
    return std::string("{}");
  });
  ASSERT_TRUE(recovered.ok());
  EXPECT_EQ(*recovered, 0u);
  EXPECT_FALSE(called);
  auto record = ::tokenmill::testing::LedgerRecord(*store, "dup");
  ASSERT_TRUE(record.ok() && record->has_value());
  EXPECT_EQ(LedgerCounters(**record), [] {
    UsageCounters c = Delta(1, 1, 1, 1);
    c.requests = 1;
    return c;
  }());
  ExpectRunningTotalMatchesAScan(store);
  EXPECT_EQ(store->InflightTotal(), UsageCounters{});
  EXPECT_EQ(SumUsage(*store).requests, 0u);
}

TEST_F(MeteringTest, PowerDurabilityRecordsAndFinishes) {
  MeterStoreOptions options = Options();
  options.durability = Durability::kPower;
  {
    MeterStorePtr store = OpenStore(options);
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(store->RecordStep(Step({Progress("p", "acme", Delta(3, 1, 5, 7))}, kHour)).ok());
    auto finished = store->FinishRequest("p", LedgerJson("p", Delta(3, 1, 5, 7), "stop"),
                                         {{{"acme", "llama", "cuda:0", kHour}, OneRequest()}});
    ASSERT_TRUE(finished.ok() && *finished);
  }
  MeterStorePtr store = OpenStore(options);
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(LedgerFields(SumUsage(*store)), SumLedger(*store));
  EXPECT_EQ(SumUsage(*store).requests, 1u);
}

// Operands flushed to SST files (merged there by the operator) and operands
// still in the memtable add up; deletes of finished requests hold across it.
TEST_F(MeteringTest, RecoveryAddsFlushedAndUnflushedProgress) {
  {
    MeterStorePtr store = OpenStore();
    ASSERT_NE(store, nullptr);
    for (int i = 0; i < 40; ++i) {
      std::vector<RequestProgress> requests;
      for (int r = 0; r < 8; ++r) {
        if (r % 2 == 1 && i >= 30) continue;  // odd requests finished at step 30
        requests.push_back(Progress("q" + std::to_string(r), r < 4 ? "acme" : "globex",
                                    Delta(i == 0 ? 10 : 0, 1, 100 + r, 200 + r)));
      }
      ASSERT_TRUE(store->RecordStep(Step(requests, kHour)).ok());
      if (i == 29) {
        for (int r = 1; r < 8; r += 2) {
          const std::string id = "q" + std::to_string(r);
          auto done = store->FinishRequest(
              id, LedgerJson(id, Delta(10, 30, 30 * (100 + r), 30 * (200 + r)), "stop"),
              {{{r < 4 ? "acme" : "globex", "llama", "cuda:0", kHour}, OneRequest()}});
          ASSERT_TRUE(done.ok() && *done);
        }
      }
      if (i == 15 || i == 35) {
        ASSERT_TRUE(store->Flush().ok());
      }
    }
  }
  MeterStorePtr store = OpenStore();
  ASSERT_NE(store, nullptr);
  ExpectRunningTotalMatchesAScan(store);
  EXPECT_EQ(store->InflightTotal().generated_tokens, 4u * 40u);
  auto recovered = store->RecoverInterrupted(
      [](const InterruptedRequest& r) { return LedgerJson(r.request_id, r.counters, "x"); });
  ASSERT_TRUE(recovered.ok()) << recovered.status();
  EXPECT_EQ(*recovered, 4u);
  auto q2 = ::tokenmill::testing::LedgerRecord(*store, "q2");
  ASSERT_TRUE(q2.ok() && q2->has_value());
  UsageCounters want = Delta(10, 40, 40 * 102, 40 * 202);
  want.requests = 1;
  EXPECT_EQ(LedgerCounters(**q2), want);
  const UsageCounters usage = SumUsage(*store);
  EXPECT_EQ(usage.requests, 8u);
  EXPECT_EQ(LedgerFields(usage), SumLedger(*store));
}

// A damaged entry stops recovery with kDataLoss, reported as "recover".
TEST_F(MeteringTest, MalformedInflightEntryIsDataLoss) {
  ASSERT_NE(OpenStore(), nullptr);  // creates the column families
  {
    rocksdb::ColumnFamilyOptions usage_options;
    usage_options.merge_operator = std::make_shared<UsageAddOperator>();
    rocksdb::ColumnFamilyOptions inflight_options;
    inflight_options.merge_operator = std::make_shared<InflightAddOperator>();
    std::vector<rocksdb::ColumnFamilyDescriptor> families = {
        {rocksdb::kDefaultColumnFamilyName, {}},
        {std::string(kUsageFamily), usage_options},
        {std::string(kLedgerFamily), {}},
        {std::string(kStateFamily), {}},
        {std::string(kInflightFamily), inflight_options},
        {std::string(kLedgerSeqFamily), {}}};
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* raw = nullptr;
    ASSERT_TRUE(
        rocksdb::DB::Open({}, (Options().dir / kDbDirName).string(), families, &handles, &raw)
            .ok());
    std::unique_ptr<rocksdb::DB> db(raw);
    ASSERT_TRUE(db->Put({}, handles[4], "torn", "abc").ok());
    for (auto* handle : handles) ASSERT_TRUE(db->DestroyColumnFamilyHandle(handle).ok());
    ASSERT_TRUE(db->Close().ok());
  }
  MeterStorePtr store = OpenStore();
  ASSERT_NE(store, nullptr);
  auto recovered = store->RecoverInterrupted([](const InterruptedRequest&) { return "{}"; });
  EXPECT_EQ(recovered.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(recovered.status().message(), HasSubstr("torn"));
  // Open's seed of the running total skips the torn entry and leaves it to recovery.
  EXPECT_EQ(store->InflightTotal(), UsageCounters{});
  EXPECT_THAT(errors(), ElementsAre("recover"));
}

}  // namespace
}  // namespace tokenmill::storage
