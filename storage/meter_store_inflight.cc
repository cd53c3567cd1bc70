// MeterStore: steps of requests in flight, their end, and recovery of those a
// crash interrupted (the `inflight` family; see meter_store.h).
#include <chrono>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "rocksdb/write_batch.h"
#include "storage/inflight_entry.h"
#include "storage/meter_store.h"
#include "storage/meter_store_impl.h"

namespace tokenmill::storage {
namespace {

// Bytes a WriteBatch record takes beyond its key and value (tag, family id,
// two varint lengths), rounded up; only sizes the reservation.
constexpr size_t kBatchRecordOverhead = 16;

// The hour a request's entry is created with when the caller gave none: that
// of the step's usage of the same (tenant, model, device), as the metering
// writer keys usage by the step's hour.
uint64_t EntryHour(const StepRecord& step, const RequestProgress& request) {
  if (request.hour != 0) return request.hour;
  for (const UsageDelta& delta : step.usage) {
    if (delta.key.tenant == request.tenant && delta.key.model == request.model &&
        delta.key.device == request.device) {
      return delta.key.hour;
    }
  }
  if (!step.usage.empty()) return step.usage.front().key.hour;
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::hours>(now).count());
}

}  // namespace

namespace {

// A step's arguments, checked before anything is written; `bytes` grows by
// the step's share of the WriteBatch.
absl::Status ValidateStep(const StepRecord& step, size_t& bytes) {
  for (const UsageDelta& delta : step.usage) {
    if (absl::Status valid = ValidateUsageKey(delta.key); !valid.ok()) return valid;
    bytes += kBatchRecordOverhead + kUsageValueBytes + delta.key.tenant.size() +
             delta.key.model.size() + delta.key.device.size() + 11;
  }
  for (const RequestProgress& request : step.requests) {
    if (absl::Status valid = ValidateRequestId(request.request_id); !valid.ok()) return valid;
    if (absl::Status valid = ValidateNames(request.tenant, request.model, request.device);
        !valid.ok()) {
      return valid;
    }
    if (request.client_request_id.find('\0') != std::string::npos) {
      return absl::InvalidArgumentError("a client request id must not hold a 0x00 byte");
    }
    bytes += kBatchRecordOverhead + kInflightFixedBytes + request.request_id.size() +
             request.tenant.size() + request.model.size() + request.device.size() +
             request.client_request_id.size() + request.user.size() + 4;
  }
  return absl::OkStatus();
}

}  // namespace

rocksdb::Status MeterStore::Impl::AddStep(const StepRecord& step, rocksdb::WriteBatch& batch,
                                          std::string& value) {
  for (const UsageDelta& delta : step.usage) {
    const rocksdb::Status s =
        batch.Merge(usage, EncodeUsageKey(delta.key), EncodeUsageCounters(delta.counters));
    if (!s.ok()) return s;
  }
  for (const RequestProgress& request : step.requests) {
    EncodeInflightEntry(request.delta, EntryHour(step, request), request.tenant, request.model,
                        request.device, request.client_request_id, request.user, value);
    const rocksdb::Status s = batch.Merge(inflight, ToSlice(request.request_id), ToSlice(value));
    if (!s.ok()) return s;
  }
  return rocksdb::Status::OK();
}

absl::Status MeterStore::RecordStep(const StepRecord& step) {
  // Validated up front so that a bad argument writes nothing.
  size_t bytes = 0;
  if (absl::Status valid = ValidateStep(step, bytes); !valid.ok()) return valid;
  if (step.usage.empty() && step.requests.empty()) return absl::OkStatus();

  rocksdb::WriteBatch batch(bytes + 64);
  std::string value;  // reused: one allocation per step, not per request
  value.reserve(kInflightFixedBytes + 64);
  if (rocksdb::Status s = impl_->AddStep(step, batch, value); !s.ok()) {
    return impl_->Check(s, "record_step");
  }
  if (absl::Status gate = impl_->WriteGate("record_step"); !gate.ok()) return gate;
  absl::Status written =
      impl_->Written(impl_->db->Write(impl_->write_options, &batch), "record_step");
  if (written.ok()) impl_->AddInflight(step);
  return written;
}

void MeterStore::RecordSteps(std::span<const StepRecord* const> steps,
                             std::span<absl::Status> results) {
  size_t bytes = 0;
  bool any = false;
  for (size_t i = 0; i < steps.size(); ++i) {
    results[i] = ValidateStep(*steps[i], bytes);
    any = any || (results[i].ok() && !(steps[i]->usage.empty() && steps[i]->requests.empty()));
  }
  if (!any) return;
  rocksdb::WriteBatch batch(bytes + 64);
  std::string value;
  value.reserve(kInflightFixedBytes + 64);
  absl::Status written;
  for (size_t i = 0; i < steps.size() && written.ok(); ++i) {
    if (!results[i].ok()) continue;
    if (rocksdb::Status s = impl_->AddStep(*steps[i], batch, value); !s.ok()) {
      written = impl_->Check(s, "record_step");
    }
  }
  if (written.ok()) written = impl_->WriteGate("record_step");
  if (written.ok()) {
    written = impl_->Written(impl_->db->Write(impl_->write_options, &batch), "record_step");
  }
  for (size_t i = 0; i < steps.size(); ++i) {
    if (!results[i].ok()) continue;
    results[i] = written;
    if (written.ok()) impl_->AddInflight(*steps[i]);
  }
}

