// The value of an `inflight` entry and its merge operator: a request's
// identity and the running sum of its step deltas, so that a crash leaves
// enough to write its ledger record and count it once.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "rocksdb/merge_operator.h"
#include "rocksdb/slice.h"
#include "storage/meter_store.h"

namespace tokenmill::storage {

// Decoded inflight value.
struct InflightEntry {
  UsageCounters counters;
  uint64_t hour = 0;  // of the request's first step
  std::string tenant;
  std::string model;
  std::string device;
  std::string client_request_id;  // the client's X-Request-Id, "" when none
  std::string user;               // the client's end-user id, "" when none
};

// Layout: counters (kUsageValueBytes, as EncodeUsageCounters) | hour (u64 LE)
// | tenant 0x00 model 0x00 device [0x00 client_request_id [0x00 user]]. The
// fixed part comes first so that the merge operator adds counters without
// parsing the names. Every merge operand is a whole value: the request's
// identity and one step's delta. The client's request id is present when it
// or the user is not empty (names and the client's id never hold 0x00); the
// user is everything after the fourth separator (it may hold 0x00) and is
// present only when not empty, so entries written before either existed
// decode unchanged.
inline constexpr size_t kInflightFixedBytes = kUsageValueBytes + 8;

// Appends the encoding to out (cleared first), reusing its capacity: called
// per request per step.
void EncodeInflightEntry(const UsageCounters& counters, uint64_t hour, std::string_view tenant,
                         std::string_view model, std::string_view device,
                         std::string_view client_request_id, std::string_view user,
                         std::string& out);
// Malformed bytes are kDataLoss (they come from the store).
absl::StatusOr<InflightEntry> DecodeInflightEntry(std::string_view bytes);

// Merges inflight values: counters add field by field; the identity and hour
// of the older (left) value are kept, so the hour stays the first step's.
// Associative. A value shorter than kInflightFixedBytes makes Merge return
// false (RocksDB reports corruption). Stateless and thread-safe.
class InflightAddOperator : public rocksdb::AssociativeMergeOperator {
 public:
  // Persisted in the OPTIONS file; bump the suffix if the encoding changes.
  static constexpr const char* kName = "tokenmill.InflightAdd.v1";

  bool Merge(const rocksdb::Slice& key, const rocksdb::Slice* existing_value,
             const rocksdb::Slice& value, std::string* new_value,
             rocksdb::Logger* logger) const override;

  const char* Name() const override { return kName; }
};

}  // namespace tokenmill::storage
