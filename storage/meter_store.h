// MeterStore: tokenmill's durable store, RocksDB in the node's data dir.
//
// Layout of the data dir: tokenmilld.lock (flock'ed by the owning process,
// holds its pid), meter/ (the RocksDB database) and meter-wal.mark (how far
// the write-ahead log reached, wal_marker.h).
//
// Integrity at open: the store refuses to open (kDataLoss naming the WAL file
// and byte offset) when the WAL is damaged, cut short or missing, that is
// when it would recover fewer writes than it acknowledged; only the torn
// tail a crash leaves (the last write) is tolerated. Opening with
// accept_loss recovers what is left and records the loss (AcceptedLosses).
//
// A full disk: a write that fails for an I/O error such as ENOSPC makes the
// store unwritable (WriteHealth); every write is then refused with
// kUnavailable until a background thread has resumed RocksDB and a probe
// write succeeded, which it retries every resume_interval by itself.
//
// Column families (docs/architecture.md, "Metering keys"):
//   usage   tenant 0x00 model 0x00 device 0x00 hour(u64 BE) -> UsageCounters,
//           combined by a field-wise add merge operator
//   ledger  request id -> final request record (JSON), written once
//   ledger_seq  commit sequence (u64 BE, from 1) -> commit time (unix ms,
//           u64 BE) + request id: the ledger in commit order, written in the
//           same WriteBatch as the record (ReadLedgerPage, the export)
//   state   "tenant/NAME", "model/ID" -> desired state (JSON)
//   inflight request id -> progress of a request not yet in the ledger:
//           counters(8 x u64 LE) first-hour(u64 LE) tenant 0x00 model 0x00
//           device, combined by a merge operator that adds the counters and
//           keeps the oldest identity (inflight_entry.h)
//
// Exactly-once metering across kill -9: every step's tokens go into `usage`
// and into each request's `inflight` entry in one WriteBatch (RecordStep); a
// request's end moves it from `inflight` to `ledger` in one WriteBatch
// (FinishRequest); at start-up RecoverInterrupted turns what is left in
// `inflight` into ledger records. So once recovery ran, the ledger's token and
// money counters sum to the usage counters, and usage.requests counts the
// ledger's records.
//
// Thread safety: all methods may be called from any thread concurrently.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "storage/meter_sink.h"
#include "storage/meter_types.h"

