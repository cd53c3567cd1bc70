#include "storage/meter_store.h"

#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "rocksdb/db.h"
#include "rocksdb/options.h"
#include "rocksdb/slice.h"
#include "storage/data_dir_lock.h"
#include "storage/rocks_status.h"
#include "storage/store_layout.h"
#include "storage/usage_merge_operator.h"

namespace tokenmill::storage {
namespace {

constexpr size_t kMaxRequestIdBytes = 256;

rocksdb::Slice ToSlice(std::string_view s) { return rocksdb::Slice(s.data(), s.size()); }
std::string_view ToView(const rocksdb::Slice& s) { return std::string_view(s.data(), s.size()); }

// The smallest key above every key that starts with prefix, or "" when there
// is none (a prefix of 0xff bytes only).
std::string PrefixUpperBound(std::string_view prefix) {
  std::string bound(prefix);
  while (!bound.empty() && static_cast<unsigned char>(bound.back()) == 0xff) bound.pop_back();
  if (!bound.empty())
    bound.back() = static_cast<char>(static_cast<unsigned char>(bound.back()) + 1);
  return bound;
}

absl::Status ValidateRequestId(std::string_view id) {
  if (id.empty() || id.size() > kMaxRequestIdBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("request id must have 1 to ", kMaxRequestIdBytes, " bytes, not ", id.size()));
  }
  return absl::OkStatus();
}

absl::Status ValidateStateKey(std::string_view key) {
  if (key.empty()) return absl::InvalidArgumentError("state key must not be empty");
  return absl::OkStatus();
}

absl::Status ValidateUsageKey(const UsageKey& key) {
  for (const std::string* name : {&key.tenant, &key.model, &key.device}) {
    if (name->find('\0') != std::string::npos) {
      return absl::InvalidArgumentError("usage key names must not contain 0x00");
    }
  }
  return absl::OkStatus();
}

rocksdb::DBOptions MakeDbOptions() {
  rocksdb::DBOptions options;
  options.create_if_missing = true;
  options.create_missing_column_families = true;
  // One node's meter: a few hundred SST files at most, and the LOG files are
  // for post-mortems, not archives.
  options.max_open_files = 256;
  options.keep_log_file_num = 4;
  options.max_log_file_size = 8 << 20;
  // The ledger and state families are written rarely; without a cap their
  // small memtables would keep old WAL files alive for a long time.
  options.max_total_wal_size = 128 << 20;
  // A crash leaves at most a torn tail in the WAL; recover up to it. This is
  // RocksDB's default, stated because the crash tests rely on it.
  options.wal_recovery_mode = rocksdb::WALRecoveryMode::kPointInTimeRecovery;
  return options;
}

}  // namespace

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
  rocksdb::WriteOptions write_options;
  // Makes PutLedger's read-then-write atomic against other PutLedger calls.
  absl::Mutex ledger_mu;

  ~Impl() { Close(); }

  // Reports a failed operation to the owner's callback and passes it on.
  absl::Status Fail(absl::Status status, std::string_view op) const {
    if (options.on_error) options.on_error(op);
    return status;
  }
  absl::Status Check(const rocksdb::Status& status, std::string_view op) const {
    if (status.ok()) return absl::OkStatus();
    return Fail(FromRocks(status, op), op);
  }

  absl::Status FlushAndSync() {
    rocksdb::FlushOptions flush_options;
    flush_options.wait = true;
    if (absl::Status s = Check(db->Flush(flush_options, {usage, ledger, state}), "flush");
        !s.ok()) {
      return s;
    }
    return Check(db->SyncWAL(), "flush");
  }

  // Flushes, syncs and closes; handles go before the DB, as RocksDB requires.
  void Close() {
    if (db == nullptr) return;
    (void)FlushAndSync();  // already reported through on_error
    for (rocksdb::ColumnFamilyHandle* handle : handles) {
      (void)Check(db->DestroyColumnFamilyHandle(handle), "flush");
    }
    handles.clear();
    usage = ledger = state = nullptr;
    (void)Check(db->Close(), "flush");
    db.reset();
  }

  // Reads the pairs of family whose key starts with prefix, in key order.
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

MeterStore::MeterStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

MeterStore::~MeterStore() = default;

const std::filesystem::path& MeterStore::dir() const { return impl_->options.dir; }

