#include "storage/meter_store.h"

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rocksdb/db.h"
#include "storage/inflight_entry.h"
#include "storage/store_layout.h"
#include "storage/usage_merge_operator.h"
#include "tests/storage/temp_dir.h"
#include "tests/support/store_reads.h"

namespace tokenmill::storage {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Pair;

// Collects the op names given to on_error, from any thread.
class ErrorLog {
 public:
  std::function<void(std::string_view)> Callback() {
    return [this](std::string_view op) {
      std::lock_guard<std::mutex> hold(mu_);
      ops_.emplace_back(op);
    };
  }
  std::vector<std::string> ops() {
    std::lock_guard<std::mutex> hold(mu_);
    return ops_;
  }

 private:
  std::mutex mu_;
  std::vector<std::string> ops_;
};

rocksdb::ColumnFamilyOptions InflightOptions() {
  rocksdb::ColumnFamilyOptions options;
  options.merge_operator = std::make_shared<InflightAddOperator>();
  return options;
}

std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

class MeterStoreTest : public ::testing::Test {
 protected:
  MeterStoreOptions Options() {
    MeterStoreOptions options;
    options.dir = tmp_.path() / "data";
    options.on_error = errors_.Callback();
    return options;
  }
  MeterStorePtr OpenStore(const MeterStoreOptions& options) {
    auto store = MeterStore::Open(options);
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? *std::move(store) : nullptr;
  }
  MeterStorePtr OpenStore() { return OpenStore(Options()); }

