// The packaged monitoring, end to end, on a fleet of two: two tokenmilld
// (two data dirs, two ports, node names node-a and node-b) serve a
// synthesized model to two paying tenants while a real Prometheus (Debian's
// package) scrapes both every second, with the target label node, and
// evaluates packaging/prometheus's recording rules and alerts; then every
// rule group is healthy and every query of the Grafana dashboard
// (packaging/grafana) returns data for each node.
#include <signal.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/model/synth.h"
#include "runtime/tenants/tenant_registry.h"
#include "tests/integration/daemon_process.h"
#include "tests/support/temp_dir.h"
#include "tests/support/tiny_model.h"

namespace tokenmill::testing {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kAlphaKey[] = "key-alpha-0123456789";
constexpr char kBetaKey[] = "key-beta-0123456789";

const std::filesystem::path kPackaging = std::filesystem::path(TOKENMILL_SOURCE_DIR) / "packaging";

std::string FindOnPath(const std::string& name) {
  for (const char* dir : {"/usr/bin", "/usr/local/bin", "/bin"}) {
    std::string path = std::string(dir) + "/" + name;
    if (access(path.c_str(), X_OK) == 0) return path;
  }
  return "";
}

std::string UrlEncode(const std::string& text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

// The group names of a rule file ("  - name: X" lines): enough YAML for the
// files we ship, which the test also hands to promtool.
std::set<std::string> RuleGroupNames(const std::filesystem::path& file) {
  std::set<std::string> names;
  std::istringstream lines(ReadFile(file));
  for (std::string line; std::getline(lines, line);) {
    const std::string key = "  - name: ";
    if (line.rfind(key, 0) == 0) names.insert(line.substr(key.size()));
  }
  return names;
}

// Every target expression of the dashboard, rows' nested panels included, as
// "panel title: expr".
void CollectQueries(const json& panels, std::vector<std::pair<std::string, std::string>>& out) {
  for (const json& panel : panels) {
    if (panel.contains("panels")) CollectQueries(panel["panels"], out);
    if (!panel.contains("targets")) continue;
    for (const json& target : panel["targets"]) {
      out.emplace_back(panel.value("title", "?"), target.value("expr", ""));
    }
  }
}

constexpr std::array<const char*, 2> kNodes = {"node-a", "node-b"};

// The device gauge a query reads if it reads one that only some hardware
// reports (power, temperature, utilisation), else "".
std::string HardwareGauge(const std::string& expr) {
  for (const char* gauge : {"tokenmill_device_power_watts", "tokenmill_device_temperature_celsius",
                            "tokenmill_device_utilization_ratio"}) {
    if (expr.find(gauge) != std::string::npos) return gauge;
  }
  return "";
}

// Whether a daemon's /metrics has a sample of `family`.
bool Exposes(const std::string& target, const std::string& family) {
  auto r = CurlRequest("http://" + target + "/metrics", "");
  std::istringstream lines(r.body);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(family + "{", 0) == 0 || line.rfind(family + " ", 0) == 0) return true;
  }
  return false;
}

// Template variables as a user choosing one node and "All" of the rest would
// send them.
std::string SubstituteVariables(const std::string& expr, const std::string& node) {
  return absl::StrReplaceAll(expr, {{"$__rate_interval", "5m"},
                                    {"${node}", node},
                                    {"$node", node},
                                    {"${tenant}", ".*"},
                                    {"$tenant", ".*"},
                                    {"${model}", ".*"},
                                    {"$model", ".*"},
                                    {"${device}", ".*"},
                                    {"$device", ".*"}});
}

// Static checks of the shipped files: promtool lints the rules and runs their
// unit tests (packaging/prometheus/tokenmill-rules.test.yml: exact values of
// the ratios and when each alert fires).
TEST(PackagedRulesTest, PromtoolChecksAndUnitTestsPass) {
  const std::string promtool = FindOnPath("promtool");
  ASSERT_FALSE(promtool.empty()) << "promtool not installed (apt-get install prometheus)";
  const std::filesystem::path dir = kPackaging / "prometheus";
  auto lint = RunCommand({promtool, "check", "rules", (dir / "tokenmill-rules.yml").string(),
                          (dir / "tokenmill-alerts.yml").string()});
  EXPECT_EQ(lint.exit_code, 0) << lint.out << lint.err;
  EXPECT_THAT(lint.out + lint.err, Not(HasSubstr("WARNING")));
  // Relative rule_files resolve against the test file's directory.
  auto unit = RunCommand({promtool, "test", "rules", (dir / "tokenmill-rules.test.yml").string()});
  EXPECT_EQ(unit.exit_code, 0) << unit.out << unit.err;
  EXPECT_THAT(unit.out, HasSubstr("SUCCESS"));
}

