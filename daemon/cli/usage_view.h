// The pure parts of `tokenmill usage` and `tokenmill top`: the usage request
// path and table, and top's rates from two scrapes of /metrics. Nothing here
// talks to the daemon, so tests check it on canned answers.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/cli/prometheus_text.h"
#include "daemon/cli/runtime_json.h"
#include "nlohmann/json.hpp"

namespace tokenmill::cli {

// `tokenmill usage` flags; empty strings are left to the daemon's defaults.
struct UsageFlags {
  std::string tenant = "";
  std::string model = "";
  std::string from = "";
  std::string to = "";
  std::string group = "";
  bool by_device = false;
  bool csv = false;
};

// "/control/v1/usage?..." with the given flags, values percent-encoded.
std::string UsagePath(const UsageFlags& flags);

// PERIOD, TENANT, MODEL, [DEVICE,] TOKENS IN, TOKENS OUT, REQUESTS, COST,
// REVENUE, MARGIN, CUR/MTOK, TOK/CUR (header first), then a TOTAL row, from
// the daemon's usage answer.
TableRows UsageTableRows(const nlohmann::json& usage);

// One scrape of /metrics and when it was taken (steady clock seconds).
struct MetricsScrape {
  double at_seconds = 0.0;
  std::vector<MetricSample> samples;
};

// Rates of one model, one tenant or all, over the time between two scrapes.
struct TopLine {
  std::string name;
  double prompt_tokens_per_s = 0.0;
  double generated_tokens_per_s = 0.0;
  double cost_per_s = 0.0;
  double revenue_per_s = 0.0;
  std::optional<double> cost_per_mtok;  // cost / (prompt + generated) x 1e6; none without tokens
  std::optional<double> yield;          // (prompt + generated) / cost; none without cost
  std::optional<double> running;        // tokenmill_requests gauge; models and the total only
  std::optional<double> waiting;
};

struct TopView {
  double interval_seconds = 0.0;
  std::vector<TopLine> models;   // by name
  std::vector<TopLine> tenants;  // by name
  TopLine total;
};

// Rates from counter deltas of tokenmill_tokens_total (kind prompt and
// generated), tokenmill_cost_usd_total and tokenmill_revenue_usd_total; a
// counter that went down was reset (daemon restart) and counts from zero, and
// a series new in `after` counts from zero. Gauges are read from `after`.
TopView ComputeTop(const MetricsScrape& before, const MetricsScrape& after);

// The view as text: a title line, then the model table and the tenant table.
std::string RenderTop(const TopView& view, std::string_view title);

// The metrics address from GET /control/v1/node ("metrics":{"listen"}), with a
// wildcard host (0.0.0.0, ::, empty) replaced by loopback; nullopt if none.
std::optional<std::string> MetricsAddress(const nlohmann::json& node);

// "1s", "500ms", "2m", "1.5" (seconds); nullopt unless positive.
std::optional<std::chrono::milliseconds> ParseInterval(std::string_view text);

}  // namespace tokenmill::cli
