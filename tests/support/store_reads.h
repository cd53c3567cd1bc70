// Reads of a MeterStore for tests, through its public read APIs only
// (QueryUsage, ReadLedgerPage): what a test needs to check the store's
// content without test-only methods on the store itself.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "storage/meter_store.h"

namespace tokenmill::testing {

// Every usage key's counters summed (all tenants, models, devices, hours).
inline absl::StatusOr<storage::UsageCounters> UsageTotal(storage::MeterStore& store) {
  auto rows = store.QueryUsage(storage::UsageQuery{}, storage::UsageGrouping::kTotal, true);
  if (!rows.ok()) return rows.status();
  storage::UsageCounters sum;
  for (const storage::UsageRow& row : *rows) sum += row.counters;
  return sum;
}

// Visits every committed ledger record in commit order; stops when fn
// returns false.
inline absl::Status ForEachLedgerRecord(
    storage::MeterStore& store,
    const std::function<bool(std::string_view id, std::string_view record)>& fn) {
  uint64_t after = 0;
  for (;;) {
    auto page = store.ReadLedgerPage(after, UINT64_MAX, 1000);
    if (!page.ok()) return page.status();
    for (const storage::LedgerEntry& e : page->entries) {
      if (!fn(e.request_id, e.record)) return absl::OkStatus();
    }
    if (page->last_seq <= after) return absl::OkStatus();  // read up to the watermark
    after = page->last_seq;
  }
}

// The ledger record of one request, if the ledger holds it.
inline absl::StatusOr<std::optional<std::string>> LedgerRecord(storage::MeterStore& store,
                                                               std::string_view request_id) {
  std::optional<std::string> found;
  absl::Status s = ForEachLedgerRecord(store, [&](std::string_view id, std::string_view record) {
    if (id != request_id) return true;
    found = std::string(record);
    return false;
  });
  if (!s.ok()) return s;
  return found;
}

}  // namespace tokenmill::testing
