#include "daemon/cli/usage_view.h"

#include <cstdio>
#include <cstdlib>
#include <map>
#include <set>
#include <utility>

#include "daemon/cli/table.h"

namespace tokenmill::cli {
namespace {

using nlohmann::json;

std::string Format(const char* format, double value) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), format, value);
  return buf;
}

std::string Number(const json& row, const char* key, const char* format) {
  if (!row.contains(key) || !row[key].is_number()) return "-";
  return Format(format, row[key].get<double>());
}

// Money with enough decimals to show small amounts: a token costs micro-dollars.
std::string Money(const json& row, const char* key) {
  if (!row.contains(key) || !row[key].is_number()) return "-";
  const double v = row[key].get<double>();
  const double a = v < 0 ? -v : v;
  return Format(a == 0.0 || a >= 1.0 ? "%.4f" : a >= 0.01 ? "%.6f" : "%.9f", v);
}

std::string Count(const json& row, const char* key) {
  if (!row.contains(key) || !row[key].is_number()) return "-";
  return std::to_string(row[key].get<uint64_t>());
}

// "2026-11-29T10:00:00Z" as "2026-11-29 10:00" (hour) or "2026-11-29" (day).
std::string Period(const std::string& group, const std::string& start) {
  if (group == "total") return "total";
  if (group == "day") return start.substr(0, 10);
  std::string out = start.substr(0, 16);
  if (out.size() > 10) out[10] = ' ';
  return out;
}

// The figures every usage row and the totals have, in table order.
std::vector<std::string> Figures(const json& row) {
  return {Count(row, "prompt_tokens"),
          Count(row, "generated_tokens"),
          Count(row, "requests"),
          Money(row, "cost"),
          Money(row, "revenue"),
          Money(row, "margin"),
          Number(row, "cost_per_mtok", "%.4f"),
          Number(row, "yield_tokens_per_usd", "%.0f")};
}

// A counter series: family name and labels.
using SeriesKey = std::pair<std::string, std::map<std::string, std::string>>;

std::string Label(const MetricSample& s, const char* name) {
  auto it = s.labels.find(name);
  return it == s.labels.end() ? "" : it->second;
}

struct Sums {
  double prompt = 0, generated = 0, cost = 0, revenue = 0;
  std::optional<double> running, waiting;
};

void AddGauge(std::optional<double>& slot, double value) { slot = slot.value_or(0.0) + value; }

TopLine Rates(std::string name, const Sums& sums, double seconds) {
  TopLine line;
  line.name = std::move(name);
  const double per_s = seconds > 0 ? 1.0 / seconds : 0.0;
  line.prompt_tokens_per_s = sums.prompt * per_s;
  line.generated_tokens_per_s = sums.generated * per_s;
  line.cost_per_s = sums.cost * per_s;
  line.revenue_per_s = sums.revenue * per_s;
  const double tokens = sums.prompt + sums.generated;
  if (tokens > 0) line.cost_per_mtok = sums.cost / tokens * 1e6;
  if (sums.cost > 0) line.yield = tokens / sums.cost;
  line.running = sums.running;
  line.waiting = sums.waiting;
  return line;
}

std::string Opt(const std::optional<double>& v, const char* format) {
  return v ? Format(format, *v) : "-";
}

}  // namespace

std::string UsagePath(const UsageFlags& flags) {
  std::string query;
  auto add = [&query](const char* name, const std::string& value) {
    if (value.empty()) return;
    query += (query.empty() ? "?" : "&") + std::string(name) + "=" + PathSegment(value);
  };
  add("tenant", flags.tenant);
  add("model", flags.model);
  add("from", flags.from);
  add("to", flags.to);
  add("group", flags.group);
  if (flags.by_device) add("by_device", "true");
  if (flags.csv) add("format", "csv");
  return "/control/v1/usage" + query;
}

TableRows UsageTableRows(const json& usage) {
  const std::string currency = usage.value("currency", "USD");
  const std::string group = usage.value("group", "hour");
  const json rows = usage.value("rows", json::array());
  bool by_device = false;
  for (const json& row : rows) by_device = by_device || row.contains("device");
  std::vector<std::string> header = {"PERIOD", "TENANT", "MODEL"};
  if (by_device) header.push_back("DEVICE");
  header.insert(header.end(), {"TOKENS IN", "TOKENS OUT", "REQUESTS", "COST", "REVENUE", "MARGIN",
                               currency + "/MTOK", "TOK/" + currency});
  TableRows table = {header};
  for (const json& row : rows) {
    std::vector<std::string> line = {Period(group, row.value("period_start", "")),
                                     row.value("tenant", ""), row.value("model", "")};
    if (by_device) line.push_back(row.value("device", ""));
    for (std::string& f : Figures(row)) line.push_back(std::move(f));
    table.push_back(std::move(line));
  }
  std::vector<std::string> total = {"TOTAL", "", ""};
  if (by_device) total.push_back("");
  for (std::string& f : Figures(usage.value("totals", json::object()))) {
    total.push_back(std::move(f));
  }
  table.push_back(std::move(total));
  return table;
}