absl::StatusOr<std::unique_ptr<MeterStore>> MeterStore::Open(const MeterStoreOptions& options) {
  if (options.dir.empty()) return absl::InvalidArgumentError("MeterStore needs a data dir");
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->write_options.sync = options.durability == Durability::kPower;
  impl->write_options.disableWAL = false;

  auto lock = DataDirLock::Acquire(options.dir);
  if (!lock.ok()) return impl->Fail(lock.status(), "open");
  impl->lock = *std::move(lock);

  rocksdb::ColumnFamilyOptions usage_options;
  usage_options.merge_operator = std::make_shared<UsageAddOperator>();
  const std::vector<rocksdb::ColumnFamilyDescriptor> families = {
      {rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions()},
      {std::string(kUsageFamily), usage_options},
      {std::string(kLedgerFamily), rocksdb::ColumnFamilyOptions()},
      {std::string(kStateFamily), rocksdb::ColumnFamilyOptions()},
  };
  const std::filesystem::path db_path = options.dir / kDbDirName;
  rocksdb::DB* raw_db = nullptr;
  const rocksdb::Status opened =
      rocksdb::DB::Open(MakeDbOptions(), db_path.string(), families, &impl->handles, &raw_db);
  if (!opened.ok()) {
    // Our flock is held, so whoever holds RocksDB's LOCK bypassed it (a tool,
    // or a raw DB in this process); its pid is unknown.
    if (opened.IsIOError() && absl::StrContains(opened.ToString(), "/LOCK")) {
      return impl->Fail(
          absl::FailedPreconditionError(absl::StrCat(DataDirInUseError(options.dir, 0).message(),
                                                     " (", opened.ToString(), ")")),
          "open");
    }
    return impl->Fail(FromRocks(opened, "open"), "open");
  }
  impl->db.reset(raw_db);
  impl->usage = impl->handles[1];
  impl->ledger = impl->handles[2];
  impl->state = impl->handles[3];
  return std::unique_ptr<MeterStore>(new MeterStore(std::move(impl)));
}

absl::Status MeterStore::AddUsage(const std::vector<UsageDelta>& deltas) {
  rocksdb::WriteBatch batch;
  for (const UsageDelta& delta : deltas) {
    if (absl::Status valid = ValidateUsageKey(delta.key); !valid.ok()) return valid;
    const rocksdb::Status s =
        batch.Merge(impl_->usage, EncodeUsageKey(delta.key), EncodeUsageCounters(delta.counters));
    if (!s.ok()) return impl_->Check(s, "add_usage");
  }
  if (batch.Count() == 0) return absl::OkStatus();
  return impl_->Check(impl_->db->Write(impl_->write_options, &batch), "add_usage");
}

absl::StatusOr<std::optional<UsageCounters>> MeterStore::GetUsage(const UsageKey& key) {
  if (absl::Status valid = ValidateUsageKey(key); !valid.ok()) return valid;
  rocksdb::PinnableSlice value;
  const rocksdb::Status s =
      impl_->db->Get(rocksdb::ReadOptions(), impl_->usage, EncodeUsageKey(key), &value);
  if (s.IsNotFound()) return std::nullopt;
  if (!s.ok()) return impl_->Check(s, "get_usage");
  auto counters = DecodeUsageCounters(ToView(value));
  if (!counters.ok()) return impl_->Fail(counters.status(), "get_usage");
  return *counters;
}

