// What a model instance reports for metering: every step's usage per
// sequence, and every finished request. Plain values; the daemon prices them
// (metering::Metering), writes them to the store and exports metrics.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "runtime/instance/generation.h"

namespace tokenmill::runtime {

// One sequence's part of a step. The views point into the instance's request
// state and are valid during the OnStep call only.
struct SequenceUsage {
  std::string_view request_id;
  std::string_view client_request_id;  // the client's X-Request-Id, "" when none
  std::string_view user;               // the client's end-user id, "" when none
  std::string_view tenant;
  int32_t prompt_tokens = 0;      // prompt tokens computed this step (first pass only)
  int32_t recomputed_tokens = 0;  // tokens recomputed after a preemption (cost, no charge)
  int32_t cached_tokens = 0;      // prompt tokens served from the prefix cache (at admission)
  int32_t generated_tokens = 0;   // 0 or 1
};

// One step of one instance on its device.
struct StepUsage {
  std::string model;
  std::string device;
  std::chrono::system_clock::time_point at{};       // when the step ended
  std::chrono::nanoseconds device_time{0};          // exclusive device time of the step
  int32_t batch_size = 0;                           // sequences in the step
  std::vector<SequenceUsage> seqs;                  // every sequence of the step
  std::vector<std::string_view> preempted_tenants;  // one entry per sequence preempted
};

// A request's end, whatever the outcome.
struct RequestRecord {
  std::string request_id;
  std::string client_request_id;
  std::string user;
  std::string tenant;
  std::string model;
  std::string device;
  GenerationUsage usage;
  FinishReason outcome = FinishReason::kStop;
  std::string error;  // when outcome == kError
  SteadyTime queued_at{};
  std::optional<SteadyTime> started_at;  // its first step: queue time = started - queued
  std::optional<SteadyTime> first_token_at;
  SteadyTime finished_at{};
  std::chrono::system_clock::time_point finished_wall{};
};

// Called on the instance's engine thread (OnFinish also on the thread that
// stops the instance, for what is left once the engine thread has ended;
// never both at once), synchronously: OnStep after a
// step's tokens are sampled and BEFORE they are sent to clients (a token is
// metered before it is sent); OnFinish before a request's last update is
// sent. Implementations must be quick and must not call into the instance.
// One observer per instance, so no locking is needed for its own state.
class UsageObserver {
 public:
  virtual ~UsageObserver() = default;
  // An error (the metering store failed) ends the step's requests with that
  // error instead of sending tokens nobody recorded.
  virtual absl::Status OnStep(const StepUsage& step) = 0;
  virtual void OnFinish(const RequestRecord& record) = 0;
};

using UsageObserverPtr = std::unique_ptr<UsageObserver>;

}  // namespace tokenmill::runtime
