// Reads and writes of a MeterStore for tests, through the APIs the product
// uses only (QueryUsage, ReadLedgerPage, ListState; RecordStep,
// FinishRequest): what a test needs to fill the store and check its content
// without test-only methods on the store itself.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "storage/meter_store.h"
#include "storage/meter_types.h"

namespace tokenmill::testing {

// Every usage key's counters summed (all tenants, models, devices, hours).
inline absl::StatusOr<storage::UsageCounters> UsageTotal(storage::MeterStore& store) {
  auto rows = store.QueryUsage(storage::UsageQuery{}, storage::UsageGrouping::kTotal, true);
  if (!rows.ok()) return rows.status();
  storage::UsageCounters sum;
  for (const storage::UsageRow& row : *rows) sum += row.counters;
  return sum;
}

// The usage keys `query` selects with their counters, in key order (tenant,
// model, device, hour), as the store's hourly rows per device give them.
inline absl::StatusOr<std::vector<storage::UsageDelta>> UsageDeltas(
    storage::MeterStore& store, const storage::UsageQuery& query = {}) {
  auto rows = store.QueryUsage(query, storage::UsageGrouping::kHour, /*by_device=*/true);
  if (!rows.ok()) return rows.status();
  std::vector<storage::UsageDelta> out;
  out.reserve(rows->size());
  for (storage::UsageRow& row : *rows) {
    out.push_back({{std::move(row.tenant), std::move(row.model), std::move(row.device),
                    row.period_start / 3600},
                   row.counters});
  }
  std::sort(out.begin(), out.end(), [](const storage::UsageDelta& a, const storage::UsageDelta& b) {
    return std::tie(a.key.tenant, a.key.model, a.key.device, a.key.hour) <
           std::tie(b.key.tenant, b.key.model, b.key.device, b.key.hour);
  });
  return out;
}

// One usage key's counters, or nullopt when the store has none for it.
inline absl::StatusOr<std::optional<storage::UsageCounters>> UsageAt(storage::MeterStore& store,
                                                                     const storage::UsageKey& key) {
  if (key.tenant.empty() || key.model.empty() || key.device.empty()) {
    return absl::InvalidArgumentError("a usage key names its tenant, model and device");
  }
  auto deltas = UsageDeltas(store, {key.tenant, key.model, key.device, key.hour, key.hour + 1});
  if (!deltas.ok()) return deltas.status();
  if (deltas->empty()) return std::nullopt;
  return deltas->front().counters;
}

// The value of one state key, or nullopt.
inline absl::StatusOr<std::optional<std::string>> StateValue(storage::MeterStore& store,
                                                             std::string_view key) {
  auto pairs = store.ListState(key);
  if (!pairs.ok()) return pairs.status();
  for (auto& [k, v] : *pairs) {
    if (k == key) return std::move(v);
  }
  return std::nullopt;
}

// Adds usage as the metering writer does: a step with these usage deltas
// and no request progress.
inline absl::Status AddUsage(storage::MeterStore& store, std::vector<storage::UsageDelta> deltas) {
  storage::StepRecord step;
  step.usage = std::move(deltas);
  return store.RecordStep(step);
}

// Writes a ledger record as a request's end does (FinishRequest with no
// final usage): true when written, false when the id was already there.
inline absl::StatusOr<bool> PutLedger(storage::MeterStore& store, std::string_view request_id,
                                      std::string_view record) {
  return store.FinishRequest(request_id, record, {});
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
