// tokenmill: the command line for operators of a tokenmilld node.
//
//   tokenmill [--socket PATH | --url http://HOST:PORT] [--json] status | devices |
//     drain [--cancel | --wait SECONDS]
//   tokenmill model synth --out FILE [--shape tiny|small|1b|8b] [--type q8_0] ...
//   tokenmill bench MODEL [--threads N] [--batches 1,4,16,32]
//   tokenmill models list | load ID PATH [--device D] ... | unload ID [--wait]
//   tokenmill tenants list | get NAME | put NAME [--key K]... [--replace] | delete NAME
//   tokenmill generate [--model M] [--key K] [--chat] [--max-tokens N] PROMPT
//   tokenmill usage [--tenant T] [--model M] [--from X] [--to Y] [--group hour|day|total]
//                   [--by-device] [--csv]
//   tokenmill top [--interval 1s] [--once] [--metrics HOST:PORT]
//   tokenmill ledger export [--tenant T] [--model M] [--from X] [--to Y]
//                   [--format jsonl|csv|cloudevents] [--cursor-file PATH] [--limit N]
//
// Exit status: 0 on success, 1 when the daemon cannot be reached or answers
// with an error, 2 for a bad command line.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <thread>

#include "CLI/CLI.hpp"
#include "daemon/cli/control_client.h"
#include "daemon/cli/control_json.h"
#include "daemon/cli/ledger_commands.h"
#include "daemon/cli/model_commands.h"
#include "daemon/cli/runtime_commands.h"
#include "daemon/cli/table.h"
#include "daemon/cli/usage_commands.h"
#include "nlohmann/json.hpp"
#include "tokenmill/version.h"

namespace {

using nlohmann::json;
using tokenmill::cli::ControlClient;
using tokenmill::cli::FetchJson;

std::optional<double> OptNumber(const json& j, const char* key) {
  if (!j.is_object() || !j.contains(key) || !j[key].is_number()) return std::nullopt;
  return j[key].get<double>();
}

std::string DevicesTable(const json& devices) {
  std::vector<std::vector<std::string>> rows = {
      {"ID", "KIND", "NAME", "MEMORY", "USED", "POWER", "UTIL", "TEMP"}};
  for (const auto& d : devices) {
    const json& s = d.contains("sample") ? d["sample"] : json();
    auto used = OptNumber(s, "memory_used_bytes");
    auto util = OptNumber(s, "utilization_ratio");
    rows.push_back({d.value("id", ""), d.value("kind", ""), d.value("name", ""),
                    tokenmill::cli::FormatBytes(d.value("memory_total_bytes", uint64_t{0})),
                    used ? tokenmill::cli::FormatBytes(static_cast<uint64_t>(*used)) : "-",
                    tokenmill::cli::FormatOptional(OptNumber(s, "power_watts"), "%.1f W"),
                    util ? tokenmill::cli::FormatOptional(*util * 100.0, "%.0f%%") : "-",
                    tokenmill::cli::FormatOptional(OptNumber(s, "temperature_celsius"), "%.0f C")});
  }
  return tokenmill::cli::RenderTable(rows);
}

std::string StatusTable(const json& node) {
  std::string device_ids;
  for (const auto& d : node.value("devices", json::array())) {
    device_ids += (device_ids.empty() ? "" : ", ") + d.value("id", "");
  }
  const json& config = node.value("config", json::object());
  std::string digest = config.value("digest", "");
  std::vector<std::vector<std::string>> rows = {
      {"node", node.value("name", "")},
      {"state", node.value("state", "")},
      {"version", node.value("version", "") + " (" + node.value("revision", "") + ")"},
      {"uptime", tokenmill::cli::FormatDuration(node.value("uptime_seconds", 0.0))},
      {"config", config.value("source", "") + " (sha256 " + digest.substr(0, 12) + ")"},
      {"data dir", node.value("data_dir", "")},
      {"socket", node.value("api", json::object()).value("socket", "")},
      {"metrics", node.value("metrics", json::object()).value("listen", "")},
      {"devices",
       std::to_string(node.value("devices", json::array()).size()) + " (" + device_ids + ")"}};
  auto pending = config.value("restart_pending", json::array());
  if (!pending.empty()) {
    std::string names;
    for (const auto& p : pending) names += (names.empty() ? "" : ", ") + p.get<std::string>();
    rows.push_back({"restart to apply", names});
  }
  return tokenmill::cli::RenderTable(rows);
}

}  // namespace

