// MeterStore: tokenmill's durable store, RocksDB in the node's data dir.
//
// Layout of the data dir: tokenmilld.lock (flock'ed by the owning process,
// holds its pid) and meter/ (the RocksDB database).
//
// Column families (docs/architecture.md, "Metering keys"):
//   usage   tenant 0x00 model 0x00 device 0x00 hour(u64 BE) -> UsageCounters,
//           combined by a field-wise add merge operator
//   ledger  request id -> final request record (JSON), written once
//   state   "tenant/NAME", "model/ID" -> desired state (JSON)
//
// Thread safety: all methods may be called from any thread concurrently.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tokenmill::storage {

// Integers so that sums are exact. Encoded as 8 little-endian u64 fields.
// Sums are plain u64 adds: u64 nano-units hold 1.8e10 currency units per key
// (tenant, model, device, hour), far beyond any node's hourly spend.
struct UsageCounters {
  uint64_t prompt_tokens = 0;
  uint64_t cached_tokens = 0;
  uint64_t generated_tokens = 0;
  uint64_t requests = 0;
  uint64_t device_ns = 0;
  uint64_t energy_uj = 0;
  uint64_t cost_nusd = 0;  // nano-units of the configured currency
  uint64_t revenue_nusd = 0;

  UsageCounters& operator+=(const UsageCounters& other);
  bool operator==(const UsageCounters&) const = default;
};

struct UsageKey {
  std::string tenant;
  std::string model;
  std::string device;
  uint64_t hour = 0;  // unix seconds / 3600

  bool operator==(const UsageKey&) const = default;
};

inline constexpr size_t kUsageValueBytes = 8 * 8;

// Names must not contain 0x00 (config validation guarantees it). Keys sort by
// tenant, model, device, then hour. Decoding rejects malformed bytes with
// kDataLoss: they come from the store, so bad bytes mean corruption.
std::string EncodeUsageKey(const UsageKey& key);
absl::StatusOr<UsageKey> DecodeUsageKey(std::string_view bytes);
std::string EncodeUsageCounters(const UsageCounters& counters);
absl::StatusOr<UsageCounters> DecodeUsageCounters(std::string_view bytes);

enum class Durability { kProcess, kPower };

// kProcess: a write survives a crash of the process (WAL written, not
// fsynced). kPower: it also survives a power cut (WAL fsynced per group commit).
struct MeterStoreOptions {
  std::filesystem::path dir;  // created if missing (mode 0750)
  Durability durability = Durability::kProcess;
  // Called once per operation that failed in the store (RocksDB errors, data
  // that does not decode), with the operation's name: "open", "add_usage",
  // "get_usage", "scan_usage", "put_ledger", "get_ledger", "scan_ledger",
  // "put_state", "delete_state", "get_state", "list_state", "flush". Not called
  // for arguments rejected with kInvalidArgument. Runs on the calling thread,
  // so it must be thread-safe; it must not call back into the store. Optional.
  std::function<void(std::string_view op)> on_error;
};

// One usage delta of a step.
struct UsageDelta {
  UsageKey key;
  UsageCounters counters;
};

// Filter for ScanUsage; empty strings match all.
struct UsageQuery {
  std::string tenant;
  std::string model;
  std::string device;
  uint64_t hour_begin = 0;         // inclusive
  uint64_t hour_end = UINT64_MAX;  // exclusive
};

class MeterStore {
 public:
  // Opens (creating if needed) and recovers the store. A data dir held by
  // another live process is kFailedPrecondition naming the dir and the pid.
  static absl::StatusOr<std::unique_ptr<MeterStore>> Open(const MeterStoreOptions& options);

  ~MeterStore();  // flushes and closes
  MeterStore(const MeterStore&) = delete;
  MeterStore& operator=(const MeterStore&) = delete;

  // Adds all deltas in one atomic WriteBatch (merge operands). A name that
  // contains 0x00 is kInvalidArgument and nothing is written.
  absl::Status AddUsage(const std::vector<UsageDelta>& deltas);
  absl::StatusOr<std::optional<UsageCounters>> GetUsage(const UsageKey& key);
  absl::StatusOr<std::vector<UsageDelta>> ScanUsage(const UsageQuery& query);

  // Writes the record unless the id exists; returns true when written, false
  // when a record was already there (the first one is kept). Request ids are
  // opaque, 1 to 256 bytes; others are kInvalidArgument.
  absl::StatusOr<bool> PutLedger(std::string_view request_id, std::string_view record);
  absl::StatusOr<std::optional<std::string>> GetLedger(std::string_view request_id);
  // Visits ledger records in key order; stops early when fn returns false.
  absl::Status ScanLedger(
      const std::function<bool(std::string_view id, std::string_view record)>& fn);

  // Desired state by key; an empty key is kInvalidArgument. ListState returns
  // the pairs whose key starts with prefix, in key order.
  absl::Status PutState(std::string_view key, std::string_view value);
  absl::Status DeleteState(std::string_view key);
  absl::StatusOr<std::optional<std::string>> GetState(std::string_view key);
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ListState(
      std::string_view prefix);

  // Flushes memtables and syncs the WAL; called on drain.
  absl::Status Flush();

  const std::filesystem::path& dir() const;

 private:
  struct Impl;
  explicit MeterStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

using MeterStorePtr = std::unique_ptr<MeterStore>;

}  // namespace tokenmill::storage
