// What the crash writer child (crash_writer_main.cc) writes, shared with the
// test that checks what survived.
#pragma once

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

}  // namespace tokenmill::storage::testing
