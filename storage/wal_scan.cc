#include "storage/wal_scan.h"

#include <array>
#include <fstream>
#include <iterator>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace tokenmill::storage {
namespace {

constexpr uint64_t kBlockSize = 32768;
constexpr uint64_t kHeaderSize = 7;
constexpr uint64_t kRecyclableHeaderSize = 11;
constexpr uint64_t kBatchHeaderSize = 12;  // sequence (u64) + count (u32)

enum RecordType : uint8_t {
  kZeroType = 0,
  kFullType = 1,
  kFirstType = 2,
  kMiddleType = 3,
  kLastType = 4,
  kRecyclableFullType = 5,
  kRecyclableLastType = 8,
  kSetCompressionType = 9,
};

uint32_t Fixed32(std::string_view b, size_t at) {
  return static_cast<uint32_t>(static_cast<uint8_t>(b[at])) |
         static_cast<uint32_t>(static_cast<uint8_t>(b[at + 1])) << 8 |
         static_cast<uint32_t>(static_cast<uint8_t>(b[at + 2])) << 16 |
         static_cast<uint32_t>(static_cast<uint8_t>(b[at + 3])) << 24;
}

uint64_t Fixed64(std::string_view b, size_t at) {
  return static_cast<uint64_t>(Fixed32(b, at)) | static_cast<uint64_t>(Fixed32(b, at + 4)) << 32;
}

// RocksDB stores crc32c values masked (crc32c.h: rotate right 15, add a constant).
uint32_t Unmask(uint32_t masked) {
  const uint32_t rot = masked - 0xa282ead8u;
  return (rot >> 17) | (rot << 15);
}

bool AllZero(std::string_view bytes) {
  return bytes.find_first_not_of('\0') == std::string_view::npos;
}

std::array<uint32_t, 256> MakeCrcTable() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1;
    table[i] = c;
  }
  return table;
}

}  // namespace

uint32_t Crc32c(uint32_t crc, std::string_view data) {
  static const std::array<uint32_t, 256> table = MakeCrcTable();
  uint32_t c = ~crc;
  for (char ch : data) c = table[(c ^ static_cast<uint8_t>(ch)) & 0xff] ^ (c >> 8);
  return ~c;
}

WalScan ScanWalBytes(std::string_view bytes) {
  WalScan scan;
  scan.file_size = bytes.size();
  uint64_t at = 0;
  bool in_fragments = false;
  uint64_t record_start = 0;  // of the logical record being assembled
  std::string record;
  auto damaged = [&](uint64_t offset, std::string what) {
    scan.end = WalScan::End::kDamaged;
    scan.problem_offset = offset;
    scan.problem = std::move(what);
    return scan;
  };
  while (at < bytes.size()) {
    const uint64_t block_left = kBlockSize - at % kBlockSize;
    if (block_left < kHeaderSize) {  // the block's trailer: zero padding
      at += block_left;
      continue;
    }
    const uint64_t left = bytes.size() - at;
    if (left < kHeaderSize) {
      if (AllZero(bytes.substr(at)) && !in_fragments) break;
      scan.end = WalScan::End::kIncomplete;
      scan.problem_offset = in_fragments ? record_start : at;
      return scan;
    }
    const uint32_t length = static_cast<uint8_t>(bytes[at + 4]) |
                            static_cast<uint32_t>(static_cast<uint8_t>(bytes[at + 5])) << 8;
    const uint8_t type = static_cast<uint8_t>(bytes[at + 6]);
    if (type == kZeroType && length == 0) {
      // Preallocated space (or the rest of a block RocksDB left zeroed): what
      // its reader skips, to the next block.
      if (in_fragments) return damaged(record_start, "a record's fragments stop at zeroed bytes");
      at += block_left;
      continue;
    }
    const bool recyclable = type >= kRecyclableFullType && type <= kRecyclableLastType;
    const uint64_t header = recyclable ? kRecyclableHeaderSize : kHeaderSize;
    if (at + header + length > bytes.size()) {
      // RocksDB's reader treats a record that runs past the end of the file as
      // the torn tail of a crash, whatever its header says.
      scan.end = WalScan::End::kIncomplete;
      scan.problem_offset = in_fragments ? record_start : at;
      return scan;
    }
    if (header + length > block_left) {
      return damaged(at, absl::StrCat("record length ", length, " runs past its 32 KiB block"));
    }
    if (type > kSetCompressionType) {
      return damaged(at, absl::StrCat("unknown record type ", static_cast<int>(type)));
    }
    const uint32_t expected = Unmask(Fixed32(bytes, at));
    const uint32_t actual = Crc32c(0, bytes.substr(at + 6, header - 6 + length));
    if (expected != actual) {
      return damaged(at, absl::StrCat("checksum mismatch in a record of ", length, " bytes"));
    }
    const std::string_view payload = bytes.substr(at + header, length);
    const uint64_t next = at + header + length;
    const uint8_t base = recyclable ? type - (kRecyclableFullType - kFullType) : type;
    bool complete = false;
    switch (base) {
      case kFullType:
        if (in_fragments) return damaged(record_start, "a record's fragments end without a last");
        record.assign(payload);
        record_start = at;
        complete = true;
        break;
      case kFirstType:
        if (in_fragments) return damaged(record_start, "a record's fragments end without a last");
        record.assign(payload);
        record_start = at;
        in_fragments = true;
        break;
      case kMiddleType:
      case kLastType:
        if (!in_fragments) return damaged(at, "a fragment without the start of its record");
        record.append(payload);
        if (base == kLastType) {
          in_fragments = false;
          complete = true;
        }
        break;
      default:  // kSetCompressionType: metadata, not a write batch
        break;
    }
    if (complete) {
      if (record.size() < kBatchHeaderSize) {
        return damaged(record_start, "a record too small for a write batch");
      }
      const uint64_t sequence = Fixed64(record, 0);
      const uint32_t count = Fixed32(record, 8);
      if (scan.records == 0) scan.first_sequence = sequence;
      scan.last_sequence = count == 0 ? sequence : sequence + count - 1;
      ++scan.records;
      scan.valid_end = next;
    }
    at = next;
  }
  if (in_fragments) {
    scan.end = WalScan::End::kIncomplete;
    scan.problem_offset = record_start;
  }
  return scan;
}

absl::StatusOr<WalScan> ScanWalFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path.string()));
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return absl::DataLossError(absl::StrCat("cannot read ", path.string()));
  return ScanWalBytes(bytes);
}

}  // namespace tokenmill::storage
