// The store's check of its write-ahead log at open (meter_store.h,
// "Integrity at open"): scans every WAL file and, with the WAL marker, says
// whether acknowledged writes are gone and where. Internal to storage/.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "storage/wal_marker.h"
#include "storage/wal_scan.h"

namespace tokenmill::storage {

inline constexpr std::string_view kWalMarkerFileName = "meter-wal.mark";

struct WalFile {
  uint64_t number = 0;
  std::filesystem::path path;
  WalScan scan;
};

// The WAL files (NNNNNN.log) of a RocksDB directory, scanned, in number
// order; none when the directory does not exist.
absl::StatusOr<std::vector<WalFile>> ScanWalFiles(const std::filesystem::path& db_dir);

// The path RocksDB gives WAL number n in db_dir.
std::filesystem::path WalPath(const std::filesystem::path& db_dir, uint64_t number);

// Acknowledged writes a start would lose, and where.
struct WalFinding {
  std::string kind;  // "damaged", "truncated" or "missing"
  std::filesystem::path file;
  int64_t offset = -1;  // the byte where good data stops; -1 for a missing file
  std::string message;  // a sentence naming file and offset
};

// The first file with a record that is damaged (fails its checksum or is
// malformed) before its end, or nullopt. A torn tail is not damage.
std::optional<WalFinding> FindWalDamage(const std::vector<WalFile>& wals);

// The highest sequence number any complete WAL record holds (0 when none).
uint64_t MaxWalSequence(const std::vector<WalFile>& wals);

// Explains why a database that recovered up to `recovered` holds less than
// the marker says was written: the marker's WAL file cut short, missing, or
// an earlier one missing.
WalFinding DescribeWalLoss(const std::filesystem::path& db_dir, const std::vector<WalFile>& wals,
                           const WalMarker& marker, uint64_t recovered);

}  // namespace tokenmill::storage
