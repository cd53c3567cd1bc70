// FakeMeterSink: an in-memory storage::MeterSink for tests that need a store
// for Metering but not RocksDB. It keeps MeterStore's contracts (argument
// checks, a step all or nothing, a request's end once, recovery of what is
// in flight) and adds what a test needs to steer: a failure for the next
// writes, and a gate that holds every commit until the test opens it.
//
// Header-only. Thread-safe: steps may be recorded from several threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "storage/meter_sink.h"

namespace tokenmill::fakes {

class FakeMeterSink : public storage::MeterSink {
 public:
  absl::Status RecordStep(const storage::StepRecord& step) override {
    const storage::StepRecord* one[] = {&step};
    absl::Status result;
    RecordSteps(one, std::span<absl::Status>(&result, 1));
    return result;
  }

  void RecordSteps(std::span<const storage::StepRecord* const> steps,
                   std::span<absl::Status> results) override {
    absl::MutexLock lock(&mu_);
    ++commits_waiting_;
    mu_.Await(absl::Condition(&gate_open_));
    --commits_waiting_;
    absl::Status write = absl::OkStatus();
    if (fail_writes_ > 0) {
      --fail_writes_;
      write = absl::UnavailableError("fake meter sink: write refused");
    }
    bool any = false;
    for (size_t i = 0; i < steps.size(); ++i) {
      results[i] = Validate(*steps[i]);
      any = any || results[i].ok();
    }
    if (any) ++commits_;
    for (size_t i = 0; i < steps.size(); ++i) {
      if (!results[i].ok()) continue;
      results[i] = write;
      if (!write.ok()) continue;
      ++steps_;
      for (const storage::UsageDelta& d : steps[i]->usage) usage_[KeyOf(d.key)] += d.counters;
      for (const storage::RequestProgress& r : steps[i]->requests) {
        auto [it, added] = inflight_.try_emplace(r.request_id);
        if (added) {
          it->second.request_id = r.request_id;
          it->second.tenant = r.tenant;
          it->second.model = r.model;
          it->second.device = r.device;
          it->second.client_request_id = r.client_request_id;
          it->second.hour = r.hour != 0 ? r.hour : HourOf(*steps[i], r);
        }
        it->second.counters += r.delta;
      }
    }
  }

  absl::StatusOr<bool> FinishRequest(std::string_view request_id, std::string_view ledger_record,
                                     const std::vector<storage::UsageDelta>& usage) override {
    if (request_id.empty() || request_id.size() > 256) {
      return absl::InvalidArgumentError("request id must be 1 to 256 bytes");
    }
    absl::MutexLock lock(&mu_);
    if (fail_writes_ > 0) {
      --fail_writes_;
      return absl::UnavailableError("fake meter sink: write refused");
    }
    if (ledger_.contains(std::string(request_id))) return false;
    ledger_.emplace(std::string(request_id), std::string(ledger_record));
    inflight_.erase(std::string(request_id));
    for (const storage::UsageDelta& d : usage) usage_[KeyOf(d.key)] += d.counters;
    return true;
  }

  absl::StatusOr<size_t> RecoverInterrupted(
      const std::function<std::string(const storage::InterruptedRequest&)>& make_record) override {
    absl::MutexLock lock(&mu_);
    size_t written = 0;
    for (const auto& [id, entry] : inflight_) {
      if (ledger_.contains(id)) continue;
      ledger_.emplace(id, make_record(entry));
      storage::UsageCounters one;
      one.requests = 1;
      usage_[{entry.tenant, entry.model, entry.device, entry.hour}] += one;
      ++written;
    }
    inflight_.clear();
    return written;
  }

  absl::Status WriteHealth() const override { return absl::OkStatus(); }

  // --- steering -----------------------------------------------------------
  // The next `n` writes (steps or request ends) fail with kUnavailable.
  void FailNextWrites(int n) {
    absl::MutexLock lock(&mu_);
    fail_writes_ = n;
  }
  // While closed, every commit waits inside RecordStep(s) until it opens.
  void SetGateOpen(bool open) {
    absl::MutexLock lock(&mu_);
    gate_open_ = open;
  }
  // Waits until `n` commits are held at the closed gate.
  void AwaitCommitsWaiting(int n) {
    struct Arg {
      const int* waiting;
      int n;
    } arg{&commits_waiting_, n};
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](Arg* a) { return *a->waiting >= a->n; }, &arg));
  }

  // --- reads --------------------------------------------------------------
  std::optional<std::string> Ledger(const std::string& request_id) const {
    absl::MutexLock lock(&mu_);
    auto it = ledger_.find(request_id);
    if (it == ledger_.end()) return std::nullopt;
    return it->second;
  }
  // The sum of every usage key's counters.
  storage::UsageCounters UsageTotal() const {
    absl::MutexLock lock(&mu_);
    storage::UsageCounters sum;
    for (const auto& [_, c] : usage_) sum += c;
    return sum;
  }
  // The sum of the in-flight requests' counters.
  storage::UsageCounters InflightTotal() const {
    absl::MutexLock lock(&mu_);
    storage::UsageCounters sum;
    for (const auto& [_, e] : inflight_) sum += e.counters;
    return sum;
  }
  size_t steps() const {
    absl::MutexLock lock(&mu_);
    return steps_;
  }
  // Write batches that committed at least one step (a group commit is one).
  size_t commits() const {
    absl::MutexLock lock(&mu_);
    return commits_;
  }

 private:
  using Key = std::tuple<std::string, std::string, std::string, uint64_t>;
  static Key KeyOf(const storage::UsageKey& k) { return {k.tenant, k.model, k.device, k.hour}; }

  static bool HasNul(std::string_view s) { return s.find('\0') != std::string_view::npos; }
  static absl::Status Validate(const storage::StepRecord& step) {
    for (const storage::UsageDelta& d : step.usage) {
      if (HasNul(d.key.tenant) || HasNul(d.key.model) || HasNul(d.key.device)) {
        return absl::InvalidArgumentError("names must not contain 0x00");
      }
    }
    for (const storage::RequestProgress& r : step.requests) {
      if (r.request_id.empty() || r.request_id.size() > 256) {
        return absl::InvalidArgumentError("request id must be 1 to 256 bytes");
      }
      if (HasNul(r.tenant) || HasNul(r.model) || HasNul(r.device)) {
        return absl::InvalidArgumentError("names must not contain 0x00");
      }
    }
    return absl::OkStatus();
  }
  static uint64_t HourOf(const storage::StepRecord& step, const storage::RequestProgress& r) {
    for (const storage::UsageDelta& d : step.usage) {
      if (d.key.tenant == r.tenant) return d.key.hour;
    }
    return step.usage.empty() ? 0 : step.usage.front().key.hour;
  }

  mutable absl::Mutex mu_;
  bool gate_open_ ABSL_GUARDED_BY(mu_) = true;
  int commits_waiting_ ABSL_GUARDED_BY(mu_) = 0;
  int fail_writes_ ABSL_GUARDED_BY(mu_) = 0;
  size_t steps_ ABSL_GUARDED_BY(mu_) = 0;
  size_t commits_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<Key, storage::UsageCounters> usage_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, storage::InterruptedRequest, std::less<>> inflight_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string, std::less<>> ledger_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tokenmill::fakes
