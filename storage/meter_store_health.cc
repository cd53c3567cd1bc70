// MeterStore: writability (a full disk) and the WAL marker, the parts of
// every write that are not the write itself.
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "rocksdb/transaction_log.h"
#include "storage/meter_store.h"
#include "storage/meter_store_impl.h"

namespace tokenmill::storage {
namespace {

// Written by the resumer to check that the database takes writes again.
constexpr std::string_view kProbeKey = "tokenmill/write-probe";

bool StopsWrites(const rocksdb::Status& s) {
  return s.IsIOError() || s.IsNoSpace() || s.severity() >= rocksdb::Status::Severity::kHardError;
}

}  // namespace

absl::Status MeterStore::Impl::WriteGate(std::string_view op) const {
  absl::Status status;
  {
    absl::MutexLock hold(&health_mu);
    status = unwritable;
  }
  if (status.ok()) return status;
  if (!op.empty()) return Fail(status, op);
  return status;
}

absl::Status MeterStore::Impl::Written(const rocksdb::Status& status, std::string_view op) {
  if (status.ok()) {
    MarkWritten();
    return absl::OkStatus();
  }
  if (!StopsWrites(status)) return Check(status, op);
  EnterUnwritable(status);
  return WriteGate(op);
}

void MeterStore::Impl::EnterUnwritable(const rocksdb::Status& status) {
  const bool full = status.IsNoSpace() || status.subcode() == rocksdb::Status::kNoSpace ||
                    absl::StrContains(status.ToString(), "No space left");
  absl::Status reason = absl::UnavailableError(absl::StrCat(
      "the metering store cannot write: ",
      full ? absl::StrCat("the disk holding the data dir ", options.dir.string(), " is full")
           : absl::StrCat("I/O error in the data dir ", options.dir.string()),
      " (", status.ToString(), "); it retries by itself and takes writes again once ",
      full ? "space is freed" : "the error clears"));
  bool entered = false;
  {
    absl::MutexLock hold(&health_mu);
    ++failures;
    if (unwritable.ok()) {
      entered = true;
      unwritable_since = std::chrono::steady_clock::now();
    }
    unwritable = std::move(reason);
  }
  if (entered) {
    Log(StoreLogLevel::kError,
        absl::StrCat("store_unwritable dir=", options.dir.string(), " disk_full=", full,
                     " error=\"", status.ToString(), "\""));
  }
}

void MeterStore::Impl::MarkWritten() {
  const uint64_t sequence = db->GetLatestSequenceNumber();
  absl::MutexLock hold(&marker_mu);
  const bool switched = wal_switched.exchange(false);
  if (sequence <= marker.sequence && !switched) return;
  if (switched) {
    std::unique_ptr<rocksdb::LogFile> current;
    if (db->GetCurrentWalFile(&current).ok() && current) marker.wal_number = current->LogNumber();
  }
  if (sequence > marker.sequence) {
    marker.previous_sequence = marker.sequence;
    marker.sequence = sequence;
  }
  if (marker_file == nullptr) return;
  absl::Status written = marker_file->Write(marker);
  if (!written.ok() && !marker_failed) {
    marker_failed = true;  // once: it fails as long as its disk does
    Log(StoreLogLevel::kError,
        absl::StrCat("store_wal_marker_failed error=\"", written.ToString(), "\""));
  }
}

bool MeterStore::Impl::TryResume() {
  rocksdb::Status s = db->Resume();
  if (s.ok()) {
    rocksdb::WriteOptions probe_options = write_options;
    probe_options.sync = true;  // the probe proves the disk takes data, not only the page cache
    const std::string now = absl::FormatTime(absl::Now());
    s = db->Put(probe_options, db->DefaultColumnFamily(), ToSlice(kProbeKey), ToSlice(now));
  }
  if (!s.ok()) {
    Log(StoreLogLevel::kDebug, absl::StrCat("store_resume_failed error=\"", s.ToString(), "\""));
    return false;
  }
  MarkWritten();
  return true;
}

void MeterStore::Impl::ResumeLoop() {
  absl::MutexLock hold(&health_mu);
  const absl::Duration interval = absl::FromChrono(options.resume_interval);
  while (!stopping) {
    if (unwritable.ok()) {
      health_mu.Await(absl::Condition(this, &Impl::ResumerHasWork));
      continue;
    }
    health_mu.AwaitWithTimeout(absl::Condition(&stopping), interval);
    if (stopping) break;
    const uint64_t seen = failures;
    health_mu.Unlock();
    const bool resumed = TryResume();
    health_mu.Lock();
    // A write that failed meanwhile failed after the resume: stay unwritable.
    if (!resumed || failures != seen) continue;
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - unwritable_since).count();
    unwritable = absl::OkStatus();
    health_mu.Unlock();
    Log(StoreLogLevel::kInfo, absl::StrCat("store_writable_again dir=", options.dir.string(),
                                           " unwritable_seconds=", seconds));
    health_mu.Lock();
  }
}

void MeterStore::Impl::StopResumer() {
  {
    absl::MutexLock hold(&health_mu);
    stopping = true;
  }
  if (resumer.joinable()) resumer.join();
}

absl::Status MeterStore::WriteHealth() const {
  absl::MutexLock hold(&impl_->health_mu);
  return impl_->unwritable;
}

}  // namespace tokenmill::storage
