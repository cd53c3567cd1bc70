// What the crash writer child (crash_writer_main.cc) writes, shared with the
// test that checks what survived.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "storage/meter_store.h"

namespace tokenmill::storage::testing {

// Added to each key once per batch; odd values so that a partial or doubled
// batch cannot hide in the totals.
inline constexpr UsageCounters kBatchDelta = {.prompt_tokens = 7,
                                              .cached_tokens = 3,
                                              .generated_tokens = 11,
                                              .requests = 1,
                                              .device_ns = 1'000'003,
                                              .energy_uj = 13,
                                              .cost_nusd = 999'983,
                                              .revenue_nusd = 1'999'993};

// Several keys per batch, across tenants, so that the test can see a batch is
// atomic: every key must hold the same number of deltas.
inline std::vector<UsageKey> CrashWriterKeys() {
  return {{"acme", "llama", "cuda:0", 100},
          {"acme", "llama", "cuda:1", 100},
          {"globex", "qwen", "cpu", 101}};
}

// "steps" mode: this many requests are in every step (a finished request is
// replaced before the next step), each generating one token per step.
inline constexpr uint64_t kStepRequests = 6;

// Request n of the steps mode: its id, tenant and length in steps (lengths
// differ so that requests end at different steps).
inline std::string StepRequestId(uint64_t n) { return "req-" + std::to_string(n); }
inline std::string StepRequestTenant(uint64_t n) { return n % 2 == 0 ? "acme" : "globex"; }
inline uint64_t StepRequestLength(uint64_t n) { return 2 + n % 5; }

// Request n's delta in its step-th step (from 0): its prompt on the first,
// one token each, and money that differs per request and step.
inline UsageCounters StepRequestDelta(uint64_t n, uint64_t step) {
  UsageCounters c;
  c.prompt_tokens = step == 0 ? 10 + n % 7 : 0;
  c.cached_tokens = step == 0 ? n % 3 : 0;
  c.generated_tokens = 1;
  c.cost_nusd = 1'000 + 7 * n + step;
  c.revenue_nusd = 3'000 + 11 * n + step;
  return c;
}

inline constexpr uint64_t kStepHour = 480'000;

}  // namespace tokenmill::storage::testing