namespace tokenmill::storage {

enum class Durability { kProcess, kPower };

enum class StoreLogLevel { kDebug, kInfo, kWarn, kError };
// Receives the store's log lines (RocksDB's info log included) as
// "event key=value" text. Called from any thread, RocksDB's included.
using StoreLogSink = std::function<void(StoreLogLevel level, std::string_view line)>;

// kProcess: a write survives a crash of the process (WAL written, not
// fsynced). kPower: it also survives a power cut (WAL fsynced per group commit).
struct MeterStoreOptions {
  std::filesystem::path dir;  // created if missing (mode 0750)
  Durability durability = Durability::kProcess;
  // Called once per operation that failed in the store (RocksDB errors, data
  // that does not decode), with the operation's name: "open", "scan_usage",
  // "scan_ledger", "put_state", "delete_state", "list_state", "flush",
  // "record_step", "finish_request", "recover", "sum_inflight". Not called
  // for arguments rejected with kInvalidArgument. Runs on the calling thread,
  // so it must be thread-safe; it must not call back into the store. Optional.
  std::function<void(std::string_view op)> on_error;
  // Test hook: called by FinishRequest and RecoverInterrupted with
  // the request id while they hold that id's ledger lock, just before the
  // write, so that a test can hold one writer mid-write. Optional.
  std::function<void(std::string_view request_id)> before_ledger_write;
  // Where RocksDB's info log and the store's own events go (never a file in
  // the data dir). Optional: without it they are dropped.
  StoreLogSink log;
  // Whether RocksDB's debug/info lines are formatted for `log` at all.
  bool log_debug = false;
  // Open even when the WAL lost acknowledged writes (damaged, cut short,
  // deleted): recover what is left and record the loss. Off: such a store is
  // refused with kDataLoss naming the file and offset.
  bool accept_loss = false;
  // How often an unwritable store tries to resume (RocksDB Resume, then a
  // probe write).
  std::chrono::milliseconds resume_interval{1000};
};

// A loss of acknowledged writes that an Open with accept_loss accepted.
struct StoreLoss {
  int64_t at_unix_ms = 0;           // when it was accepted
  std::string file;                 // the WAL file that was damaged, cut short or missing
  int64_t offset = -1;              // the byte where its data stops; -1 when the file is missing
  std::string kind;                 // "damaged", "truncated" or "missing"
  std::string detail;               // the message the refused start gave
  uint64_t expected_sequence = 0;   // the last write the store had acknowledged
  uint64_t recovered_sequence = 0;  // the last write the database holds after recovery
  uint64_t lost_writes = 0;         // expected - recovered (sequence numbers: one per key written)
  std::string saved_copy;           // a copy of the damaged file kept in the data dir, or ""
};

// Filter for QueryUsage; empty strings match all.
struct UsageQuery {
  std::string tenant;
  std::string model;
  std::string device;
  uint64_t hour_begin = 0;         // inclusive
  uint64_t hour_end = UINT64_MAX;  // exclusive
};

// One ledger record with its place in commit order.
struct LedgerEntry {
  uint64_t seq = 0;                // commit sequence, from 1; gaps where a write failed
  uint64_t committed_unix_ms = 0;  // when the store wrote it
  std::string request_id;
  std::string record;
};

// A page of the ledger in commit order (ReadLedgerPage).
struct LedgerPage {
  std::vector<LedgerEntry> entries;  // ascending seq
  // Every record with a seq up to this one is in `entries` or in an earlier
  // page: read the next page after it.
  uint64_t last_seq = 0;
};

// Period of a usage row.
enum class UsageGrouping { kHour, kDay, kTotal };

// One row of QueryUsage: counters summed over the group.
struct UsageRow {
  std::string tenant;
  std::string model;
  std::string device;         // "" unless by_device
  uint64_t period_start = 0;  // unix seconds (hour or UTC day start); 0 for kTotal
  UsageCounters counters;

  bool operator==(const UsageRow&) const = default;
};

class MeterStore final : public MeterSink {
 public:
  // Opens (creating if needed) and recovers the store. A data dir held by
  // another live process is kFailedPrecondition naming the dir and the pid.
  static absl::StatusOr<std::unique_ptr<MeterStore>> Open(const MeterStoreOptions& options);

  ~MeterStore() override;  // flushes and closes
  MeterStore(const MeterStore&) = delete;
  MeterStore& operator=(const MeterStore&) = delete;

  // The usage keys `query` selects, summed per period (hour, UTC day or all),
  // tenant, model and, when by_device, device. Rows are ordered by
  // period_start, tenant, model, device. A malformed key or value is
  // kDataLoss (reported as "scan_usage").
  absl::StatusOr<std::vector<UsageRow>> QueryUsage(const UsageQuery& query, UsageGrouping grouping,
                                                   bool by_device = false);
  // Whether any usage key of tenant exists (whatever its counters).
  absl::StatusOr<bool> HasTenantUsage(std::string_view tenant);

  // Writes a step in ONE WriteBatch: each usage delta (a merge operand) and each
  // request's delta merged into its inflight entry, which it creates on the
  // request's first step. An invalid request id or a name with 0x00 is
  // kInvalidArgument and nothing is written. Synced under Durability::kPower.
  // The caller must not record steps of a request after its FinishRequest.
  absl::Status RecordStep(const StepRecord& step) override;
  // RecordStep of several steps in ONE WriteBatch, synced once under
  // Durability::kPower (the metering writer's group commit, MeterSink).
  void RecordSteps(std::span<const StepRecord* const> steps,
                   std::span<absl::Status> results) override;

