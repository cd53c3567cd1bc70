// MeterSink: the writes metering makes, as an interface, so that Metering
// depends on what it needs of the store and tests can put an in-memory store
// (tests/fakes/fake_meter_sink.h) or a store that holds commits in its place.
// MeterStore (meter_store.h) is the production implementation; the contracts
// below are MeterStore's, and a fake must keep them.
#pragma once

#include <cstddef>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "storage/meter_types.h"

namespace tokenmill::storage {

class MeterSink {
 public:
  virtual ~MeterSink() = default;

  // Writes a step atomically: each usage delta and each request's delta
  // merged into its inflight entry. A bad request id (not 1 to 256 bytes) or
  // a name with 0x00 is kInvalidArgument and nothing is written.
  virtual absl::Status RecordStep(const StepRecord& step) = 0;

  // Writes several steps in one atomic, synced-once commit (group commit):
  // results[i] (results.size() == steps.size()) is steps[i]'s outcome. A step
  // refused for its arguments (as RecordStep) is left out and gets its own
  // error; the others commit together or all fail with the write's error.
  virtual void RecordSteps(std::span<const StepRecord* const> steps,
                           std::span<absl::Status> results) = 0;

  // Ends a request atomically: the ledger record, the inflight entry removed,
  // `usage` merged. false (nothing written) when the ledger already holds
  // request_id.
  virtual absl::StatusOr<bool> FinishRequest(std::string_view request_id,
                                             std::string_view ledger_record,
                                             const std::vector<UsageDelta>& usage) = 0;

  // Start-up: turns every inflight entry into a ledger record (make_record
  // writes it from the entry); returns how many.
  virtual absl::StatusOr<size_t> RecoverInterrupted(
      const std::function<std::string(const InterruptedRequest&)>& make_record) = 0;

  // OkStatus while writes are taken; kUnavailable while the store is
  // unwritable (a full disk). Cheap, no I/O.
  virtual absl::Status WriteHealth() const = 0;
};

}  // namespace tokenmill::storage