absl::StatusOr<std::vector<UsageDelta>> MeterStore::ScanUsage(const UsageQuery& query) {
  std::vector<UsageDelta> out;
  if (query.hour_begin >= query.hour_end) return out;
  // Narrow the scan to the longest key prefix the query fixes; with tenant,
  // model and device all given, keys are in hour order from hour_begin on.
  std::string prefix;
  bool hour_ordered = false;
  if (!query.tenant.empty()) {
    prefix = query.tenant + '\0';
    if (!query.model.empty()) {
      prefix += query.model + '\0';
      if (!query.device.empty()) {
        prefix += query.device + '\0';
        hour_ordered = true;
      }
    }
  }
  std::string seek_to = prefix;
  if (hour_ordered) {
    seek_to = EncodeUsageKey({query.tenant, query.model, query.device, query.hour_begin});
  }
  absl::Status status =
      impl_->ScanPrefix(impl_->usage, prefix, seek_to, "scan_usage",
                        [&](std::string_view key_bytes, std::string_view value) -> absl::Status {
                          auto key = DecodeUsageKey(key_bytes);
                          if (!key.ok()) return key.status();
                          if (key->hour >= query.hour_end && hour_ordered)
                            return absl::CancelledError();
                          if ((!query.tenant.empty() && key->tenant != query.tenant) ||
                              (!query.model.empty() && key->model != query.model) ||
                              (!query.device.empty() && key->device != query.device) ||
                              key->hour < query.hour_begin || key->hour >= query.hour_end) {
                            return absl::OkStatus();
                          }
                          auto counters = DecodeUsageCounters(value);
                          if (!counters.ok()) return counters.status();
                          out.push_back({*std::move(key), *counters});
                          return absl::OkStatus();
                        });
  if (!status.ok()) return status;
  return out;
}

absl::StatusOr<bool> MeterStore::PutLedger(std::string_view request_id, std::string_view record) {
  if (absl::Status valid = ValidateRequestId(request_id); !valid.ok()) return valid;
  absl::MutexLock hold(&impl_->ledger_mu);
  rocksdb::PinnableSlice existing;
  const rocksdb::Status found =
      impl_->db->Get(rocksdb::ReadOptions(), impl_->ledger, ToSlice(request_id), &existing);
  if (found.ok()) return false;
  if (!found.IsNotFound()) return impl_->Check(found, "put_ledger");
  absl::Status written = impl_->Check(
      impl_->db->Put(impl_->write_options, impl_->ledger, ToSlice(request_id), ToSlice(record)),
      "put_ledger");
  if (!written.ok()) return written;
  return true;
}

absl::StatusOr<std::optional<std::string>> MeterStore::GetLedger(std::string_view request_id) {
  if (absl::Status valid = ValidateRequestId(request_id); !valid.ok()) return valid;
  std::string record;
  const rocksdb::Status s =
      impl_->db->Get(rocksdb::ReadOptions(), impl_->ledger, ToSlice(request_id), &record);
  if (s.IsNotFound()) return std::nullopt;
  if (!s.ok()) return impl_->Check(s, "get_ledger");
  return record;
}

absl::Status MeterStore::ScanLedger(
    const std::function<bool(std::string_view id, std::string_view record)>& fn) {
  return impl_->ScanPrefix(impl_->ledger, "", "", "scan_ledger",
                           [&](std::string_view id, std::string_view record) {
                             return fn(id, record) ? absl::OkStatus() : absl::CancelledError();
                           });
}

absl::Status MeterStore::PutState(std::string_view key, std::string_view value) {
  if (absl::Status valid = ValidateStateKey(key); !valid.ok()) return valid;
  return impl_->Check(
      impl_->db->Put(impl_->write_options, impl_->state, ToSlice(key), ToSlice(value)),
      "put_state");
}

absl::Status MeterStore::DeleteState(std::string_view key) {
  if (absl::Status valid = ValidateStateKey(key); !valid.ok()) return valid;
  return impl_->Check(impl_->db->Delete(impl_->write_options, impl_->state, ToSlice(key)),
                      "delete_state");
}

absl::StatusOr<std::optional<std::string>> MeterStore::GetState(std::string_view key) {
  if (absl::Status valid = ValidateStateKey(key); !valid.ok()) return valid;
  std::string value;
  const rocksdb::Status s =
      impl_->db->Get(rocksdb::ReadOptions(), impl_->state, ToSlice(key), &value);
  if (s.IsNotFound()) return std::nullopt;
  if (!s.ok()) return impl_->Check(s, "get_state");
  return value;
}

absl::StatusOr<std::vector<std::pair<std::string, std::string>>> MeterStore::ListState(
    std::string_view prefix) {
  std::vector<std::pair<std::string, std::string>> out;
  absl::Status status = impl_->ScanPrefix(impl_->state, prefix, prefix, "list_state",
                                          [&](std::string_view key, std::string_view value) {
                                            out.emplace_back(key, value);
                                            return absl::OkStatus();
                                          });
  if (!status.ok()) return status;
  return out;
}

absl::Status MeterStore::Flush() { return impl_->FlushAndSync(); }

}  // namespace tokenmill::storage