// Polls /control/v1/node until its capacity shows no request running,
// waiting or being prepared, or `seconds` pass. 0: drained; 1: not drained in
// time or the daemon did not answer.
static int WaitDrained(ControlClient& client, double seconds, bool as_json) {
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
  for (;;) {
    std::optional<json> node = FetchJson(client, "GET", "/control/v1/node");
    if (!node) return 1;
    const json capacity = node->value("capacity", json::object());
    const int64_t running = capacity.value("running", int64_t{0});
    const int64_t waiting = capacity.value("queue_depth", int64_t{0});
    const int64_t preparing = capacity.value("preparing", int64_t{0});
    if (running + waiting + preparing == 0) {
      if (as_json) {
        std::printf("%s\n", json{{"draining", true}, {"drained", true}}.dump(2).c_str());
      } else {
        std::printf("drained\n");
      }
      return 0;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      std::fprintf(stderr,
                   "tokenmill: still busy after %.0f s: %lld running, %lld waiting, %lld being "
                   "prepared\n",
                   seconds, static_cast<long long>(running), static_cast<long long>(waiting),
                   static_cast<long long>(preparing));
      return 1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

int main(int argc, char** argv) {
  CLI::App app{"tokenmill: operate a tokenmilld node"};
  app.require_subcommand(1);
  const char* env_socket = std::getenv("TOKENMILL_SOCKET");
  std::string socket = env_socket ? env_socket : "/run/tokenmill/tokenmill.sock";
  bool as_json = false;
  long timeout_ms = 10000;
  app.add_option("-s,--socket", socket, "tokenmilld control socket ($TOKENMILL_SOCKET)")
      ->capture_default_str();
  // A control port ([api] control_tcp) instead of the socket. The token is
  // better passed in the environment: a flag shows in ps to other users.
  const char* env_url = std::getenv("TOKENMILL_URL");
  const char* env_token = std::getenv("TOKENMILL_TOKEN");
  std::string url = env_url ? env_url : "";
  std::string token = env_token ? env_token : "";
  app.add_option("--url", url,
                 "reach the daemon's control port ([api] control_tcp), http://HOST:PORT, "
                 "instead of the socket ($TOKENMILL_URL)");
  app.add_option("--token", token,
                 "admin token for --url ($TOKENMILL_TOKEN; the environment keeps it out of ps)");
  app.add_flag("--json", as_json, "print the daemon's JSON instead of a table");
  app.add_option("--timeout-ms", timeout_ms, "request timeout")->capture_default_str();
  app.set_version_flag("--version", std::string("tokenmill ") + tokenmill::kVersion);

  auto* status_cmd = app.add_subcommand("status", "node state, version, uptime, config");
  auto* devices_cmd = app.add_subcommand("devices", "devices with memory, power, utilisation");
  auto* drain_cmd = app.add_subcommand("drain", "stop admitting new work (or --cancel)");
  bool cancel = false;
  drain_cmd->add_flag("--cancel", cancel, "admit work again");
  double wait_seconds = 0;
  drain_cmd
      ->add_option("--wait", wait_seconds,
                   "then wait up to SECONDS until no request runs, waits or is being prepared; "
                   "exit 1 if some still do")
      ->check(CLI::NonNegativeNumber)
      ->excludes("--cancel");
  tokenmill::cli::LocalCommands local(app);
  tokenmill::cli::RuntimeCommands runtime(app);
  tokenmill::cli::UsageCommands usage(app);
  tokenmill::cli::LedgerCommands ledger(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }

  if (int code = local.Run(); code >= 0) return code;

  if (!url.empty() && token.empty()) {
    std::fprintf(stderr, "tokenmill: --url needs the admin token: --token or TOKENMILL_TOKEN\n");
    return 2;
  }
  ControlClient client = url.empty() ? ControlClient(socket, timeout_ms)
                                     : ControlClient::ForControlPort(url, token, timeout_ms);
  if (int code = runtime.Run(client, as_json); code >= 0) return code;
  if (int code = usage.Run(client, as_json, timeout_ms); code >= 0) return code;
  if (int code = ledger.Run(client); code >= 0) return code;
  std::optional<json> body;
  if (status_cmd->parsed()) {
    body = FetchJson(client, "GET", "/control/v1/node");
    if (body && !as_json) std::fputs(StatusTable(*body).c_str(), stdout);
  } else if (devices_cmd->parsed()) {
    body = FetchJson(client, "GET", "/control/v1/devices");
    if (body && !as_json)
      std::fputs(DevicesTable(body->value("devices", json::array())).c_str(), stdout);
  } else if (drain_cmd->parsed()) {
    body = FetchJson(client, cancel ? "DELETE" : "POST", "/control/v1/drain");
    if (body && !as_json) {
      std::printf("%s\n", body->value("draining", false) ? "draining" : "serving");
    }
    if (body && wait_seconds > 0) {
      std::fflush(stdout);
      return WaitDrained(client, wait_seconds, as_json);
    }
  }
  if (!body) return 1;
  if (as_json) std::printf("%s\n", body->dump(2).c_str());
  return 0;
}
