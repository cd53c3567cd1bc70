// MeterStore's state, shared by the files that implement it
// (meter_store.cc: open, usage, ledger, state; meter_store_inflight.cc:
// steps, request ends, recovery; meter_store_query.cc: grouped usage).
// Internal: includes RocksDB, which meter_store.h keeps private.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "rocksdb/db.h"
#include "rocksdb/options.h"
#include "rocksdb/slice.h"
#include "rocksdb/write_batch.h"
#include "storage/data_dir_lock.h"
#include "storage/meter_store.h"
#include "storage/rocks_events.h"
#include "storage/rocks_status.h"
#include "storage/wal_marker.h"

namespace tokenmill::storage {

inline constexpr size_t kMaxRequestIdBytes = 256;

// Wall-clock milliseconds since the Unix epoch (ledger index, loss records).
inline int64_t NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

inline rocksdb::Slice ToSlice(std::string_view s) { return rocksdb::Slice(s.data(), s.size()); }
inline std::string_view ToView(const rocksdb::Slice& s) {
  return std::string_view(s.data(), s.size());
}

// The smallest key above every key that starts with prefix, or "" when there
// is none (a prefix of 0xff bytes only).
std::string PrefixUpperBound(std::string_view prefix);

// kInvalidArgument unless 1 to kMaxRequestIdBytes bytes.
absl::Status ValidateRequestId(std::string_view id);
// kInvalidArgument when a name contains 0x00, the separator of keys and values.
absl::Status ValidateNames(std::string_view tenant, std::string_view model,
                           std::string_view device);
absl::Status ValidateUsageKey(const UsageKey& key);

struct MeterStore::Impl {
  MeterStoreOptions options;
  // Declared first so it is released last, after the database is closed.
  std::unique_ptr<DataDirLock> lock;
  std::unique_ptr<rocksdb::DB> db;
  // In the order of the descriptors given to DB::Open.
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::ColumnFamilyHandle* usage = nullptr;
  rocksdb::ColumnFamilyHandle* ledger = nullptr;
  rocksdb::ColumnFamilyHandle* state = nullptr;
  rocksdb::ColumnFamilyHandle* inflight = nullptr;
  rocksdb::ColumnFamilyHandle* ledger_seq = nullptr;
  rocksdb::WriteOptions write_options;
  // Make the ledger's read-then-write (FinishRequest, RecoverInterrupted) atomic per
  // request id: an id's stripe is LedgerStripe(id). Different ids mostly
  // take different stripes, so their synced writes overlap and group-commit.
  // Recovery takes all of them.
  static constexpr size_t kLedgerStripes = 64;
  std::array<absl::Mutex, kLedgerStripes> ledger_stripes;
  // Commit sequences of the ledger_seq family (meter_store_ledger.cc). Held
  // only to hand out or retire a number, never across a write.
  absl::Mutex seq_mu;
  uint64_t next_seq ABSL_GUARDED_BY(seq_mu) = 1;
  std::set<uint64_t> writing_seqs ABSL_GUARDED_BY(seq_mu);
  // Sequences whose write failed (a full disk): they hold the watermark, as
  // a restart could hand their numbers out again while a consumer's cursor
  // is past them, until a later sequence is written (a restart then starts
  // above it).
  std::set<uint64_t> failed_seqs ABSL_GUARDED_BY(seq_mu);

  absl::Mutex& LedgerStripe(std::string_view request_id);
  std::shared_ptr<RocksLogger> logger;
  std::shared_ptr<StoreEventListener> listener;
  std::optional<StoreLoss> accepted_loss;

  // How far the WAL reached (wal_marker.h), rewritten after every write.
  absl::Mutex marker_mu;
  std::unique_ptr<WalMarkerFile> marker_file ABSL_GUARDED_BY(marker_mu);
  WalMarker marker ABSL_GUARDED_BY(marker_mu);
  bool marker_failed ABSL_GUARDED_BY(marker_mu) = false;  // logged once
  std::atomic<bool> wal_switched{false};                  // set by the listener

  // Writability: ok, or why writes are refused until ResumeLoop succeeds.
  mutable absl::Mutex health_mu;
  absl::Status unwritable ABSL_GUARDED_BY(health_mu);
  uint64_t failures ABSL_GUARDED_BY(health_mu) = 0;  // EnterUnwritable calls
  std::chrono::steady_clock::time_point unwritable_since ABSL_GUARDED_BY(health_mu);
  bool stopping ABSL_GUARDED_BY(health_mu) = false;
  std::thread resumer;