  testing::TempDir tmp_;
  ErrorLog errors_;
};

UsageCounters Tokens(uint64_t prompt, uint64_t generated, uint64_t requests = 1) {
  UsageCounters c;
  c.prompt_tokens = prompt;
  c.generated_tokens = generated;
  c.requests = requests;
  return c;
}

TEST_F(MeterStoreTest, OpenCreatesDataDirWithMode0750AndLockFileWithPid) {
  const mode_t old_umask = ::umask(022);
  MeterStorePtr store = OpenStore();
  ::umask(old_umask);
  ASSERT_NE(store, nullptr);
  const std::filesystem::path data = tmp_.path() / "data";  // OpenStore's dir
  struct stat st {};
  ASSERT_EQ(::stat(data.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0750u);
  EXPECT_EQ(ReadFile(data / kLockFileName), std::to_string(::getpid()) + "\n");
  EXPECT_TRUE(std::filesystem::is_directory(data / kDbDirName));
}

TEST_F(MeterStoreTest, OpenCreatesMissingParents) {
  MeterStoreOptions options = Options();
  options.dir = tmp_.path() / "a" / "b" / "data";
  EXPECT_NE(OpenStore(options), nullptr);
}

TEST_F(MeterStoreTest, OpenRejectsEmptyDirAndFile) {
  MeterStoreOptions options = Options();
  options.dir.clear();
  EXPECT_EQ(MeterStore::Open(options).status().code(), absl::StatusCode::kInvalidArgument);

  options.dir = tmp_.path() / "file";
  std::ofstream(options.dir) << "x";
  auto store = MeterStore::Open(options);
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(store.status().message(), HasSubstr("not a directory"));
  EXPECT_THAT(errors_.ops(), ElementsAre("open"));
}

// Usage goes in as the metering writer writes it (RecordStep) and comes
// out as the usage API reads it (QueryUsage).
TEST_F(MeterStoreTest, UsageOfStepsAddsUp) {
  MeterStorePtr store = OpenStore();
  ASSERT_NE(store, nullptr);
  const UsageKey key{"acme", "llama", "cuda:0", 480000};
  auto missing = ::tokenmill::testing::UsageAt(*store, key);
  ASSERT_TRUE(missing.ok()) << missing.status();
  EXPECT_FALSE(missing->has_value());

  // The same key twice in one batch adds up too.
  ASSERT_TRUE(
      ::tokenmill::testing::AddUsage(*store, {{key, Tokens(10, 20)}, {key, Tokens(1, 2)}}).ok());
  ASSERT_TRUE(::tokenmill::testing::AddUsage(*store, {{key, Tokens(100, 200)}}).ok());
  auto got = ::tokenmill::testing::UsageAt(*store, key);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ(**got, Tokens(111, 222, 3));
  EXPECT_TRUE(::tokenmill::testing::AddUsage(*store, {}).ok());
  EXPECT_THAT(errors_.ops(), IsEmpty());
}

TEST_F(MeterStoreTest, StepWithAZeroByteInANameWritesNothing) {
  MeterStorePtr store = OpenStore();
  ASSERT_NE(store, nullptr);
  const UsageKey good{"t", "m", "d", 1};
  const UsageKey bad{std::string("t\0x", 3), "m", "d", 1};
  const absl::Status s =
      ::tokenmill::testing::AddUsage(*store, {{good, Tokens(1, 1)}, {bad, Tokens(1, 1)}});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  auto got = ::tokenmill::testing::UsageAt(*store, good);
  ASSERT_TRUE(got.ok());
  EXPECT_FALSE(got->has_value());
  // Rejected arguments are the caller's error, not the store's.
  EXPECT_THAT(errors_.ops(), IsEmpty());
}

TEST_F(MeterStoreTest, ConcurrentStepsSumExactly) {
  MeterStorePtr store = OpenStore();
  ASSERT_NE(store, nullptr);
  const UsageKey shared{"t", "m", "d", 7};
  constexpr int kThreads = 4;
  constexpr int kDeltas = 1000;
  std::vector<std::thread> threads;
  std::vector<absl::Status> results(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const UsageKey own{"t", "m", "d" + std::to_string(t), 7};
      for (int i = 0; i < kDeltas && results[t].ok(); ++i) {
        UsageCounters delta = Tokens(3, 5);
        delta.cost_nusd = 1'000'000'007;
        results[t] = ::tokenmill::testing::AddUsage(*store, {{shared, delta}, {own, Tokens(1, 0)}});
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (const absl::Status& result : results) ASSERT_TRUE(result.ok()) << result;

  auto got = ::tokenmill::testing::UsageAt(*store, shared);
  ASSERT_TRUE(got.ok() && got->has_value());
  UsageCounters want = Tokens(3 * kThreads * kDeltas, 5 * kThreads * kDeltas, kThreads * kDeltas);
  want.cost_nusd = 1'000'000'007ULL * kThreads * kDeltas;
  EXPECT_EQ(**got, want);
  for (int t = 0; t < kThreads; ++t) {
    auto own = ::tokenmill::testing::UsageAt(*store, {"t", "m", "d" + std::to_string(t), 7});
    ASSERT_TRUE(own.ok() && own->has_value());
    EXPECT_EQ(**own, Tokens(kDeltas, 0, kDeltas));
  }
}

TEST_F(MeterStoreTest, ReopenPersistsUsageLedgerAndState) {
  const UsageKey key{"acme", "llama", "cpu", 12};
  {
    MeterStorePtr store = OpenStore();
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(::tokenmill::testing::AddUsage(*store, {{key, Tokens(5, 6)}}).ok());
    ASSERT_TRUE(store->Flush().ok());
    // Operands after the flush live in the memtable and the WAL only.
    ASSERT_TRUE(::tokenmill::testing::AddUsage(*store, {{key, Tokens(1, 1)}}).ok());
    ASSERT_TRUE(::tokenmill::testing::PutLedger(*store, "req-1", R"({"tokens":12})").ok());
    ASSERT_TRUE(store->PutState("tenant/acme", R"({"weight":2})").ok());
  }
  MeterStorePtr store = OpenStore();
  ASSERT_NE(store, nullptr);
  auto usage = ::tokenmill::testing::UsageAt(*store, key);
  ASSERT_TRUE(usage.ok() && usage->has_value());
  EXPECT_EQ(**usage, Tokens(6, 7, 2));
  auto ledger = ::tokenmill::testing::LedgerRecord(*store, "req-1");
  ASSERT_TRUE(ledger.ok() && ledger->has_value());
  EXPECT_EQ(**ledger, R"({"tokens":12})");
  auto state = ::tokenmill::testing::StateValue(*store, "tenant/acme");
  ASSERT_TRUE(state.ok() && state->has_value());
  EXPECT_EQ(**state, R"({"weight":2})");
  EXPECT_THAT(errors_.ops(), IsEmpty());
}

TEST_F(MeterStoreTest, PowerDurabilityWritesAndReopens) {
  MeterStoreOptions options = Options();
  options.durability = Durability::kPower;
  const UsageKey key{"t", "m", "d", 3};
  {
    MeterStorePtr store = OpenStore(options);
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(::tokenmill::testing::AddUsage(*store, {{key, Tokens(1, 2)}}).ok());
    ASSERT_TRUE(::tokenmill::testing::AddUsage(*store, {{key, Tokens(1, 2)}}).ok());
    auto put = ::tokenmill::testing::PutLedger(*store, "r", "rec");
    ASSERT_TRUE(put.ok() && *put);
    ASSERT_TRUE(store->PutState("model/x", "on").ok());
    ASSERT_TRUE(store->DeleteState("model/x").ok());
  }
  MeterStorePtr store = OpenStore(options);
  ASSERT_NE(store, nullptr);
  auto usage = ::tokenmill::testing::UsageAt(*store, key);
  ASSERT_TRUE(usage.ok() && usage->has_value());
  EXPECT_EQ(**usage, Tokens(2, 4, 2));
  auto ledger = ::tokenmill::testing::LedgerRecord(*store, "r");
  ASSERT_TRUE(ledger.ok() && ledger->has_value());
  EXPECT_EQ(**ledger, "rec");
  auto state = ::tokenmill::testing::StateValue(*store, "model/x");
  ASSERT_TRUE(state.ok());
  EXPECT_FALSE(state->has_value());
}

UsageQuery Query(std::string tenant, std::string model, std::string device, uint64_t hour_begin = 0,
                 uint64_t hour_end = UINT64_MAX) {
  UsageQuery query;
  query.tenant = std::move(tenant);
  query.model = std::move(model);
  query.device = std::move(device);
  query.hour_begin = hour_begin;
  query.hour_end = hour_end;
  return query;
}

std::vector<UsageKey> Keys(const absl::StatusOr<std::vector<UsageDelta>>& deltas) {
  std::vector<UsageKey> keys;
  if (!deltas.ok()) {
    ADD_FAILURE() << deltas.status();
    return keys;
  }
  for (const UsageDelta& d : *deltas) keys.push_back(d.key);
  return keys;
}

TEST_F(MeterStoreTest, QueryUsageFiltersAndMergesValues) {
  MeterStorePtr store = OpenStore();
  ASSERT_NE(store, nullptr);
  const UsageKey a_m_d0_255{"a", "m", "d0", 255};
  const UsageKey a_m_d0_256{"a", "m", "d0", 256};
  const UsageKey a_m_d0_300{"a", "m", "d0", 300};
  const UsageKey a_m_d1_256{"a", "m", "d1", 256};
  const UsageKey a_n_d0_256{"a", "n", "d0", 256};
  const UsageKey ab_m_d0_256{"ab", "m", "d0", 256};
  const UsageKey b_m_d1_10{"b", "m", "d1", 10};
  for (const UsageKey& key :
       {b_m_d1_10, ab_m_d0_256, a_n_d0_256, a_m_d1_256, a_m_d0_300, a_m_d0_256, a_m_d0_255}) {
    ASSERT_TRUE(::tokenmill::testing::AddUsage(*store, {{key, Tokens(1, 1)}}).ok());
  }
  ASSERT_TRUE(store->Flush().ok());
  ASSERT_TRUE(::tokenmill::testing::AddUsage(*store, {{a_m_d0_256, Tokens(1, 1)}}).ok());

  auto all = ::tokenmill::testing::UsageDeltas(*store, {});
  EXPECT_THAT(Keys(all), ElementsAre(a_m_d0_255, a_m_d0_256, a_m_d0_300, a_m_d1_256, a_n_d0_256,
                                     ab_m_d0_256, b_m_d1_10));
  ASSERT_TRUE(all.ok());
  EXPECT_EQ((*all)[1].counters, Tokens(2, 2, 2));  // merged across SST and memtable
  EXPECT_EQ((*all)[0].counters, Tokens(1, 1, 1));

  EXPECT_THAT(Keys(::tokenmill::testing::UsageDeltas(*store, Query("a", "", ""))),
              ElementsAre(a_m_d0_255, a_m_d0_256, a_m_d0_300, a_m_d1_256, a_n_d0_256));
  EXPECT_THAT(Keys(::tokenmill::testing::UsageDeltas(*store, Query("a", "m", ""))),
              ElementsAre(a_m_d0_255, a_m_d0_256, a_m_d0_300, a_m_d1_256));
  EXPECT_THAT(Keys(::tokenmill::testing::UsageDeltas(*store, Query("a", "m", "d0", 256, 300))),
              ElementsAre(a_m_d0_256));
  EXPECT_THAT(Keys(::tokenmill::testing::UsageDeltas(*store, Query("a", "", "d1"))),
              ElementsAre(a_m_d1_256));
  EXPECT_THAT(Keys(::tokenmill::testing::UsageDeltas(*store, Query("", "m", "d1"))),
              ElementsAre(a_m_d1_256, b_m_d1_10));
  EXPECT_THAT(Keys(::tokenmill::testing::UsageDeltas(*store, Query("", "", "", 256, 257))),
              ElementsAre(a_m_d0_256, a_m_d1_256, a_n_d0_256, ab_m_d0_256));
  EXPECT_THAT(Keys(::tokenmill::testing::UsageDeltas(*store, Query("zz", "", ""))), IsEmpty());
  EXPECT_THAT(Keys(::tokenmill::testing::UsageDeltas(*store, Query("", "", "", 5, 5))), IsEmpty());
}

TEST_F(MeterStoreTest, LedgerKeepsTheFirstRecord) {
  MeterStorePtr store = OpenStore();
  ASSERT_NE(store, nullptr);
  auto first = ::tokenmill::testing::PutLedger(*store, "req-7", "first");
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_TRUE(*first);
  auto second = ::tokenmill::testing::PutLedger(*store, "req-7", "second");
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_FALSE(*second);
  auto got = ::tokenmill::testing::LedgerRecord(*store, "req-7");
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ(**got, "first");
  auto missing = ::tokenmill::testing::LedgerRecord(*store, "req-8");
  ASSERT_TRUE(missing.ok());
  EXPECT_FALSE(missing->has_value());
}

TEST_F(MeterStoreTest, ConcurrentEndsOfOneRequestWriteItsRecordOnce) {
  MeterStorePtr store = OpenStore();
  ASSERT_NE(store, nullptr);
  std::atomic<int> written{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        auto put = ::tokenmill::testing::PutLedger(*store, "req-" + std::to_string(i),
                                                   "by " + std::to_string(t));
        if (put.ok() && *put) ++written;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(written.load(), 200);
}

TEST_F(MeterStoreTest, LedgerRejectsEmptyAndOverlongIds) {
  MeterStorePtr store = OpenStore();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(::tokenmill::testing::PutLedger(*store, "", "r").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(::tokenmill::testing::PutLedger(*store, std::string(257, 'x'), "r").status().code(),
            absl::StatusCode::kInvalidArgument);
  auto longest = ::tokenmill::testing::PutLedger(*store, std::string(256, 'x'), "r");
  ASSERT_TRUE(longest.ok()) << longest.status();
  EXPECT_TRUE(*longest);
  // Ids are opaque bytes, 0x00 included.
  auto binary = ::tokenmill::testing::PutLedger(*store, std::string("a\0b", 3), "r");
  ASSERT_TRUE(binary.ok()) << binary.status();
  EXPECT_TRUE(*binary);
  EXPECT_THAT(errors_.ops(), IsEmpty());
}

TEST_F(MeterStoreTest, StateCrudAndPrefixListing) {
  MeterStorePtr store = OpenStore();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->PutState("tenant/b", "B").ok());
  ASSERT_TRUE(store->PutState("tenant/a", "A").ok());
  ASSERT_TRUE(store->PutState("model/x", "X").ok());
  ASSERT_TRUE(store->PutState("tenantz", "Z").ok());
  ASSERT_TRUE(store->PutState("tenant/a", "A2").ok());  // overwrite

  auto a = ::tokenmill::testing::StateValue(*store, "tenant/a");
  ASSERT_TRUE(a.ok() && a->has_value());
  EXPECT_EQ(**a, "A2");

  auto tenants = store->ListState("tenant/");
  ASSERT_TRUE(tenants.ok()) << tenants.status();
  EXPECT_THAT(*tenants, ElementsAre(Pair("tenant/a", "A2"), Pair("tenant/b", "B")));
  auto all = store->ListState("");
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 4u);
  EXPECT_EQ(all->front().first, "model/x");

  ASSERT_TRUE(store->DeleteState("tenant/a").ok());
  ASSERT_TRUE(store->DeleteState("never/there").ok());
  auto gone = ::tokenmill::testing::StateValue(*store, "tenant/a");
  ASSERT_TRUE(gone.ok());
  EXPECT_FALSE(gone->has_value());
  tenants = store->ListState("tenant/");
  ASSERT_TRUE(tenants.ok());
  EXPECT_THAT(*tenants, ElementsAre(Pair("tenant/b", "B")));
  auto none = store->ListState("zzz");
  ASSERT_TRUE(none.ok());
  EXPECT_THAT(*none, IsEmpty());

  EXPECT_EQ(store->PutState("", "v").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store->DeleteState("").code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(MeterStoreTest, ListStateHandlesPrefixEndingIn0xff) {
  MeterStorePtr store = OpenStore();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->PutState("k\xff\x01", "1").ok());
  ASSERT_TRUE(store->PutState("k\xff", "0").ok());
  ASSERT_TRUE(store->PutState("l", "2").ok());
  auto listed = store->ListState("k\xff");
  ASSERT_TRUE(listed.ok());
  EXPECT_THAT(*listed, ElementsAre(Pair("k\xff", "0"), Pair("k\xff\x01", "1")));
}

TEST_F(MeterStoreTest, SecondOpenOfTheSameDirIsRefused) {
  MeterStorePtr first = OpenStore();
  ASSERT_NE(first, nullptr);
  auto second = MeterStore::Open(Options());
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(second.status().message(), "data dir " + Options().dir.string() +
                                           " is in use by another tokenmilld (pid " +
                                           std::to_string(::getpid()) + ")");
  EXPECT_THAT(errors_.ops(), ElementsAre("open"));
  // The refused open must not have disturbed the owner.
  EXPECT_TRUE(first->PutState("k", "v").ok());
}

TEST_F(MeterStoreTest, ClosingReleasesTheDataDir) {
  ASSERT_NE(OpenStore(), nullptr);
  EXPECT_NE(OpenStore(), nullptr);
}

TEST_F(MeterStoreTest, StaleLockFileOfADeadOwnerDoesNotBlock) {
  std::filesystem::create_directories(Options().dir);
  std::ofstream(Options().dir / kLockFileName) << "999999999999\n";
  MeterStorePtr store = OpenStore();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(ReadFile(Options().dir / kLockFileName), std::to_string(::getpid()) + "\n");
}

TEST_F(MeterStoreTest, RocksDbLockHeldElsewhereIsFailedPrecondition) {
  const std::filesystem::path db_path = Options().dir / kDbDirName;
  std::filesystem::create_directories(db_path);
  rocksdb::Options options;
  options.create_if_missing = true;
  rocksdb::DB* raw = nullptr;
  ASSERT_TRUE(rocksdb::DB::Open(options, db_path.string(), &raw).ok());
  std::unique_ptr<rocksdb::DB> holder(raw);

  auto store = MeterStore::Open(Options());
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(store.status().message(), HasSubstr("is in use by another tokenmilld"));
  EXPECT_THAT(errors_.ops(), ElementsAre("open"));
  ASSERT_TRUE(holder->Close().ok());
  holder.reset();
  EXPECT_NE(OpenStore(), nullptr);
}

// Writes malformed usage values behind the store's back, as a bad disk would.
TEST_F(MeterStoreTest, MalformedUsageIsDataLossAndReported) {
  ASSERT_NE(OpenStore(), nullptr);  // creates the column families
  {
    rocksdb::DBOptions db_options;
    rocksdb::ColumnFamilyOptions usage_options;
    usage_options.merge_operator = std::make_shared<UsageAddOperator>();
    std::vector<rocksdb::ColumnFamilyDescriptor> families = {
        {rocksdb::kDefaultColumnFamilyName, {}},
        {std::string(kUsageFamily), usage_options},
        {std::string(kLedgerFamily), {}},
        {std::string(kStateFamily), {}},
        {std::string(kInflightFamily), InflightOptions()},
        {std::string(kLedgerSeqFamily), {}}};
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* raw = nullptr;
    ASSERT_TRUE(rocksdb::DB::Open(db_options, (Options().dir / kDbDirName).string(), families,
                                  &handles, &raw)
                    .ok());
    std::unique_ptr<rocksdb::DB> db(raw);
    ASSERT_TRUE(db->Put({}, handles[1], EncodeUsageKey({"t", "m", "short", 1}), "abc").ok());
    ASSERT_TRUE(db->Put({}, handles[1], EncodeUsageKey({"t", "m", "merged", 1}), "abc").ok());
    ASSERT_TRUE(db->Put({}, handles[1], "no separators here", EncodeUsageCounters({})).ok());
    // Flushed first: a flush or compaction that meets a failing merge stops the
    // whole database, so the bad base and the operand must meet on a read.
    ASSERT_TRUE(db->Flush({}, handles[1]).ok());
    ASSERT_TRUE(
        db->Merge({}, handles[1], EncodeUsageKey({"t", "m", "merged", 1}), EncodeUsageCounters({}))
            .ok());
    for (auto* handle : handles) ASSERT_TRUE(db->DestroyColumnFamilyHandle(handle).ok());
    ASSERT_TRUE(db->Close().ok());
  }
  MeterStorePtr store = OpenStore();
  ASSERT_NE(store, nullptr);
  auto short_value = ::tokenmill::testing::UsageAt(*store, {"t", "m", "short", 1});
  EXPECT_EQ(short_value.status().code(), absl::StatusCode::kDataLoss);
  auto merged = ::tokenmill::testing::UsageAt(*store, {"t", "m", "merged", 1});
  EXPECT_EQ(merged.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(merged.status().message(), HasSubstr("scan_usage"));
  auto scanned = ::tokenmill::testing::UsageDeltas(*store, {});
  EXPECT_EQ(scanned.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(errors_.ops(), ElementsAre("scan_usage", "scan_usage", "scan_usage"));
}

}  // namespace
}  // namespace tokenmill::storage