absl::StatusOr<bool> MeterStore::FinishRequest(std::string_view request_id,
                                               std::string_view ledger_record,
                                               const std::vector<UsageDelta>& usage) {
  if (absl::Status valid = ValidateRequestId(request_id); !valid.ok()) return valid;
  for (const UsageDelta& delta : usage) {
    if (absl::Status valid = ValidateUsageKey(delta.key); !valid.ok()) return valid;
  }
  // Per id, not global: a synced write here must not hold up other requests'
  // ends (they group-commit instead).
  absl::MutexLock hold(&impl_->LedgerStripe(request_id));
  auto found = impl_->LedgerHas(request_id, "finish_request");
  if (!found.ok()) return found.status();
  if (*found) return false;
  if (absl::Status gate = impl_->WriteGate("finish_request"); !gate.ok()) return gate;

  rocksdb::WriteBatch batch;
  rocksdb::Status s = batch.Delete(impl_->inflight, ToSlice(request_id));
  for (const UsageDelta& delta : usage) {
    if (!s.ok()) break;
    s = batch.Merge(impl_->usage, EncodeUsageKey(delta.key), EncodeUsageCounters(delta.counters));
  }
  if (!s.ok()) return impl_->Check(s, "finish_request");
  if (absl::Status written =
          impl_->CommitLedger(request_id, ledger_record, batch, "finish_request");
      !written.ok()) {
    return written;
  }
  impl_->RemoveInflight(request_id);
  return true;
}

absl::StatusOr<size_t> MeterStore::RecoverInterrupted(
    const std::function<std::string(const InterruptedRequest&)>& make_record) {
  // Runs alone at start-up; all stripes keep any other ledger writer out.
  std::vector<std::unique_ptr<absl::MutexLock>> holds;
  for (absl::Mutex& stripe : impl_->ledger_stripes) {
    holds.push_back(std::make_unique<absl::MutexLock>(&stripe));
  }
  size_t recovered = 0;
  // The iterator reads an implicit snapshot, so the deletes below do not
  // disturb it. Errors are returned unreported: ScanPrefix reports them once.
  absl::Status status = impl_->ScanPrefix(
      impl_->inflight, "", "", "recover",
      [&](std::string_view id, std::string_view value) -> absl::Status {
        auto entry = DecodeInflightEntry(value);
        if (!entry.ok()) {
          return absl::DataLossError(absl::StrCat("recover: inflight entry of request '",
                                                  std::string(id),
                                                  "': ", std::string(entry.status().message())));
        }
        rocksdb::WriteBatch batch;
        rocksdb::Status s = batch.Delete(impl_->inflight, ToSlice(id));
        rocksdb::PinnableSlice existing;
        const rocksdb::Status found =
            impl_->db->Get(rocksdb::ReadOptions(), impl_->ledger, ToSlice(id), &existing);
        if (!found.ok() && !found.IsNotFound()) return FromRocks(found, "recover");
        const bool write_record = found.IsNotFound();
        if (write_record) {
          InterruptedRequest request;
          request.request_id.assign(id);
          request.tenant = entry->tenant;
          request.model = entry->model;
          request.device = entry->device;
          request.client_request_id = entry->client_request_id;
          request.user = entry->user;
          request.counters = entry->counters;
          request.hour = entry->hour;
          const std::string record = make_record(request);
          UsageCounters counted;
          counted.requests = 1;
          if (s.ok()) {
            s = batch.Merge(impl_->usage,
                            EncodeUsageKey({std::move(request.tenant), std::move(request.model),
                                            std::move(request.device), request.hour}),
                            EncodeUsageCounters(counted));
          }
          if (!s.ok()) return FromRocks(s, "recover");
          if (absl::Status gate = impl_->WriteGate(""); !gate.ok()) return gate;
          // Errors unreported here: ScanPrefix reports them once.
          if (absl::Status w = impl_->CommitLedger(id, record, batch, ""); !w.ok()) return w;
          impl_->RemoveInflight(id);
          ++recovered;
          return absl::OkStatus();
        }
        if (!s.ok()) return FromRocks(s, "recover");
        if (absl::Status gate = impl_->WriteGate(""); !gate.ok()) return gate;
        s = impl_->db->Write(impl_->write_options, &batch);
        if (!s.ok()) {
          impl_->EnterUnwritable(s);
          return FromRocks(s, "recover");
        }
        impl_->MarkWritten();
        impl_->RemoveInflight(id);
        return absl::OkStatus();
      });
  if (!status.ok()) return status;
  return recovered;
}

void MeterStore::Impl::AddInflight(const StepRecord& step) {
  absl::MutexLock hold(&inflight_total_mu);
  for (const RequestProgress& request : step.requests) {
    inflight_total += request.delta;
    inflight_by_request[request.request_id] += request.delta;
  }
}

void MeterStore::Impl::RemoveInflight(std::string_view request_id) {
  absl::MutexLock hold(&inflight_total_mu);
  auto it = inflight_by_request.find(absl::string_view(request_id.data(), request_id.size()));
  if (it == inflight_by_request.end()) return;
  inflight_total.SubtractSaturating(it->second);
  inflight_by_request.erase(it);
}

absl::Status MeterStore::Impl::ScanInflight(
    bool skip_malformed, const std::function<void(std::string_view, const UsageCounters&)>& fn) {
  return ScanPrefix(inflight, "", "", "sum_inflight",
                    [&](std::string_view id, std::string_view value) -> absl::Status {
                      auto entry = DecodeInflightEntry(value);
                      if (entry.ok()) {
                        fn(id, entry->counters);
                      } else if (!skip_malformed) {
                        return entry.status();
                      }
                      return absl::OkStatus();
                    });
}

UsageCounters MeterStore::InflightTotal() const {
  absl::MutexLock hold(&impl_->inflight_total_mu);
  return impl_->inflight_total;
}

}  // namespace tokenmill::storage