  // The inflight entries' counters, per request and summed, kept as steps,
  // ends and recovery write them (scanned once at open), so that reading the
  // sum does no store I/O. The family is never read while serving: its
  // vector memtable sorts itself on every read (meter_store_open.cc).
  mutable absl::Mutex inflight_total_mu;
  UsageCounters inflight_total ABSL_GUARDED_BY(inflight_total_mu);
  absl::flat_hash_map<std::string, UsageCounters> inflight_by_request
      ABSL_GUARDED_BY(inflight_total_mu);
  void AddInflight(const StepRecord& step);
  void RemoveInflight(std::string_view request_id);
  // Calls fn(request id, counters) for every inflight entry (a prefix scan):
  // kDataLoss on a malformed one unless skip_malformed, which leaves it out.
  absl::Status ScanInflight(bool skip_malformed,
                            const std::function<void(std::string_view, const UsageCounters&)>& fn);

  ~Impl() {
    StopResumer();
    Close();
  }

  void Log(StoreLogLevel level, std::string_view line) const {
    if (options.log) options.log(level, line);
  }

  // kUnavailable while the store is unwritable; reported as op.
  absl::Status WriteGate(std::string_view op) const;
  // The result of a write: updates the marker when it succeeded; an I/O
  // error makes the store unwritable and is returned as kUnavailable.
  absl::Status Written(const rocksdb::Status& status, std::string_view op);
  // Adds a validated step's merges (usage, inflight) to `batch`; `value` is
  // scratch for the encoded entries (meter_store_inflight.cc).
  rocksdb::Status AddStep(const StepRecord& step, rocksdb::WriteBatch& batch, std::string& value);
  void EnterUnwritable(const rocksdb::Status& status);
  void MarkWritten();
  // The resumer thread: while unwritable, every resume_interval, DB::Resume
  // and a probe write; the first success makes the store writable again.
  void ResumeLoop();
  bool TryResume();
  void StopResumer();
  bool ResumerHasWork() const ABSL_SHARED_LOCKS_REQUIRED(health_mu) {
    return stopping || !unwritable.ok();
  }

  // Reports a failed operation to the owner's callback and passes it on.
  // Reports the failure as op; an empty op is reported by the caller.
  absl::Status Fail(absl::Status status, std::string_view op) const {
    if (options.on_error && !op.empty()) options.on_error(op);
    return status;
  }
  absl::Status Check(const rocksdb::Status& status, std::string_view op) const {
    if (status.ok()) return absl::OkStatus();
    return Fail(FromRocks(status, op), op);
  }

  // Whether the ledger holds request_id; errors are reported as op. The
  // caller holds the id's stripe.
  absl::StatusOr<bool> LedgerHas(std::string_view request_id, std::string_view op);

  // Adds the record and its ledger_seq entry to batch and writes it (the
  // caller holds the id's stripe, checked the id is new and passed the write
  // gate), as Written(status, op). A failed write's sequence holds the
  // watermark until a later one is written (failed_seqs).
  absl::Status CommitLedger(std::string_view request_id, std::string_view record,
                            rocksdb::WriteBatch& batch, std::string_view op);
  // At Open: indexes a ledger written before ledger_seq existed (once; a
  // marker in the default family records it) and recovers next_seq.
  absl::Status OpenLedgerIndex();

  absl::Status FlushAndSync();

  // Flushes, syncs and closes; handles go before the DB, as RocksDB requires.
  void Close();

  // Reads the pairs of family whose key starts with prefix, in key order,
  // from seek_to on. visit returns an error to stop with it, or
  // CancelledError to stop with ok.
  template <typename Visit>
  absl::Status ScanPrefix(rocksdb::ColumnFamilyHandle* family, std::string_view prefix,
                          std::string_view seek_to, std::string_view op, Visit&& visit) {
    const std::string upper = PrefixUpperBound(prefix);
    const rocksdb::Slice upper_slice = ToSlice(upper);
    rocksdb::ReadOptions read_options;
    if (!upper.empty()) read_options.iterate_upper_bound = &upper_slice;
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(read_options, family));
    for (it->Seek(ToSlice(seek_to)); it->Valid(); it->Next()) {
      absl::Status status = visit(ToView(it->key()), ToView(it->value()));
      if (absl::IsCancelled(status)) break;  // the visitor's "stop here"
      if (!status.ok()) return Fail(status, op);
    }
    return Check(it->status(), op);
  }
};

}  // namespace tokenmill::storage