class MeteringPrometheusTest : public ::testing::Test {
 protected:
  void SetUp() override {
    prometheus_ = FindOnPath("prometheus");
    promtool_ = FindOnPath("promtool");
    // Not a skip: packaging/install-build-deps.sh installs Debian's prometheus.
    ASSERT_FALSE(prometheus_.empty()) << "prometheus not installed (apt-get install prometheus)";
    ASSERT_FALSE(promtool_.empty()) << "promtool not installed (apt-get install prometheus)";

    const model::SynthOptions shape =
        TinyModelShape(devices::TensorType::kF16, /*vocab_size=*/300, /*context_length=*/512);
    const std::filesystem::path model_path = dir_.path() / "tiny.gguf";
    ASSERT_TRUE(model::WriteSynthGguf(shape, model_path).ok());

    for (const char* name : kNodes) {
      ASSERT_NO_FATAL_FAILURE(StartNode(name, model_path));
    }
  }

  void StartNode(const std::string& name, const std::filesystem::path& model_path) {
    const std::filesystem::path node_dir = dir_.path() / name;
    std::filesystem::create_directories(node_dir);
    DaemonOptions options;
    options.name = name;
    options.api_toml = "tcp = \"127.0.0.1:0\"\n";
    // Prices and a [cost] section make cost, revenue and node cost non-zero;
    // configured watts give the CPU an energy counter where RAPL is closed.
    options.extra_toml = absl::StrCat(
        "[scheduler]\nmax_seqs = 16\nmax_batch_tokens = 256\n\n"
        "[cost]\ncapex = 250000\ndepreciation_years = 4\npower_usd_per_kwh = 0.12\npue = 1.3\n"
        "network_usd_per_hour = 0.5\ndebt_service_usd_per_hour = 1.0\n"
        "other_usd_per_hour = 0.25\n\n"
        "[[device]]\nmatch = \"cpu\"\nwatts = 300\n\n"
        "[[model]]\nid = \"tiny\"\npath = \"",
        model_path.string(), "\"\n\n", "[[tenant]]\nname = \"alpha\"\napi_keys_sha256 = [\"",
        tenants::ApiKeySha256(kAlphaKey),
        "\"]\nprice_input_per_mtok = 0.5\nprice_output_per_mtok = 1.5\n\n",
        "[[tenant]]\nname = \"beta\"\napi_keys_sha256 = [\"", tenants::ApiKeySha256(kBetaKey),
        "\"]\nprice_input_per_mtok = 0.2\nprice_output_per_mtok = 0.6\n");
    auto daemon = std::make_unique<DaemonProcess>(node_dir, options);
    ASSERT_TRUE(daemon->Start()) << daemon->Stderr();
    ASSERT_TRUE(daemon->WaitModelReady("tiny")) << daemon->Stderr();
    api_ports_.push_back(daemon->ApiTcpPort());
    metrics_targets_.push_back(daemon->MetricsAddress());
    ASSERT_FALSE(metrics_targets_.back().empty());
    daemons_.push_back(std::move(daemon));
  }

  void TearDown() override {
    if (server_) {
      server_->Signal(SIGTERM);
      server_->Wait(std::chrono::seconds(10));
    }
    for (auto& daemon : daemons_) {
      EXPECT_EQ(daemon->Stop(), 0) << daemon->Stderr();
    }
  }

  // Starts Prometheus on the packaged rule files, scraping both nodes and
  // evaluating every second. Both listen on 127.0.0.1, so the packaged
  // relabelling (node = the target's host) would name both "127.0.0.1": each
  // target carries its node label, which that relabelling keeps.
  void StartPrometheus() {
    prom_port_ = FreeLoopbackPort();
    const std::filesystem::path config = dir_.path() / "prometheus.yml";
    std::string targets;
    for (size_t i = 0; i < metrics_targets_.size(); ++i) {
      absl::StrAppend(&targets, "      - targets: ['", metrics_targets_[i], "']\n",
                      "        labels: {node: ", kNodes[i], "}\n");
    }
    WriteFile(config,
              absl::StrCat("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                           "  evaluation_interval: 1s\n"
                           "rule_files:\n  - ",
                           (kPackaging / "prometheus/tokenmill-rules.yml").string(), "\n  - ",
                           (kPackaging / "prometheus/tokenmill-alerts.yml").string(),
                           "\nscrape_configs:\n  - job_name: tokenmill\n"
                           "    static_configs:\n",
                           targets,
                           "    relabel_configs:\n"
                           "      - source_labels: [node, __address__]\n"
                           "        regex: ';(.+?)(?::[0-9]+)?'\n"
                           "        target_label: node\n"
                           "        replacement: '$1'\n"));
    auto check = RunCommand({promtool_, "check", "config", config.string()});
    ASSERT_EQ(check.exit_code, 0) << check.out << check.err;
    server_ = std::make_unique<Subprocess>(
        std::vector<std::string>{prometheus_, "--config.file=" + config.string(),
                                 "--storage.tsdb.path=" + (dir_.path() / "tsdb").string(),
                                 "--web.listen-address=127.0.0.1:" + std::to_string(prom_port_),
                                 "--log.level=warn"},
        std::map<std::string, std::string>{}, dir_.path() / "prometheus.out",
        dir_.path() / "prometheus.err");
  }

