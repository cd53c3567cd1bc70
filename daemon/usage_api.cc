#include "daemon/usage_api.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "daemon/api_errors.h"
#include "nlohmann/json.hpp"

namespace tokenmill::daemon {
namespace {

using nlohmann::json;

constexpr std::string_view kUsagePath = "/control/v1/usage";
constexpr uint64_t kHour = 3600;
constexpr uint64_t kDay = 24 * kHour;
constexpr uint64_t kMaxRangeDays = 366;
constexpr uint64_t kMaxHourlyRangeDays = 31;
constexpr uint64_t kLatestTime = 253402300799;  // 9999-12-31T23:59:59Z

using Grouping = storage::UsageGrouping;
using Row = storage::UsageRow;

// ---- Parameters ----

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// application/x-www-form-urlencoded decoding: '+' is a space, %XX a byte.
std::optional<std::string> PercentDecode(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '+') {
      out.push_back(' ');
    } else if (text[i] == '%') {
      if (i + 2 >= text.size()) return std::nullopt;
      int hi = HexDigit(text[i + 1]), lo = HexDigit(text[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else {
      out.push_back(text[i]);
    }
  }
  return out;
}

}  // namespace

absl::StatusOr<std::map<std::string, std::string>> ParseQueryParams(
    std::string_view query, std::initializer_list<const char*> known) {
  std::map<std::string, std::string> params;
  for (size_t begin = 0; begin < query.size();) {
    size_t end = query.find('&', begin);
    if (end == std::string_view::npos) end = query.size();
    std::string_view pair = query.substr(begin, end - begin);
    begin = end + 1;
    if (pair.empty()) continue;
    size_t eq = pair.find('=');
    std::optional<std::string> name = PercentDecode(pair.substr(0, eq));
    std::optional<std::string> value =
        PercentDecode(eq == std::string_view::npos ? "" : pair.substr(eq + 1));
    if (!name || !value) {
      return absl::InvalidArgumentError(
          absl::StrCat("query parameter '", std::string(pair), "' has a bad %-escape"));
    }
    if (std::find(known.begin(), known.end(), *name) == known.end()) {
      return BadParam(*name,
                      absl::StrCat("is unknown; known parameters: ", absl::StrJoin(known, ", ")));
    }
    if (params.count(*name) > 0) return BadParam(*name, "is given more than once");
    params.emplace(std::move(*name), std::move(*value));
  }
  return params;
}

namespace {

struct UsageRequest {
  storage::UsageQuery query;
  uint64_t from = 0;  // unix seconds, on an hour
  uint64_t to = 0;    // exclusive, on an hour
  Grouping group = Grouping::kHour;
  bool by_device = false;
  bool csv = false;
};

std::string_view GroupName(Grouping group) {
  switch (group) {
    case Grouping::kHour:
      return "hour";
    case Grouping::kDay:
      return "day";
    case Grouping::kTotal:
      return "total";
  }
  return "hour";
}

absl::StatusOr<UsageRequest> ParseUsageRequest(const http::HttpRequest& request, uint64_t now) {
  absl::StatusOr<std::map<std::string, std::string>> params = ParseQueryParams(
      request.query, {"tenant", "model", "device", "from", "to", "group", "by_device", "format"});
  if (!params.ok()) return params.status();
  auto param = [&](const char* name) -> const std::string* {
    auto it = params->find(name);
    return it == params->end() ? nullptr : &it->second;
  };
  UsageRequest out;
  for (const char* filter : {"tenant", "model", "device"}) {
    const std::string* value = param(filter);
    if (value == nullptr) continue;
    if (value->empty()) return BadParam(filter, "must not be empty (leave it out to match all)");
    if (value->find('\0') != std::string::npos) return BadParam(filter, "must not contain NUL");
  }
  if (const std::string* v = param("tenant")) out.query.tenant = *v;
  if (const std::string* v = param("model")) out.query.model = *v;
  if (const std::string* v = param("device")) out.query.device = *v;

  std::optional<uint64_t> from, to;
  if (const std::string* v = param("from")) {
    absl::StatusOr<uint64_t> t = ParseUsageTime(*v, "from");
    if (!t.ok()) return t.status();
    from = *t;
  }
  if (const std::string* v = param("to")) {
    absl::StatusOr<uint64_t> t = ParseUsageTime(*v, "to");
    if (!t.ok()) return t.status();
    to = *t;
  }
  if (from && to && *from >= *to) {
    return BadParam("from", absl::StrCat("must be before 'to' (from ", *from, " >= to ", *to,
                                         ", unix seconds)"));
  }
  // to: rounded up to the hour (exclusive); from: rounded down.
  uint64_t end = to.value_or(now);
  end = (end + kHour - 1) / kHour * kHour;
  uint64_t begin = from ? *from / kHour * kHour : (end >= kDay ? end - kDay : 0);
  if (!to && begin >= end) end = begin + kHour;  // a 'from' in the current hour or the future
  out.from = begin;
  out.to = end;

  if (const std::string* v = param("group")) {
    if (*v == "hour") {
      out.group = Grouping::kHour;
    } else if (*v == "day") {
      out.group = Grouping::kDay;
    } else if (*v == "total") {
      out.group = Grouping::kTotal;
    } else {
      return BadParam("group", absl::StrCat("must be hour, day or total, not '", *v, "'"));
    }
  }
  const uint64_t days = (end - begin + kDay - 1) / kDay;
  if (end - begin > kMaxRangeDays * kDay) {
    return BadParam("from", absl::StrCat("to 'to' spans ", days, " days; the most is ",
                                         kMaxRangeDays, " days"));
  }
  if (out.group == Grouping::kHour && end - begin > kMaxHourlyRangeDays * kDay) {
    return BadParam("group", absl::StrCat("hour allows a range of at most ", kMaxHourlyRangeDays,
                                          " days (too many rows); this range spans ", days,
                                          " days: use group=day or group=total"));
  }
  if (const std::string* v = param("by_device")) {
    if (*v == "true") {
      out.by_device = true;
    } else if (*v != "false") {
      return BadParam("by_device", absl::StrCat("must be true or false, not '", *v, "'"));
    }
  }
  if (const std::string* v = param("format")) {
    if (*v == "csv") {
      out.csv = true;
    } else if (*v != "json") {
      return BadParam("format", absl::StrCat("must be json or csv, not '", *v, "'"));
    }
  } else {
    out.csv =
        absl::StrContains(absl::AsciiStrToLower(std::string(request.Header("accept"))), "text/csv");
  }
  out.query.hour_begin = begin / kHour;
  out.query.hour_end = end / kHour;
  return out;
}

// ---- Figures ----

std::string Rfc3339(uint64_t unix_seconds) {
  // Not absl::RFC3339_sec: it writes UTC as "+00:00", and "Z" is the form the
  // API documents and takes.
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ",
                          absl::FromUnixSeconds(static_cast<int64_t>(unix_seconds)),
                          absl::UTCTimeZone());
}

// Derived figures of one set of counters.
struct Figures {
  int64_t margin_nusd = 0;
  std::optional<double> cost_per_mtok;
  std::optional<double> yield;
};

Figures Derive(const storage::UsageCounters& c) {
  Figures f;
  f.margin_nusd = static_cast<int64_t>(c.revenue_nusd) - static_cast<int64_t>(c.cost_nusd);
  const double tokens = static_cast<double>(c.prompt_tokens + c.generated_tokens);
  const double cost = static_cast<double>(c.cost_nusd) / 1e9;
  if (tokens > 0) f.cost_per_mtok = cost / tokens * 1e6;
  if (c.cost_nusd > 0) f.yield = tokens / cost;
  return f;
}

json Optional(const std::optional<double>& v) { return v ? json(*v) : json(nullptr); }

json CountersJson(const storage::UsageCounters& c) {
  Figures f = Derive(c);
  return {{"prompt_tokens", c.prompt_tokens},
          {"cached_tokens", c.cached_tokens},
          {"generated_tokens", c.generated_tokens},
          {"requests", c.requests},
          {"device_seconds", static_cast<double>(c.device_ns) / 1e9},
          {"energy_joules", static_cast<double>(c.energy_uj) / 1e6},
          {"cost", static_cast<double>(c.cost_nusd) / 1e9},
          {"revenue", static_cast<double>(c.revenue_nusd) / 1e9},
          {"margin", static_cast<double>(f.margin_nusd) / 1e9},
          {"cost_per_mtok", Optional(f.cost_per_mtok)},
          {"yield_tokens_per_usd", Optional(f.yield)}};
}

// An integer count of 10^-digits units as an exact decimal: (1500, 3) -> "1.500".
std::string ExactDecimal(int64_t units, int digits) {
  const bool negative = units < 0;
  uint64_t magnitude = negative ? 0 - static_cast<uint64_t>(units) : static_cast<uint64_t>(units);
  uint64_t scale = 1;
  for (int i = 0; i < digits; ++i) scale *= 10;
  char frac[32];
  std::snprintf(frac, sizeof(frac), "%0*llu", digits,
                static_cast<unsigned long long>(magnitude % scale));
  return absl::StrCat(negative ? "-" : "", magnitude / scale, ".", frac);
}

std::string CsvRatio(const std::optional<double>& v) { return v ? json(*v).dump() : ""; }

std::string Csv(const std::vector<Row>& rows, const UsageRequest& req) {
  std::vector<std::string> header = {"period_start", "tenant", "model"};
  if (req.by_device) header.push_back("device");
  for (const char* name :
       {"prompt_tokens", "cached_tokens", "generated_tokens", "requests", "device_seconds",
        "energy_joules", "cost", "revenue", "margin", "cost_per_mtok", "yield_tokens_per_usd"}) {
    header.push_back(name);
  }
  std::string out = absl::StrCat(absl::StrJoin(header, ","), "\r\n");
  for (const Row& row : rows) {
    const storage::UsageCounters& c = row.counters;
    Figures f = Derive(c);
    std::vector<std::string> fields = {Rfc3339(row.period_start == 0 ? req.from : row.period_start),
                                       CsvField(row.tenant), CsvField(row.model)};
    if (req.by_device) fields.push_back(CsvField(row.device));
    fields.insert(fields.end(),
                  {absl::StrCat(c.prompt_tokens), absl::StrCat(c.cached_tokens),
                   absl::StrCat(c.generated_tokens), absl::StrCat(c.requests),
                   ExactDecimal(static_cast<int64_t>(c.device_ns), 9),
                   ExactDecimal(static_cast<int64_t>(c.energy_uj), 6),
                   ExactDecimal(static_cast<int64_t>(c.cost_nusd), 9),
                   ExactDecimal(static_cast<int64_t>(c.revenue_nusd), 9),
                   ExactDecimal(f.margin_nusd, 9), CsvRatio(f.cost_per_mtok), CsvRatio(f.yield)});
    absl::StrAppend(&out, absl::StrJoin(fields, ","), "\r\n");
  }
  return out;
}

}  // namespace

std::string CsvField(std::string_view field) {
  if (field.find_first_of(",\"\r\n") == std::string_view::npos) return std::string(field);
  std::string out = "\"";
  for (char c : field) {
    if (c == '"') out.push_back('"');
    out.push_back(c);
  }
  out.push_back('"');
  return out;
}

absl::StatusOr<uint64_t> ParseUsageTime(std::string_view text, std::string_view param) {
  const std::string value(text);
  auto bad = [&](std::string_view why) {
    return BadParam(param, absl::StrCat(std::string(why), " '", value,
                                        "'; use RFC 3339 (2026-11-29T10:00:00Z), a date "
                                        "(2026-11-29) or unix seconds"));
  };
  if (value.empty()) return bad("is not a time:");
  if (std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    uint64_t seconds = 0;
    if (!absl::SimpleAtoi(value, &seconds) || seconds > kLatestTime) {
      return bad("is out of range:");
    }
    return seconds;
  }
  absl::Time time;
  std::string error;
  const bool is_date = value.size() == 10 && value[4] == '-' && value[7] == '-';
  if (!absl::ParseTime(is_date ? "%Y-%m-%d" : absl::RFC3339_full, value, absl::UTCTimeZone(), &time,
                       &error)) {
    return bad("is not a time:");
  }
  const int64_t seconds = absl::ToUnixSeconds(time);
  if (seconds < 0 || static_cast<uint64_t>(seconds) > kLatestTime) {
    return bad("is out of range (1970 to 9999):");
  }
  return static_cast<uint64_t>(seconds);
}

UsageApi::UsageApi(storage::MeterStore& store, tenants::TenantRegistry& registry,
                   std::string currency, WallClock clock)
    : store_(store),
      registry_(registry),
      currency_(std::move(currency)),
      clock_(std::move(clock)) {}

bool UsageApi::Handle(const http::HttpRequest& request, const http::ResponseWriterPtr& response) {
  if (request.path != kUsagePath) return false;
  if (request.method != "GET" && request.method != "HEAD") {
    SendMethodNotAllowedError(*response, {"GET", "HEAD"});
    return true;
  }
  const int64_t now = absl::ToUnixSeconds(absl::FromChrono(clock_()));
  absl::StatusOr<UsageRequest> req =
      ParseUsageRequest(request, now < 0 ? 0 : static_cast<uint64_t>(now));
  if (!req.ok()) return SendError(*response, req.status()), true;

  const std::string& tenant = req->query.tenant;
  if (!tenant.empty() && !registry_.Get(tenant)) {
    absl::StatusOr<bool> has_usage = store_.HasTenantUsage(tenant);
    if (!has_usage.ok()) return SendError(*response, has_usage.status()), true;
    if (!*has_usage) {
      SendError(*response,
                absl::NotFoundError(absl::StrCat(
                    "no tenant '", tenant, "': it is neither configured nor has recorded usage")));
      return true;
    }
  }

  // Rows come ordered by period_start, tenant, model, device.
  absl::StatusOr<std::vector<Row>> rows = store_.QueryUsage(req->query, req->group, req->by_device);
  if (!rows.ok()) return SendError(*response, rows.status()), true;

  if (req->csv) {
    response->Send(200, "text/csv; charset=utf-8", Csv(*rows, *req));
    return true;
  }
  storage::UsageCounters totals;
  json list = json::array();
  for (const Row& row : *rows) {
    totals += row.counters;
    json item = {{"tenant", row.tenant}, {"model", row.model}};
    if (req->by_device) item["device"] = row.device;
    item["period_start"] = Rfc3339(row.period_start == 0 ? req->from : row.period_start);
    item.update(CountersJson(row.counters));
    list.push_back(std::move(item));
  }
  json body = {{"from", Rfc3339(req->from)},
               {"to", Rfc3339(req->to)},
               {"group", std::string(GroupName(req->group))},
               {"currency", currency_},
               {"rows", std::move(list)},
               {"totals", CountersJson(totals)}};
  SendJson(*response, DumpJson(body));
  return true;
}

}  // namespace tokenmill::daemon
