// A reader of RocksDB's write-ahead log format that only checks it: where the
// complete records end, which sequence numbers they hold, and where and how a
// file is damaged. The store runs it on every WAL before it opens RocksDB, so
// that a refused start can name the file and the byte offset, which RocksDB's
// own recovery does not report. Format (RocksDB db/log_format.h, stable since
// LevelDB): 32 KiB blocks of physical records, each a header (masked CRC32C,
// u16 length, u8 type) and a payload; a write batch is one logical record,
// cut into first/middle/last fragments across blocks, that starts with its
// sequence number (u64) and count (u32).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace tokenmill::storage {

struct WalScan {
  enum class End {
    kClean,       // every byte belongs to a complete record (or preallocated zeros)
    kIncomplete,  // the file ends inside a record: a torn tail, as a crash leaves
    kDamaged,     // a record fails its checksum or is malformed before the end
  };
  uint64_t file_size = 0;
  uint64_t records = 0;         // complete write batches before the end
  uint64_t valid_end = 0;       // the byte after the last complete write batch
  uint64_t first_sequence = 0;  // of the first complete batch; 0 when none
  uint64_t last_sequence = 0;   // the last sequence of the last complete batch; 0 when none
  End end = End::kClean;
  uint64_t problem_offset = 0;  // kIncomplete / kDamaged: where the bad record starts
  std::string problem;          // kDamaged: what is wrong ("checksum mismatch", ...)
};

// Scans bytes of a WAL file. Never fails: damage is a result, not an error.
WalScan ScanWalBytes(std::string_view bytes);

// Reads and scans a file; an unreadable file is an error naming it.
absl::StatusOr<WalScan> ScanWalFile(const std::filesystem::path& path);

// CRC-32C (Castagnoli) of data, continuing from crc (0 to start); the
// checksum RocksDB's log records use, before masking.
uint32_t Crc32c(uint32_t crc, std::string_view data);

}  // namespace tokenmill::storage