  json PromGet(const std::string& path_and_query) {
    auto r = CurlRequest(absl::StrCat("http://127.0.0.1:", prom_port_, path_and_query), "");
    json j = json::parse(r.body, nullptr, false);
    if (j.is_discarded()) return json::object();
    return j;
  }

  // The result vector of an instant query ([] on error or no data).
  json Query(const std::string& expr) {
    json j = PromGet("/api/v1/query?query=" + UrlEncode(expr));
    if (j.value("status", "") != "success") return json::array();
    const json& data = j["data"];
    if (data.value("resultType", "") == "scalar") return json::array({data["result"]});
    return data["result"];
  }

  // Completions for one tenant until `stop`; counts the ones served.
  void Drive(const std::string& api_port, const std::string& key, int client,
             std::atomic<bool>& stop, std::atomic<int>& ok) {
    for (int i = 0; !stop.load(); ++i) {
      // A shared prefix so the prefix cache sees hits as well as misses.
      json body = {{"model", "tiny"},
                   {"prompt", absl::StrCat("The token factory meters every token it makes. ",
                                           "client ", client, " request ", i)},
                   {"max_tokens", 8 + (i % 3) * 4},
                   {"ignore_eos", true}};
      auto r = CurlRequest(
          absl::StrCat("http://127.0.0.1:", api_port, "/v1/completions"), "", "POST", body.dump(),
          {"Content-Type: application/json", "Authorization: Bearer " + key}, 30000);
      if (r.status == 200) ++ok;
    }
  }

  TempDir dir_;
  std::vector<std::unique_ptr<DaemonProcess>> daemons_;
  std::unique_ptr<Subprocess> server_;
  std::string prometheus_, promtool_;
  std::vector<std::string> api_ports_, metrics_targets_;
  int prom_port_ = 0;
};

