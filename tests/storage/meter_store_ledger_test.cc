// MeterStore's ledger writers and the ledger in commit order: per-id locks
// (ends of different requests do not wait on each other), the ledger_seq
// index, its watermark, its recovery at reopen and the indexing of a store
// written before the index existed.
#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
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
using testing::LedgerJson;

// A waiting bound for conditions that hold at once when the code is right.
constexpr absl::Duration kDeadline = absl::Seconds(20);

// The stripe FinishRequest locks for an id (meter_store_ledger.cc): the test
// picks ids on different stripes so that only a global lock can make them wait.
size_t Stripe(std::string_view id) { return std::hash<std::string_view>{}(id) % 64; }

class LedgerTest : public ::testing::Test {
 protected:
  MeterStoreOptions Options() {
    MeterStoreOptions options;
    options.dir = tmp_.path() / "data";
    options.before_ledger_write = [this](std::string_view id) {
      if (hook_) hook_(id);
    };
    return options;
  }
  MeterStorePtr OpenStore() {
    auto store = MeterStore::Open(Options());
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? *std::move(store) : nullptr;
  }
  std::vector<std::string> Ids(const LedgerPage& page) {
    std::vector<std::string> ids;
    for (const LedgerEntry& e : page.entries) ids.push_back(e.request_id);
    return ids;
  }
  std::vector<uint64_t> Seqs(const LedgerPage& page) {
    std::vector<uint64_t> seqs;
    for (const LedgerEntry& e : page.entries) seqs.push_back(e.seq);
    return seqs;
  }

  testing::TempDir tmp_;
  // Set before the store writes; read by writer threads only after that.
  std::function<void(std::string_view)> hook_;
};

// Holds FinishRequest("slow") inside its write while another request ends.
// With one global ledger lock (the old code) "fast" waits for "slow" and the
// deadline passes.
TEST_F(LedgerTest, EndsOfDifferentRequestsDoNotWaitOnEachOther) {
  const std::string slow = "slow";
  std::string fast = "fast-0";
  for (int i = 1; Stripe(fast) == Stripe(slow); ++i) fast = "fast-" + std::to_string(i);

  absl::Notification slow_writing, release_slow;
  hook_ = [&](std::string_view id) {
    if (id != slow) return;
    slow_writing.Notify();
    release_slow.WaitForNotification();
  };
  MeterStorePtr store = OpenStore();
  ASSERT_NE(store, nullptr);
  std::thread slow_thread([&] {
    auto done = store->FinishRequest(slow, LedgerJson(slow, {}, "stop"), {});
    EXPECT_TRUE(done.ok() && *done);
  });
  ASSERT_TRUE(slow_writing.WaitForNotificationWithTimeout(kDeadline));

  absl::Notification fast_done;
  std::thread fast_thread([&] {
    auto done = store->FinishRequest(fast, LedgerJson(fast, {}, "stop"), {});
    EXPECT_TRUE(done.ok() && *done);
    fast_done.Notify();
  });
  const bool fast_finished_meanwhile = fast_done.WaitForNotificationWithTimeout(kDeadline);
  release_slow.Notify();
  slow_thread.join();
  fast_thread.join();
  EXPECT_TRUE(fast_finished_meanwhile) << "FinishRequest(" << fast << ") waited for " << slow;

  // While "slow" held sequence 1, "fast" committed 2: the watermark kept the
  // export below 1 (see LedgerWatermark); now both are readable, in order.
  auto page = store->ReadLedgerPage(0, UINT64_MAX, 10);
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_THAT(Ids(*page), ElementsAre(slow, fast));
  EXPECT_THAT(Seqs(*page), ElementsAre(1, 2));
}

