// UsageApi: metered usage on the control socket, from the store's hourly
// counters.
//
//   GET /control/v1/usage?tenant=&model=&device=&from=&to=&group=&by_device=&format=
//
// tenant, model, device: optional filters (an unknown model or device gives
// no rows; an unknown tenant is 404 unless it has recorded usage, so that
// the usage of a removed tenant stays readable). from, to: RFC 3339
// (2026-11-29T10:00:00Z), a UTC date (2026-11-29) or unix seconds; from is
// rounded down and to (exclusive) up to the hour; default the last 24 h,
// ending with the current hour. group: hour (default) | day (UTC) | total.
// by_device: true | false (default). format: json (default) | csv; without
// format, "Accept: text/csv" asks for CSV.
//
// JSON: {"from","to","group","currency","rows":[ROW...],"totals":SUMS}.
// ROW: {"tenant","model","device" (by_device only),"period_start" (RFC 3339;
// the range's from for group=total),"prompt_tokens","cached_tokens",
// "generated_tokens","requests","device_seconds","energy_joules","cost",
// "revenue","margin","cost_per_mtok","yield_tokens_per_usd"}; SUMS: the same
// counters and ratios over all rows. Money is in the currency (the store's
// nano-units / 1e9). The ratios count prompt + generated tokens (cached
// prompt tokens cost no compute): cost_per_mtok = cost / tokens x 1e6, null
// without tokens; yield = tokens / cost, null when cost is 0.
//
// CSV (RFC 4180, CRLF): a header line, then one line per ROW in the same
// order; exact decimals for money; an empty field for a null ratio.
//
// Errors, 400 naming the parameter and the rule: unknown or repeated
// parameter, bad time, from >= to, a range over 366 days (over 31 days with
// group=hour), unknown group, format or by_device value; 404 for an unknown
// tenant.
//
// Loop thread only: the store is read inline. That is fine because the range
// is bounded (at most 366 days of hourly keys per tenant, model and device)
// and RocksDB serves such a scan from memory or the block cache in well under
// a millisecond per thousand keys.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "daemon/http/http_server.h"
#include "runtime/tenants/tenant_registry.h"
#include "storage/meter_store.h"

namespace tokenmill::daemon {

// A time parameter as unix seconds: RFC 3339 with any offset, a date
// (YYYY-MM-DD, midnight UTC) or unix seconds; from 1970 to 9999.
// kInvalidArgument naming `param` and the accepted forms.
absl::StatusOr<uint64_t> ParseUsageTime(std::string_view text, std::string_view param);

// A query string's parameters by name, %-decoded ('+' is a space). A name not
// in `known`, one given twice or a bad %-escape is kInvalidArgument naming it.
absl::StatusOr<std::map<std::string, std::string>> ParseQueryParams(
    std::string_view query, std::initializer_list<const char*> known);

// One RFC 4180 field: quoted (quotes doubled) when it holds a comma, quote,
// CR or LF.
std::string CsvField(std::string_view field);

class UsageApi {
 public:
  using WallClock = std::function<std::chrono::system_clock::time_point()>;

  // `store` and `registry` outlive the API. `currency` is the config's
  // [cost] currency, reported with every answer. `clock` gives "now" for the
  // default range (injectable for tests).
  UsageApi(
      storage::MeterStore& store, tenants::TenantRegistry& registry, std::string currency,
      WallClock clock = [] { return std::chrono::system_clock::now(); });

  // Handles /control/v1/usage and returns true; false for other paths.
  bool Handle(const http::HttpRequest& request, const http::ResponseWriterPtr& response);

 private:
  storage::MeterStore& store_;
  tenants::TenantRegistry& registry_;
  std::string currency_;
  WallClock clock_;
};

}  // namespace tokenmill::daemon