TEST_F(MeteringPrometheusTest, RulesLoadAndEveryDashboardQueryReturnsDataUnderLoad) {
  const std::filesystem::path rules = kPackaging / "prometheus/tokenmill-rules.yml";
  const std::filesystem::path alerts = kPackaging / "prometheus/tokenmill-alerts.yml";
  auto lint = RunCommand({promtool_, "check", "rules", rules.string(), alerts.string()});
  ASSERT_EQ(lint.exit_code, 0) << lint.out << lint.err;
  EXPECT_THAT(lint.out + lint.err, Not(HasSubstr("WARNING")));

  std::vector<std::pair<std::string, std::string>> queries;
  const json dashboard =
      json::parse(ReadFile(kPackaging / "grafana/tokenmill-dashboard.json"), nullptr, false);
  ASSERT_FALSE(dashboard.is_discarded()) << "the dashboard is not JSON";
  CollectQueries(dashboard["panels"], queries);
  ASSERT_GE(queries.size(), 15u);
  // Every panel is per node (the node variable) or reads a fleet-wide rule:
  // no panel adds up different nodes' devices by accident.
  for (const auto& [title, expr] : queries) {
    EXPECT_TRUE(expr.find("$node") != std::string::npos || expr.find("fleet") != std::string::npos)
        << title << ": " << expr;
  }

  ASSERT_NO_FATAL_FAILURE(StartPrometheus());
  const bool up = WaitUntil([&] { return Query("up{job=\"tokenmill\"} == 1").size() == 2; },
                            std::chrono::seconds(30));
  ASSERT_TRUE(up) << "Prometheus never scraped the daemon\n"
                  << ReadFile(dir_.path() / "prometheus.err");

  // Load: one client per tenant and node, until every query has data for
  // each node (or a deadline).
  std::atomic<bool> stop{false};
  std::atomic<int> served{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < 4; ++c) {
    clients.emplace_back(
        [&, c] { Drive(api_ports_[c / 2], c % 2 == 0 ? kAlphaKey : kBetaKey, c, stop, served); });
  }
  std::vector<std::string> empty;
  std::set<std::string> unreported;
  const auto start = std::chrono::steady_clock::now();
  // At least 10 s of load: ten scrapes and rule evaluations while serving,
  // so the rule health checked below is not that of one lucky evaluation.
  const auto min_load = start + std::chrono::seconds(10);
  WaitUntil(
      [&] {
        // Queries are cheap; checking every 50 ms would only load Prometheus.
        std::this_thread::sleep_for(std::chrono::milliseconds(950));
        if (std::chrono::steady_clock::now() < min_load) return false;
        empty.clear();
        unreported.clear();
        for (const auto& [title, expr] : queries) {
          for (size_t n = 0; n < kNodes.size(); ++n) {
            const char* node = kNodes[n];
            if (Query(SubstituteVariables(expr, node)).empty()) {
              // A device gauge the hardware here does not report (no CPU
              // temperature sensor in a VM) is absent from the node's own
              // exposition too; every other query must have data.
              const std::string gauge = HardwareGauge(expr);
              if (!gauge.empty() && !Exposes(metrics_targets_[n], gauge)) {
                unreported.insert(absl::StrCat(title, " (", gauge, ")"));
                continue;
              }
              empty.push_back(absl::StrCat(title, " (node ", node, "): ", expr));
            }
            // A query without the node variable is the fleet's: once.
            if (expr.find("$node") == std::string::npos) break;
          }
        }
        return empty.empty();
      },
      std::chrono::seconds(40));
  const double waited =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  stop = true;
  for (auto& t : clients) t.join();
  std::printf(
      "%d completions served on 2 nodes; %zu queries (per node) without data after %.1f s\n",
      served.load(), empty.size(), waited);
  EXPECT_GT(served.load(), 0);
  for (const std::string& q : empty) ADD_FAILURE() << "no data for panel query " << q;
  for (const std::string& q : unreported) {
    std::printf("no data: %s: this machine's devices do not report it\n", q.c_str());
  }

  // Every group of both files is loaded and every rule evaluates cleanly.
  std::set<std::string> expected = RuleGroupNames(rules);
  for (const auto& name : RuleGroupNames(alerts)) expected.insert(name);
  ASSERT_GE(expected.size(), 5u);
  json groups;
  WaitUntil(
      [&] {
        groups = PromGet("/api/v1/rules")["data"]["groups"];
        if (!groups.is_array()) return false;
        for (const json& g : groups) {
          for (const json& r : g["rules"]) {
            if (r.value("health", "") != "ok") return false;
          }
        }
        return true;
      },
      std::chrono::seconds(10));
  ASSERT_TRUE(groups.is_array());
  std::set<std::string> loaded;
  for (const json& g : groups) {
    loaded.insert(g.value("name", ""));
    for (const json& r : g["rules"]) {
      EXPECT_EQ(r.value("health", ""), "ok")
          << g.value("name", "") << "/" << r.value("name", "") << ": " << r.value("lastError", "");
    }
  }
  EXPECT_EQ(loaded, expected);

  // The headline ratios carry sensible values, one series per node.
  for (const char* expr :
       {"tokenmill:cost_per_mtok:rate5m", "tokenmill:yield_tokens_per_usd:rate5m",
        "tokenmill:node_cost_usd_per_hour:rate5m",
        "node:tokenmill_all_in_yield_tokens_per_usd:rate5m", "node:tokenmill_tokens:rate5m"}) {
    json result = Query(expr);
    ASSERT_EQ(result.size(), 2u) << expr << ": " << result.dump();
    std::set<std::string> nodes;
    for (const json& r : result) {
      nodes.insert(r["metric"].value("node", ""));
      EXPECT_GT(std::stod(r["value"][1].get<std::string>()), 0.0) << expr;
    }
    EXPECT_EQ(nodes, (std::set<std::string>{"node-a", "node-b"})) << expr;
  }
  EXPECT_EQ(Query("tenant:tokenmill_margin_usd:rate5m").size(), 4u) << "per tenant and node";
  EXPECT_EQ(Query("fleet_tenant:tokenmill_margin_usd:rate5m").size(), 2u) << "per tenant";
  // The fleet's tokens are the two nodes' tokens.
  const json fleet = Query("fleet:tokenmill_tokens:rate5m - sum(node:tokenmill_tokens:rate5m)");
  ASSERT_EQ(fleet.size(), 1u);
  EXPECT_NEAR(std::stod(fleet[0]["value"][1].get<std::string>()), 0.0, 1e-9);
  // A healthy node under load fires nothing about readiness or the store.
  json alerts_now = PromGet("/api/v1/alerts")["data"]["alerts"];
  for (const json& a : alerts_now) {
    const std::string name = a["labels"].value("alertname", "");
    EXPECT_NE(name, "TokenmillNodeNotReady");
    EXPECT_NE(name, "TokenmillStoreErrors");
  }
}

}  // namespace
}  // namespace tokenmill::testing