// A record that commits after a later-numbered one is never skipped: reads
// stop at the lowest sequence still being written.
TEST_F(LedgerTest, ReadsStopBelowTheLowestWriteInProgress) {
  absl::Notification a_writing, release_a;
  hook_ = [&](std::string_view id) {
    if (id != "a") return;
    a_writing.Notify();
    release_a.WaitForNotification();
  };
  MeterStorePtr store = OpenStore();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(::tokenmill::testing::PutLedger(*store, "first", "{}").ok());
  std::thread a_thread([&] { EXPECT_TRUE(store->FinishRequest("a", "{}", {}).ok()); });
  ASSERT_TRUE(a_writing.WaitForNotificationWithTimeout(kDeadline));
  std::string b = "b";
  for (int i = 0; Stripe(b) == Stripe("a"); ++i) b = "b" + std::to_string(i);
  absl::Notification b_done;
  std::thread b_thread([&] {
    EXPECT_TRUE(store->FinishRequest(b, "{}", {}).ok());  // sequence 3, committed
    b_done.Notify();
  });
  if (!b_done.WaitForNotificationWithTimeout(kDeadline)) {
    release_a.Notify();
    a_thread.join();
    b_thread.join();
    FAIL() << "FinishRequest(" << b << ") waited for a";
  }
  b_thread.join();

  EXPECT_EQ(store->LedgerWatermark(), 2u);
  auto page = store->ReadLedgerPage(0, UINT64_MAX, 10);
  ASSERT_TRUE(page.ok());
  EXPECT_THAT(Ids(*page), ElementsAre("first"));
  EXPECT_EQ(page->last_seq, 1u);  // a consumer resumes after 1, not after 3

  release_a.Notify();
  a_thread.join();
  EXPECT_EQ(store->LedgerWatermark(), 4u);
  page = store->ReadLedgerPage(page->last_seq, UINT64_MAX, 10);
  ASSERT_TRUE(page.ok());
  EXPECT_THAT(Ids(*page), ElementsAre("a", b));
  EXPECT_THAT(Seqs(*page), ElementsAre(2, 3));
  EXPECT_EQ(page->last_seq, 3u);
}

TEST_F(LedgerTest, PagesCoverTheLedgerOnceInCommitOrder) {
  MeterStorePtr store = OpenStore();
  ASSERT_NE(store, nullptr);
  for (const char* id : {"z", "y", "x", "w", "v"}) {
    ASSERT_TRUE(::tokenmill::testing::PutLedger(*store, id, std::string("rec-") + id).ok());
  }
  ASSERT_FALSE(
      *::tokenmill::testing::PutLedger(*store, "y", "again"));  // a duplicate takes no sequence
  auto first = store->ReadLedgerPage(0, UINT64_MAX, 2);
  ASSERT_TRUE(first.ok());
  EXPECT_THAT(Ids(*first), ElementsAre("z", "y"));
  EXPECT_EQ(first->entries[1].record, "rec-y");
  EXPECT_EQ(first->last_seq, 2u);
  auto second = store->ReadLedgerPage(first->last_seq, 4, 10);  // through bounds the window
  ASSERT_TRUE(second.ok());
  EXPECT_THAT(Ids(*second), ElementsAre("x", "w"));
  EXPECT_EQ(second->last_seq, 4u);
  auto last = store->ReadLedgerPage(second->last_seq, UINT64_MAX, 10);
  ASSERT_TRUE(last.ok());
  EXPECT_THAT(Ids(*last), ElementsAre("v"));
  EXPECT_EQ(last->last_seq, 5u);
  auto empty = store->ReadLedgerPage(last->last_seq, UINT64_MAX, 10);
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->entries.empty());
  EXPECT_EQ(empty->last_seq, 5u);
}