TopView ComputeTop(const MetricsScrape& before, const MetricsScrape& after) {
  static const std::set<std::string> kCounters = {
      "tokenmill_tokens_total", "tokenmill_cost_usd_total", "tokenmill_revenue_usd_total"};
  std::map<SeriesKey, double> previous;
  for (const MetricSample& s : before.samples) {
    if (kCounters.count(s.name) > 0) previous[{s.name, s.labels}] = s.value;
  }
  std::map<std::string, Sums> models, tenants;
  Sums total;
  for (const MetricSample& s : after.samples) {
    const std::string model = Label(s, "model");
    if (s.name == "tokenmill_requests") {
      const std::string state = Label(s, "state");
      if (state != "running" && state != "waiting") continue;
      for (Sums* sums : {&models[model], &total}) {
        AddGauge(state == "running" ? sums->running : sums->waiting, s.value);
      }
      continue;
    }
    if (kCounters.count(s.name) == 0) continue;
    auto it = previous.find({s.name, s.labels});
    double delta = s.value;  // new series, or reset: counts from zero
    if (it != previous.end() && s.value >= it->second) delta = s.value - it->second;
    double Sums::*field = nullptr;
    if (s.name == "tokenmill_tokens_total") {
      const std::string kind = Label(s, "kind");
      if (kind == "prompt") field = &Sums::prompt;
      if (kind == "generated") field = &Sums::generated;
    } else {
      field = s.name == "tokenmill_cost_usd_total" ? &Sums::cost : &Sums::revenue;
    }
    if (field == nullptr) continue;
    for (Sums* sums : {&models[model], &tenants[Label(s, "tenant")], &total}) {
      sums->*field += delta;
    }
  }
  TopView view;
  view.interval_seconds = after.at_seconds - before.at_seconds;
  for (const auto& [name, sums] : models)
    view.models.push_back(Rates(name, sums, view.interval_seconds));
  for (const auto& [name, sums] : tenants) {
    view.tenants.push_back(Rates(name, sums, view.interval_seconds));
  }
  view.total = Rates("TOTAL", total, view.interval_seconds);
  return view;
}

std::string RenderTop(const TopView& view, std::string_view title) {
  auto figures = [](const TopLine& l) {
    return std::vector<std::string>{
        Format("%.1f", l.prompt_tokens_per_s), Format("%.1f", l.generated_tokens_per_s),
        Opt(l.cost_per_mtok, "%.4f"), Opt(l.yield, "%.0f"), Format("%.6f", l.revenue_per_s)};
  };
  const std::vector<std::string> rates = {"PROMPT TOK/S", "GEN TOK/S", "USD/MTOK", "TOK/USD",
                                          "REVENUE USD/S"};
  TableRows models = {{"MODEL", "RUNNING", "WAITING"}};
  models[0].insert(models[0].end(), rates.begin(), rates.end());
  auto model_row = [&](const TopLine& l) {
    std::vector<std::string> row = {l.name, Opt(l.running, "%.0f"), Opt(l.waiting, "%.0f")};
    for (std::string& f : figures(l)) row.push_back(std::move(f));
    models.push_back(std::move(row));
  };
  for (const TopLine& l : view.models) model_row(l);
  model_row(view.total);
  TableRows tenants = {{"TENANT"}};
  tenants[0].insert(tenants[0].end(), rates.begin(), rates.end());
  for (const TopLine& l : view.tenants) {
    std::vector<std::string> row = {l.name};
    for (std::string& f : figures(l)) row.push_back(std::move(f));
    tenants.push_back(std::move(row));
  }
  return std::string(title) + "\n\n" + RenderTable(models) + "\n" + RenderTable(tenants);
}

std::optional<std::string> MetricsAddress(const json& node) {
  if (!node.contains("metrics") || !node["metrics"].is_object()) return std::nullopt;
  std::string listen = node["metrics"].value("listen", "");
  if (listen.empty()) return std::nullopt;
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos) return std::nullopt;
  const std::string host = listen.substr(0, colon);
  const std::string port = listen.substr(colon + 1);
  if (host.empty() || host == "0.0.0.0" || host == "*") return "127.0.0.1:" + port;
  if (host == "[::]" || host == "::") return "[::1]:" + port;
  return listen;
}

std::optional<std::chrono::milliseconds> ParseInterval(std::string_view text) {
  std::string s(text);
  char* end = nullptr;
  const double value = std::strtod(s.c_str(), &end);
  if (end == s.c_str()) return std::nullopt;
  const std::string unit(end);
  double ms = 0;
  if (unit == "ms") {
    ms = value;
  } else if (unit == "s" || unit.empty()) {
    ms = value * 1000;
  } else if (unit == "m") {
    ms = value * 60000;
  } else {
    return std::nullopt;
  }
  if (!(ms >= 1 && ms <= 3600e3)) return std::nullopt;
  return std::chrono::milliseconds(static_cast<int64_t>(ms));
}

}  // namespace tokenmill::cli
