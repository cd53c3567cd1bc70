// The WAL checker against write-ahead logs RocksDB wrote through the store:
// it finds every write batch and its sequences, and names the byte where a
// garbled, cut or torn file stops being good.
#include "storage/wal_scan.h"

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "gtest/gtest.h"
#include "storage/meter_store.h"
#include "storage/store_integrity.h"
#include "storage/store_layout.h"
#include "tests/storage/temp_dir.h"
#include "tests/support/store_reads.h"

namespace tokenmill::storage {
namespace {

std::string ReadBytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// The live WAL's bytes after `batches` usage-only steps of `keys` keys each,
// read while the store is open (RocksDB has written them, not flushed them).
// Open itself writes a few records first (a new store's ledger index);
// `opened` gets the WAL's records and last sequence as Open left them.
struct WalBase {
  uint64_t records = 0;
  uint64_t last_sequence = 0;
};
std::string LiveWal(const std::filesystem::path& dir, int batches, int keys,
                    WalBase* opened = nullptr) {
  MeterStoreOptions options;
  options.dir = dir;
  auto store = MeterStore::Open(options);
  EXPECT_TRUE(store.ok()) << store.status();
  if (opened != nullptr) {
    auto wals = ScanWalFiles(dir / kDbDirName);
    EXPECT_TRUE(wals.ok() && !wals->empty());
    if (wals.ok() && !wals->empty()) {
      const WalScan base = ScanWalBytes(ReadBytes(wals->back().path));
      *opened = {base.records, base.last_sequence};
    }
  }
  for (int b = 0; b < batches; ++b) {
    std::vector<UsageDelta> deltas;
    for (int k = 0; k < keys; ++k) {
      // Long names so that some batches span 32 KiB blocks.
      deltas.push_back({{std::string(200 + 40 * k, 't'), "m", "cpu", static_cast<uint64_t>(b)},
                        {.generated_tokens = 1}});
    }
    EXPECT_TRUE(::tokenmill::testing::AddUsage(*(*store), deltas).ok());
  }
  auto wals = ScanWalFiles(dir / kDbDirName);
  EXPECT_TRUE(wals.ok());
  EXPECT_FALSE(wals->empty());
  return ReadBytes(wals->back().path);
}

TEST(WalScanTest, FindsEveryBatchOfARealWal) {
  testing::TempDir tmp;
  WalBase opened;
  const std::string wal = LiveWal(tmp.path(), 300, 5, &opened);
  const WalScan scan = ScanWalBytes(wal);
  EXPECT_EQ(scan.end, WalScan::End::kClean) << scan.problem;
  EXPECT_EQ(scan.records, opened.records + 300u);
  EXPECT_EQ(scan.valid_end, wal.size());
  EXPECT_EQ(scan.first_sequence, 1u);
  EXPECT_EQ(scan.last_sequence, opened.last_sequence + 300u * 5);
  EXPECT_GT(wal.size(), 32768u * 2) << "the log should span blocks";
}

TEST(WalScanTest, GarbledRecordIsDamageAtItsOffset) {
  testing::TempDir tmp;
  std::string wal = LiveWal(tmp.path(), 50, 2);
  const WalScan clean = ScanWalBytes(wal);
  ASSERT_EQ(clean.end, WalScan::End::kClean);
  wal[30] = static_cast<char>(wal[30] ^ 0x40);  // inside the first record's payload
  const WalScan scan = ScanWalBytes(wal);
  EXPECT_EQ(scan.end, WalScan::End::kDamaged);
  EXPECT_EQ(scan.problem_offset, 0u);
  EXPECT_NE(scan.problem.find("checksum"), std::string::npos) << scan.problem;
  EXPECT_EQ(scan.records, 0u);
}

TEST(WalScanTest, CutFileEndsInAnIncompleteRecord) {
  testing::TempDir tmp;
  const std::string wal = LiveWal(tmp.path(), 50, 2);
  const WalScan whole = ScanWalBytes(wal);
  const WalScan half = ScanWalBytes(std::string_view(wal).substr(0, wal.size() / 2));
  EXPECT_LT(half.records, whole.records);
  EXPECT_LT(half.last_sequence, whole.last_sequence);
  EXPECT_LE(half.valid_end, wal.size() / 2);
  if (half.end == WalScan::End::kIncomplete) {
    EXPECT_EQ(half.problem_offset, half.valid_end);
  } else {
    EXPECT_EQ(half.end, WalScan::End::kClean);  // cut exactly between records
  }
  const WalScan torn = ScanWalBytes(std::string_view(wal).substr(0, wal.size() - 3));
  EXPECT_EQ(torn.end, WalScan::End::kIncomplete);
  EXPECT_EQ(torn.records, whole.records - 1);
}

TEST(WalScanTest, Crc32cMatchesTheStandardCheckValue) {
  EXPECT_EQ(Crc32c(0, "123456789"), 0xe3069283u);
}

}  // namespace
}  // namespace tokenmill::storage
