#include "storage/meter_store.h"

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "storage/meter_store_impl.h"

namespace tokenmill::storage {

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

absl::Status ValidateNames(std::string_view tenant, std::string_view model,
                           std::string_view device) {
  for (std::string_view name : {tenant, model, device}) {
    if (name.find('\0') != std::string_view::npos) {
      return absl::InvalidArgumentError("tenant, model and device names must not contain 0x00");
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateUsageKey(const UsageKey& key) {
  return ValidateNames(key.tenant, key.model, key.device);
}

namespace {

absl::Status ValidateStateKey(std::string_view key) {
  if (key.empty()) return absl::InvalidArgumentError("state key must not be empty");
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<bool> MeterStore::Impl::LedgerHas(std::string_view request_id, std::string_view op) {
  rocksdb::PinnableSlice existing;
  const rocksdb::Status found =
      db->Get(rocksdb::ReadOptions(), ledger, ToSlice(request_id), &existing);
  if (found.ok()) return true;
  if (found.IsNotFound()) return false;
  return Check(found, op);
}

absl::Status MeterStore::Impl::FlushAndSync() {
  rocksdb::FlushOptions flush_options;
  flush_options.wait = true;
  if (absl::Status s =
          Check(db->Flush(flush_options, {usage, ledger, state, inflight, ledger_seq}), "flush");
      !s.ok()) {
    return s;
  }
  return Check(db->SyncWAL(), "flush");
}

void MeterStore::Impl::Close() {
  if (db == nullptr) return;
  absl::Status health;
  {
    absl::MutexLock hold(&health_mu);
    health = unwritable;
  }
  if (!health.ok()) {
    // Closing RocksDB after a failed WAL write flushes the failed log writer,
    // which Debian's RocksDB (assertions on) aborts on. Leave it open, and
    // reachable, until the process exits: every acknowledged write is in the
    // WAL, and the next open recovers it (the failed write is a torn tail).
    static auto* const abandoned = new std::vector<std::unique_ptr<rocksdb::DB>>();
    static auto* const abandoned_handles = new std::vector<rocksdb::ColumnFamilyHandle*>();
    Log(StoreLogLevel::kError,
        absl::StrCat("store_left_open dir=", options.dir.string(), " reason=\"", health.message(),
                     "\" recovery=\"the next start replays the WAL\""));
    abandoned_handles->insert(abandoned_handles->end(), handles.begin(), handles.end());
    handles.clear();
    usage = ledger = state = inflight = nullptr;
    abandoned->push_back(std::move(db));
    return;
  }
  (void)FlushAndSync();  // already reported through on_error
  for (rocksdb::ColumnFamilyHandle* handle : handles) {
    (void)Check(db->DestroyColumnFamilyHandle(handle), "flush");
  }
  handles.clear();
  usage = ledger = state = inflight = ledger_seq = nullptr;
  (void)Check(db->Close(), "flush");
  db.reset();
}

MeterStore::MeterStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

MeterStore::~MeterStore() = default;

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

absl::Status MeterStore::PutState(std::string_view key, std::string_view value) {
  if (absl::Status valid = ValidateStateKey(key); !valid.ok()) return valid;
  if (absl::Status gate = impl_->WriteGate("put_state"); !gate.ok()) return gate;
  return impl_->Written(
      impl_->db->Put(impl_->write_options, impl_->state, ToSlice(key), ToSlice(value)),
      "put_state");
}

absl::Status MeterStore::DeleteState(std::string_view key) {
  if (absl::Status valid = ValidateStateKey(key); !valid.ok()) return valid;
  if (absl::Status gate = impl_->WriteGate("delete_state"); !gate.ok()) return gate;
  return impl_->Written(impl_->db->Delete(impl_->write_options, impl_->state, ToSlice(key)),
                        "delete_state");
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

absl::Status MeterStore::Flush() {
  if (absl::Status gate = impl_->WriteGate("flush"); !gate.ok()) return gate;
  return impl_->FlushAndSync();
}

const std::optional<StoreLoss>& MeterStore::accepted_loss() const { return impl_->accepted_loss; }

}  // namespace tokenmill::storage