  // Ends a request in ONE WriteBatch: puts the ledger record, deletes the
  // request's inflight entry and merges usage (the caller passes
  // requests += 1 and any final counts no step recorded). When the ledger
  // already holds request_id, returns false and writes nothing, so a retried
  // call counts once; request ids must therefore be unique per request (the
  // ledger keeps the first record of an id). Synced under Durability::kPower.
  // Calls for different ids do not wait on each other (the check-then-write
  // is locked per id, by one of 64 stripes), so their synced writes
  // group-commit.
  //
  // Ledger record contract (what the sums of tests and `tokenmill usage`
  // rely on): a JSON object with at least the integer fields "prompt_tokens",
  // "cached_tokens", "generated_tokens", "cost_nusd" and "revenue_nusd",
  // holding the request's totals, i.e. the sum of its RecordStep deltas plus
  // the final counts passed here.
  absl::StatusOr<bool> FinishRequest(std::string_view request_id, std::string_view ledger_record,
                                     const std::vector<UsageDelta>& usage) override;

  // Start-up recovery, before any RecordStep: for every inflight entry (a
  // request the previous process never finished), writes the ledger record
  // make_record returns (same contract as FinishRequest's, from the
  // InterruptedRequest's counters), deletes the entry and merges requests += 1
  // into usage (tenant, model, device, the entry's first hour), one
  // WriteBatch per request. An entry whose id is already in the ledger is
  // only deleted: its id was reused by another request after the first one
  // finished, so its tokens stay in usage without a record of their own. Returns how many records
  // it wrote. A malformed entry is kDataLoss and stops recovery (entries before it stay recovered).
  // make_record runs on the calling thread while every ledger lock is held: it must not call into
  // the store. Run it alone (at start-up): it stops all other ledger writes while it runs.
  absl::StatusOr<size_t> RecoverInterrupted(
      const std::function<std::string(const InterruptedRequest&)>& make_record) override;

  // The sum of all inflight entries' counters: what running requests (or ones a crash cut, until
  // recovery) have metered so far. Seeded at Open by one scan of the entries (a malformed one is
  // left to RecoverInterrupted's kDataLoss), then kept in memory as steps, request ends and
  // recovery are written (store.in_flight of GET /control/v1/node): no store I/O, so an event loop
  // may call it. Any thread.
  UsageCounters InflightTotal() const;

  // The ledger in commit order, for exports. Every ledger write takes the
  // next sequence number; writes run concurrently, so they may commit out of
  // sequence order. The watermark is the lowest sequence still being written
  // (or the next one to hand out when none is): every record below it is
  // committed, and no record below it can appear later, so a reader that
  // stays below it never skips one. A sequence whose write failed stays
  // "being written" until the store is reopened, so the watermark stops
  // below it rather than let a reopened store hand that number out again
  // after a reader passed it. Sequences survive restarts (the counter is
  // recovered from the index at Open); a store from before the index gets
  // its existing records indexed once at Open, in request id order.
  uint64_t LedgerWatermark();
  // The records with after < seq <= through and seq below the watermark, at
  // most max_records of them (from 1), read from one snapshot. Errors are
  // reported as "scan_ledger"; an index entry without its record is kDataLoss.
  absl::StatusOr<LedgerPage> ReadLedgerPage(uint64_t after, uint64_t through, size_t max_records);

  // Desired state by key; an empty key is kInvalidArgument. ListState returns
  // the pairs whose key starts with prefix, in key order.
  absl::Status PutState(std::string_view key, std::string_view value);
  absl::Status DeleteState(std::string_view key);
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ListState(
      std::string_view prefix);

  // Flushes memtables and syncs the WAL; called on drain.
  absl::Status Flush();

  // OkStatus while the store writes; else kUnavailable saying why (the disk
  // of the data dir is full, or another I/O error) until it resumed by
  // itself. Cheap: no I/O. Thread-safe.
  absl::Status WriteHealth() const override;

  // The loss this Open accepted (accept_loss), if there was one.
  const std::optional<StoreLoss>& accepted_loss() const;
  // Every loss accepted on this data dir, oldest first (kept in `state`
  // under "store/loss/").
  absl::StatusOr<std::vector<StoreLoss>> AcceptedLosses();

 private:
  // Every usage key `query` selects with its counters, in key order.
  absl::StatusOr<std::vector<UsageDelta>> ScanUsage(const UsageQuery& query);

  struct Impl;
  explicit MeterStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

using MeterStorePtr = std::unique_ptr<MeterStore>;

}  // namespace tokenmill::storage