TEST_F(LedgerTest, SequencesContinueAfterReopenAndRecovery) {
  {
    MeterStorePtr store = OpenStore();
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(store->FinishRequest("done", "{}", {}).ok());
    RequestProgress progress;
    progress.request_id = "cut";
    progress.tenant = "t";
    progress.model = "m";
    progress.device = "cpu";
    progress.delta.generated_tokens = 3;
    progress.hour = 1;
    ASSERT_TRUE(store->RecordStep({{}, {progress}}).ok());
  }
  MeterStorePtr store = OpenStore();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->LedgerWatermark(), 2u);
  auto recovered = store->RecoverInterrupted([](const InterruptedRequest&) { return "{}"; });
  ASSERT_TRUE(recovered.ok());
  EXPECT_EQ(*recovered, 1u);
  ASSERT_TRUE(store->FinishRequest("after", "{}", {}).ok());
  auto page = store->ReadLedgerPage(0, UINT64_MAX, 10);
  ASSERT_TRUE(page.ok());
  EXPECT_THAT(Ids(*page), ElementsAre("done", "cut", "after"));
  EXPECT_THAT(Seqs(*page), ElementsAre(1, 2, 3));
}

// Same id from many threads: one record, one sequence.
TEST_F(LedgerTest, ConcurrentEndsOfOneIdWriteOnce) {
  MeterStorePtr store = OpenStore();
  ASSERT_NE(store, nullptr);
  std::atomic<int> written{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 50; ++i) {
        auto done = store->FinishRequest("id-" + std::to_string(i), "{}", {});
        ASSERT_TRUE(done.ok());
        if (*done) ++written;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(written.load(), 50);
  auto page = store->ReadLedgerPage(0, UINT64_MAX, 100);
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(page->entries.size(), 50u);
  EXPECT_EQ(page->last_seq, 50u);
}

// A store written before ledger_seq existed: its records are indexed once at
// Open, in id order, and new ones follow them.
TEST_F(LedgerTest, OldStoreGetsItsLedgerIndexedOnce) {
  const std::filesystem::path db_path = Options().dir / kDbDirName;
  std::filesystem::create_directories(db_path);
  {
    rocksdb::DBOptions db_options;
    db_options.create_if_missing = true;
    db_options.create_missing_column_families = true;
    rocksdb::ColumnFamilyOptions usage_options;
    usage_options.merge_operator = std::make_shared<UsageAddOperator>();
    rocksdb::ColumnFamilyOptions inflight_options;
    inflight_options.merge_operator = std::make_shared<InflightAddOperator>();
    std::vector<rocksdb::ColumnFamilyDescriptor> families = {
        {rocksdb::kDefaultColumnFamilyName, {}},
        {std::string(kUsageFamily), usage_options},
        {std::string(kLedgerFamily), {}},
        {std::string(kStateFamily), {}},
        {std::string(kInflightFamily), inflight_options}};
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* raw = nullptr;
    ASSERT_TRUE(rocksdb::DB::Open(db_options, db_path.string(), families, &handles, &raw).ok());
    std::unique_ptr<rocksdb::DB> db(raw);
    for (int i = 0; i < 5000; ++i) {  // more than one indexing batch
      char id[16];
      std::snprintf(id, sizeof(id), "old-%05d", i);
      ASSERT_TRUE(db->Put({}, handles[2], id, LedgerJson(id, {}, "stop")).ok());
    }
    for (auto* handle : handles) ASSERT_TRUE(db->DestroyColumnFamilyHandle(handle).ok());
    ASSERT_TRUE(db->Close().ok());
  }
  {
    MeterStorePtr store = OpenStore();
    ASSERT_NE(store, nullptr);
    EXPECT_EQ(store->LedgerWatermark(), 5001u);
    ASSERT_TRUE(store->FinishRequest("new", "{}", {}).ok());
  }
  MeterStorePtr store = OpenStore();  // indexed once: no second pass
  ASSERT_NE(store, nullptr);
  auto page = store->ReadLedgerPage(0, UINT64_MAX, 10000);
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->entries.size(), 5001u);
  EXPECT_EQ(page->entries[0].request_id, "old-00000");
  EXPECT_EQ(page->entries[0].seq, 1u);
  EXPECT_EQ(page->entries[4999].request_id, "old-04999");
  EXPECT_EQ(page->entries[5000].request_id, "new");
  EXPECT_EQ(page->entries[5000].seq, 5001u);
  EXPECT_EQ(page->entries[0].record, LedgerJson("old-00000", {}, "stop"));
}

}  // namespace
}  // namespace tokenmill::storage
