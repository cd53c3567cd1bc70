// A real Prometheus server (Debian's prometheus package) scrapes the daemon;
// promtool lints what it serves.
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/daemon_process.h"

namespace tokenmill::testing {
namespace {

using nlohmann::json;

std::string FindOnPath(const std::string& name) {
  for (const char* dir : {"/usr/bin", "/usr/local/bin", "/bin"}) {
    std::string path = std::string(dir) + "/" + name;
    if (access(path.c_str(), X_OK) == 0) return path;
  }
  return "";
}

// The first sample value of an instant query, or "" when there is none yet.
std::string QueryValue(int port, const std::string& query_urlencoded) {
  auto r = CurlRequest(
      "http://127.0.0.1:" + std::to_string(port) + "/api/v1/query?query=" + query_urlencoded, "");
  json j = json::parse(r.body, nullptr, false);
  if (j.is_discarded() || j.value("status", "") != "success") return "";
  const auto& result = j["data"]["result"];
  if (!result.is_array() || result.empty()) return "";
  return result[0]["value"][1].get<std::string>();
}

TEST(PrometheusTest, RealPrometheusScrapesTheDaemonAndPromtoolFindsNoProblems) {
  std::string prometheus = FindOnPath("prometheus");
  std::string promtool = FindOnPath("promtool");
  // Not a skip: the README's test command installs Debian's prometheus package.
  ASSERT_FALSE(prometheus.empty()) << "prometheus not installed (apt-get install prometheus)";
  ASSERT_FALSE(promtool.empty()) << "promtool not installed (apt-get install prometheus)";

  TempDir dir;
  DaemonProcess daemon(dir.path());
  ASSERT_TRUE(daemon.Start()) << daemon.Stderr();
  std::string target = daemon.MetricsAddress();
  ASSERT_FALSE(target.empty());

  int port = FreeLoopbackPort();
  std::filesystem::path config = dir.path() / "prometheus.yml";
  WriteFile(config,
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
            "scrape_configs:\n  - job_name: tokenmill\n    static_configs:\n"
            "      - targets: ['" +
                target + "']\n");
  auto check_config = RunCommand({promtool, "check", "config", config.string()});
  ASSERT_EQ(check_config.exit_code, 0) << check_config.out << check_config.err;

  Subprocess server({prometheus, "--config.file=" + config.string(),
                     "--storage.tsdb.path=" + (dir.path() / "tsdb").string(),
                     "--web.listen-address=127.0.0.1:" + std::to_string(port), "--log.level=warn"},
                    {}, dir.path() / "prometheus.out", dir.path() / "prometheus.err");

  // up{job="tokenmill"} == 1 once a scrape succeeded.
  bool up = WaitUntil([&] { return QueryValue(port, "up%7Bjob%3D%22tokenmill%22%7D") == "1"; },
                      std::chrono::seconds(60));
  ASSERT_TRUE(up) << "Prometheus never scraped the daemon successfully\n"
                  << ReadFile(dir.path() / "prometheus.err");
  EXPECT_EQ(QueryValue(port, "tokenmill_build_info"), "1");
  EXPECT_EQ(QueryValue(port, "tokenmill_node_ready"), "1");
  bool devices = WaitUntil(
      [&] {
        return !QueryValue(port,
                           "tokenmill_device_memory_bytes%7Bdevice%3D%22cpu%22%2C"
                           "state%3D%22total%22%7D")
                    .empty();
      },
      std::chrono::seconds(20));
  EXPECT_TRUE(devices) << "device gauges never reached Prometheus";
  EXPECT_FALSE(
      QueryValue(port, "process_resident_memory_bytes%7Bjob%3D%22tokenmill%22%7D").empty());

  // The exposition itself, linted.
  auto metrics = CurlRequest("http://" + target + "/metrics", "");
  ASSERT_EQ(metrics.status, 200);
  auto lint = RunCommand({promtool, "check", "metrics"}, std::chrono::seconds(30), metrics.body);
  EXPECT_EQ(lint.exit_code, 0) << lint.out << lint.err;
  EXPECT_EQ(lint.out + lint.err, "") << "promtool reported problems";

  server.Signal(SIGTERM);
  server.Wait(std::chrono::seconds(10));
  EXPECT_EQ(daemon.Stop(), 0);
}

}  // namespace
}  // namespace tokenmill::testing
