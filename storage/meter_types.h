// The plain values metering hands the store: usage counters and keys, a
// step's record, a request's progress and what recovery finds of it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

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
  // Field by field, stopping at 0 (a running total never goes negative).
  UsageCounters& SubtractSaturating(const UsageCounters& other);
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

// One usage delta of a step.
struct UsageDelta {
  UsageKey key;
  UsageCounters counters;
};

// One request's part of a step: what it added to its own running totals.
struct RequestProgress {
  std::string request_id;  // 1 to 256 bytes, unique per request (see FinishRequest)
  std::string tenant;
  std::string model;
  std::string device;
  std::string client_request_id;  // kept for the ledger record if a crash interrupts it; no 0x00
  std::string user;               // the client's end-user id, kept likewise
  UsageCounters delta;  // requests stays 0 here: FinishRequest / recovery count the request
  // The hour of the request's first step (unix seconds / 3600), kept by the
  // entry for recovery's requests += 1. 0 takes the hour of the step's usage
  // delta with the same tenant, model and device (else the step's first one,
  // else the current hour), which is what the metering writer wants.
  uint64_t hour = 0;
};

// Everything one engine step adds to the store, written atomically.
struct StepRecord {
  // The step's usage, aggregated by key (a few keys per step); its token and
  // money counters should equal the sum of requests[].delta so that the
  // ledger sums to usage.
  std::vector<UsageDelta> usage;
  std::vector<RequestProgress> requests;
};

// What RecoverInterrupted found of a request that never finished.
struct InterruptedRequest {
  std::string request_id;
  std::string tenant;
  std::string model;
  std::string device;
  std::string client_request_id;  // as its RecordStep calls gave it
  std::string user;               // likewise
  UsageCounters counters;         // the sum of its RecordStep deltas
  uint64_t hour = 0;              // the hour of its first step (unix seconds / 3600)
};

}  // namespace tokenmill::storage
