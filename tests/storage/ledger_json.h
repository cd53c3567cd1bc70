// The ledger record contract of MeterStore::FinishRequest, as the storage
// tests and the crash writer write and read it: a JSON object with the
// request's token and money totals.
#pragma once

#include <string>
#include <string_view>

#include "nlohmann/json.hpp"
#include "storage/meter_store.h"

namespace tokenmill::storage::testing {

// A ledger record holding the counters the ledger sums over.
inline std::string LedgerJson(std::string_view request_id, const UsageCounters& totals,
                              std::string_view outcome) {
  nlohmann::json record = {
      {"request_id", std::string(request_id)}, {"prompt_tokens", totals.prompt_tokens},
      {"cached_tokens", totals.cached_tokens}, {"generated_tokens", totals.generated_tokens},
      {"cost_nusd", totals.cost_nusd},         {"revenue_nusd", totals.revenue_nusd},
      {"outcome", std::string(outcome)}};
  return record.dump();
}

// The summed fields of a record; requests = 1 (one record, one request).
// A record that does not parse yields requests = 0, which the sums expose.
inline UsageCounters LedgerCounters(std::string_view record) {
  UsageCounters c;
  const nlohmann::json j = nlohmann::json::parse(record, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return c;
  c.prompt_tokens = j.value("prompt_tokens", uint64_t{0});
  c.cached_tokens = j.value("cached_tokens", uint64_t{0});
  c.generated_tokens = j.value("generated_tokens", uint64_t{0});
  c.cost_nusd = j.value("cost_nusd", uint64_t{0});
  c.revenue_nusd = j.value("revenue_nusd", uint64_t{0});
  c.requests = 1;
  return c;
}

// The fields the ledger and usage must agree on (device time and energy are
// step-level and only in usage).
inline UsageCounters LedgerFields(UsageCounters c) {
  c.device_ns = 0;
  c.energy_uj = 0;
  return c;
}

}  // namespace tokenmill::storage::testing
