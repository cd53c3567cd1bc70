#include "daemon/cli/usage_commands.h"

#include <curl/curl.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <memory>
#include <optional>
#include <thread>

#include "daemon/cli/control_json.h"
#include "daemon/cli/table.h"

namespace tokenmill::cli {
namespace {

using nlohmann::json;
using SteadyClock = std::chrono::steady_clock;

size_t Append(char* data, size_t size, size_t count, void* out) {
  static_cast<std::string*>(out)->append(data, size * count);
  return size * count;
}

struct CurlDeleter {
  void operator()(CURL* curl) const { curl_easy_cleanup(curl); }
};

// GET http://ADDRESS/metrics over TCP (the control client speaks only to the
// unix socket). The body, or nullopt with `error` set.
std::optional<std::string> GetMetricsText(const std::string& address, long timeout_ms,
                                          std::string& error) {
  std::unique_ptr<CURL, CurlDeleter> curl(curl_easy_init());
  if (!curl) {
    error = "cannot initialise libcurl";
    return std::nullopt;
  }
  const std::string url = "http://" + address + "/metrics";
  std::string body;
  curl_easy_setopt(curl.get(), CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl.get(), CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl.get(), CURLOPT_TIMEOUT_MS, timeout_ms);
  curl_easy_setopt(curl.get(), CURLOPT_WRITEFUNCTION, Append);
  curl_easy_setopt(curl.get(), CURLOPT_WRITEDATA, &body);
  // Plain text: the exposer would otherwise gzip the answer.
  curl_easy_setopt(curl.get(), CURLOPT_ACCEPT_ENCODING, "identity");
  CURLcode code = curl_easy_perform(curl.get());
  if (code != CURLE_OK) {
    error = "cannot scrape " + url + ": " + curl_easy_strerror(code);
    return std::nullopt;
  }
  long status = 0;
  curl_easy_getinfo(curl.get(), CURLINFO_RESPONSE_CODE, &status);
  if (status != 200) {
    error = "scraping " + url + " answered HTTP " + std::to_string(status);
    return std::nullopt;
  }
  return body;
}

double SteadySeconds() {
  return std::chrono::duration<double>(SteadyClock::now().time_since_epoch()).count();
}

// One scrape, stamped with the middle of the request.
std::optional<MetricsScrape> Scrape(const std::string& address, long timeout_ms) {
  const double begin = SteadySeconds();
  std::string error;
  std::optional<std::string> text = GetMetricsText(address, timeout_ms, error);
  if (!text) {
    PrintError("top", error);
    return std::nullopt;
  }
  absl::StatusOr<std::vector<MetricSample>> samples = ParsePrometheusText(*text);
  if (!samples.ok()) {
    PrintError("top", std::string(samples.status().message()));
    return std::nullopt;
  }
  return MetricsScrape{(begin + SteadySeconds()) / 2, *std::move(samples)};
}

std::string Title(const std::string& address, std::chrono::milliseconds interval) {
  std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char clock[32];
  std::strftime(clock, sizeof(clock), "%H:%M:%S UTC", &utc);
  char line[256];
  std::snprintf(line, sizeof(line), "tokenmill top  %s  every %.3gs  %s", address.c_str(),
                static_cast<double>(interval.count()) / 1000.0, clock);
  return line;
}

}  // namespace

UsageCommands::UsageCommands(CLI::App& app) {
  usage_cmd_ = app.add_subcommand("usage", "metered usage and cost by hour, day or in total");
  usage_cmd_->add_option("--tenant", usage_.tenant, "only this tenant");
  usage_cmd_->add_option("--model", usage_.model, "only this model");
  usage_cmd_->add_option("--from", usage_.from,
                         "start: 2026-11-29T10:00:00Z, 2026-11-29 or unix seconds (default 24 h "
                         "ago)");
  usage_cmd_->add_option("--to", usage_.to, "end, exclusive (default: now)");
  usage_cmd_->add_option("--group", usage_.group, "hour (default), day or total")
      ->check(CLI::IsMember({"hour", "day", "total"}));
  usage_cmd_->add_flag("--by-device", usage_.by_device, "one row per device");
  usage_cmd_->add_flag("--csv", usage_.csv, "print CSV");

  top_cmd_ = app.add_subcommand("top", "live tokens/s, cost, yield and revenue per model, tenant");
  top_cmd_->add_option("--interval", interval_, "time between scrapes (1s, 500ms, 2m)")
      ->capture_default_str();
  top_cmd_->add_option("--metrics", metrics_address_,
                       "metrics HOST:PORT (default: the node's metrics listen address)");
  top_cmd_->add_flag("--once", once_, "scrape twice one interval apart, print once and exit");
}

int UsageCommands::Run(ControlClient& client, bool as_json, long timeout_ms) {
  if (usage_cmd_->parsed()) return Usage(client, as_json);
  if (top_cmd_->parsed()) return Top(client, timeout_ms);
  return -1;
}

int UsageCommands::Usage(ControlClient& client, bool as_json) {
  if (usage_.csv && !as_json) {
    const std::string path = UsagePath(usage_);
    ControlResponse response = client.Request("GET", path);
    if (response.status == 200) {
      std::fwrite(response.body.data(), 1, response.body.size(), stdout);
      return 0;
    }
    if (response.status == 0) {
      PrintError("usage",
                 "cannot reach tokenmilld at " + client.endpoint() + ": " + response.error);
      return 1;
    }
    // Errors come as JSON even when CSV was asked for.
    json error = json::parse(response.body, nullptr, /*allow_exceptions=*/false);
    PrintError("usage", "GET " + path + ": HTTP " + std::to_string(response.status) + ": " +
                            (error.is_discarded() ? response.body : ErrorMessage(error)));
    return 1;
  }
  UsageFlags flags = usage_;
  flags.csv = false;
  std::optional<json> body = FetchJson(client, "GET", UsagePath(flags));
  if (!body) return 1;
  if (as_json) {
    std::printf("%s\n", body->dump(2).c_str());
  } else {
    std::printf("%s .. %s, %s\n", body->value("from", "").c_str(), body->value("to", "").c_str(),
                body->value("currency", "").c_str());
    std::fputs(RenderTable(UsageTableRows(*body)).c_str(), stdout);
  }
  return 0;
}

int UsageCommands::Top(ControlClient& client, long timeout_ms) {
  std::optional<std::chrono::milliseconds> interval = ParseInterval(interval_);
  if (!interval) {
    PrintError("top", "--interval '" + interval_ + "' is not a duration like 1s or 500ms");
    return 2;
  }
  std::string address = metrics_address_;
  if (address.empty()) {
    std::optional<json> node = FetchJson(client, "GET", "/control/v1/node");
    if (!node) return 1;
    std::optional<std::string> listen = MetricsAddress(*node);
    if (!listen) {
      PrintError("top", "the node reports no metrics address ([metrics] listen)");
      return 1;
    }
    address = *listen;
  }
  const bool tty = isatty(STDOUT_FILENO) == 1;
  std::optional<MetricsScrape> previous = Scrape(address, timeout_ms);
  if (!previous) return 1;
  // Deadlines on a fixed grid, so that slow scrapes do not stretch the interval.
  SteadyClock::time_point next = SteadyClock::now();
  while (true) {
    next += *interval;
    std::this_thread::sleep_until(next);
    std::optional<MetricsScrape> current = Scrape(address, timeout_ms);
    if (!current) return 1;
    std::string text = RenderTop(ComputeTop(*previous, *current), Title(address, *interval));
    if (tty && !once_) text = "\x1b[H\x1b[2J" + text;  // redraw in place
    std::fputs(text.c_str(), stdout);
    if (!tty || once_) std::fputs("\n", stdout);
    std::fflush(stdout);
    if (once_) return 0;
    previous = std::move(current);
  }
}

}  // namespace tokenmill::cli
