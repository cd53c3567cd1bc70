// The store's own record of how far its write-ahead log reached, kept next to
// the database (<data_dir>/meter-wal.mark) so that it survives what happens
// to the WAL. After every write the store puts the database's latest
// sequence number there; at the next start a database that recovers fewer
// sequences than the marker names lost acknowledged writes: a WAL deleted,
// cut short or damaged. RocksDB itself cannot tell: a missing live WAL or
// one cut at a record boundary replays without complaint.
//
// Layout (36 bytes): "TMWALMK1", wal_number, previous_sequence, sequence
// (u64 LE each), CRC-32C of the 32 bytes before it (u32 LE).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tokenmill::storage {

struct WalMarker {
  uint64_t wal_number = 0;  // the WAL file the store was writing (NNNNNN.log)
  // The sequence the marker held before its last update: everything up to it
  // was written before the last write, so a crash that tore the last write
  // (the tail of the WAL) cannot take it.
  uint64_t previous_sequence = 0;
  uint64_t sequence = 0;  // the latest sequence the store saw written

  bool operator==(const WalMarker&) const = default;
};

// nullopt when the file does not exist; kDataLoss naming the file when it is
// not a marker (wrong size, magic or checksum).
absl::StatusOr<std::optional<WalMarker>> ReadWalMarker(const std::filesystem::path& path);

// The marker file, open for rewriting in place (one pwrite per update: no
// allocation, so it also works on a full disk). Not thread-safe: the store
// serialises updates.
class WalMarkerFile {
 public:
  // Creates the file if missing (mode 0640).
  static absl::StatusOr<std::unique_ptr<WalMarkerFile>> Open(const std::filesystem::path& path);
  ~WalMarkerFile();
  WalMarkerFile(const WalMarkerFile&) = delete;
  WalMarkerFile& operator=(const WalMarkerFile&) = delete;

  absl::Status Write(const WalMarker& marker);
  // Write, then fsync: for the marker written at open.
  absl::Status WriteAndSync(const WalMarker& marker);

 private:
  WalMarkerFile(int fd, std::filesystem::path path) : fd_(fd), path_(std::move(path)) {}
  int fd_;
  std::filesystem::path path_;
};

}  // namespace tokenmill::storage
