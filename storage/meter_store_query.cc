// MeterStore: usage grouped for the usage API and `tokenmill usage`.
#include <map>
#include <string>
#include <tuple>
#include <utility>

#include "storage/meter_store.h"
#include "storage/meter_store_impl.h"

namespace tokenmill::storage {
namespace {

constexpr uint64_t kSecondsPerHour = 3600;
constexpr uint64_t kHoursPerDay = 24;

uint64_t PeriodStart(uint64_t hour, UsageGrouping grouping) {
  switch (grouping) {
    case UsageGrouping::kHour:
      return hour * kSecondsPerHour;
    case UsageGrouping::kDay:
      // Unix time has no leap seconds, so UTC days are whole multiples of 24 h.
      return hour / kHoursPerDay * kHoursPerDay * kSecondsPerHour;
    case UsageGrouping::kTotal:
      break;
  }
  return 0;
}

}  // namespace

absl::StatusOr<std::vector<UsageRow>> MeterStore::QueryUsage(const UsageQuery& query,
                                                             UsageGrouping grouping,
                                                             bool by_device) {
  auto deltas = ScanUsage(query);
  if (!deltas.ok()) return deltas.status();
  // The map's key order is the rows' order.
  using GroupKey = std::tuple<uint64_t, std::string, std::string, std::string>;
  std::map<GroupKey, UsageCounters> groups;
  for (UsageDelta& delta : *deltas) {
    GroupKey key(PeriodStart(delta.key.hour, grouping), std::move(delta.key.tenant),
                 std::move(delta.key.model), by_device ? std::move(delta.key.device) : "");
    groups[std::move(key)] += delta.counters;
  }
  std::vector<UsageRow> rows;
  rows.reserve(groups.size());
  for (auto& [key, counters] : groups) {
    UsageRow row;
    row.period_start = std::get<0>(key);
    row.tenant = std::move(std::get<1>(key));
    row.model = std::move(std::get<2>(key));
    row.device = std::move(std::get<3>(key));
    row.counters = counters;
    rows.push_back(std::move(row));
  }
  return rows;
}

absl::StatusOr<bool> MeterStore::HasTenantUsage(std::string_view tenant) {
  if (absl::Status valid = ValidateNames(tenant, "", ""); !valid.ok()) return valid;
  const std::string prefix = std::string(tenant) + '\0';
  bool found = false;
  absl::Status status = impl_->ScanPrefix(impl_->usage, prefix, prefix, "scan_usage",
                                          [&](std::string_view, std::string_view) {
                                            found = true;
                                            return absl::CancelledError();
                                          });
  if (!status.ok()) return status;
  return found;
}

}  // namespace tokenmill::storage
