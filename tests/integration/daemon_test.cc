// The real tokenmilld, started as systemd would start it, driven through its
// socket, its signals and its CLI.
#include <signal.h>
#include <sys/stat.h>

#include <filesystem>
#include <string>

#include "config/node_config.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/daemon_process.h"
#include "tokenmill/version.h"

namespace tokenmill::testing {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

json ParseJson(const CurlResult& r) {
  json j = json::parse(r.body, nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << "not JSON: " << r.body;
  return j;
}

class DaemonTest : public ::testing::Test {
 protected:
  TempDir dir_;
};

TEST_F(DaemonTest, StartsServesAndStopsCleanlyOnSigterm) {
  DaemonProcess daemon(dir_.path());
  ASSERT_TRUE(daemon.Start()) << daemon.Stderr();
  EXPECT_EQ(daemon.notify().Count("READY=1"), 1);

  auto health = daemon.Control("GET", "/healthz");
  EXPECT_EQ(health.status, 200);
  EXPECT_EQ(ParseJson(health)["status"], "ok");
  EXPECT_EQ(daemon.Control("GET", "/readyz").status, 200);

  auto node = ParseJson(daemon.Control("GET", "/control/v1/node"));
  EXPECT_EQ(node["version"], kVersion);
  EXPECT_EQ(node["state"], "serving");
  EXPECT_EQ(node["name"], "itest");
  EXPECT_GE(node["uptime_seconds"].get<double>(), 0.0);
  auto config = config::LoadConfigFile(daemon.config_path());
  ASSERT_TRUE(config.ok());
  EXPECT_EQ(node["config"]["digest"], config->digest);
  EXPECT_EQ(node["config"]["source"], daemon.config_path().string());
  ASSERT_FALSE(node["devices"].empty());
  EXPECT_EQ(node["devices"][0]["id"], "cpu");
  EXPECT_GT(node["devices"][0]["cpu"]["logical_cpus"].get<int>(), 0);

  auto devices = ParseJson(daemon.Control("GET", "/control/v1/devices"));
  ASSERT_TRUE(devices["devices"].is_array());
  EXPECT_GT(devices["devices"][0]["memory_total_bytes"].get<uint64_t>(), 0u);

  struct stat st {};
  ASSERT_EQ(stat(daemon.socket_path().c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0660u);
  EXPECT_TRUE(std::filesystem::exists(daemon.data_dir()));

  auto code = daemon.Stop();
  ASSERT_TRUE(code.has_value()) << "did not exit after SIGTERM";
  EXPECT_EQ(*code, 0) << daemon.Stderr();
  EXPECT_TRUE(daemon.notify().WaitFor("STOPPING=1", std::chrono::seconds(1)));
  EXPECT_FALSE(std::filesystem::exists(daemon.socket_path()));
  EXPECT_THAT(daemon.Stderr(), HasSubstr("store_closed"));
}

TEST_F(DaemonTest, ServesTheControlApiOnTcpToo) {
  DaemonProcess daemon(dir_.path(), {.api_toml = "tcp = \"127.0.0.1:0\"\n"});
  ASSERT_TRUE(daemon.Start()) << daemon.Stderr();
  std::string tcp = ParseJson(daemon.Control("GET", "/control/v1/node"))["api"]["tcp"];
  ASSERT_THAT(tcp, ::testing::StartsWith("127.0.0.1:"));
  EXPECT_NE(tcp, "127.0.0.1:0") << "the bound port is reported";
  auto health = CurlRequest("http://" + tcp + "/healthz", "");
  EXPECT_EQ(health.status, 200) << "curl code " << health.code;
  EXPECT_EQ(daemon.Stop(), 0);
}

TEST_F(DaemonTest, ErrorsAreJsonWithTypeAndStatus) {
  DaemonProcess daemon(dir_.path());
  ASSERT_TRUE(daemon.Start()) << daemon.Stderr();
  auto missing = daemon.Control("GET", "/control/v1/nope");
  EXPECT_EQ(missing.status, 404);
  EXPECT_EQ(ParseJson(missing)["error"]["type"], "not_found");
  EXPECT_THAT(ParseJson(missing)["error"]["message"].get<std::string>(),
              HasSubstr("/control/v1/nope"));
  auto wrong_method = daemon.Control("POST", "/control/v1/node", "{}");
  EXPECT_EQ(wrong_method.status, 405);
  EXPECT_EQ(ParseJson(wrong_method)["error"]["type"], "method_not_allowed");
}

TEST_F(DaemonTest, DrainStopsReadinessAndCanBeCancelled) {
  DaemonProcess daemon(dir_.path());
  ASSERT_TRUE(daemon.Start()) << daemon.Stderr();
  auto drain = daemon.Control("POST", "/control/v1/drain");
  EXPECT_EQ(drain.status, 202);
  EXPECT_EQ(ParseJson(drain)["draining"], true);
  auto ready = daemon.Control("GET", "/readyz");
  EXPECT_EQ(ready.status, 503);
  EXPECT_EQ(ParseJson(ready)["error"]["type"], "unavailable");
  EXPECT_EQ(daemon.Control("GET", "/healthz").status, 200) << "draining is not unhealthy";
  EXPECT_EQ(ParseJson(daemon.Control("GET", "/control/v1/node"))["state"], "draining");
  EXPECT_EQ(daemon.Control("DELETE", "/control/v1/drain").status, 200);
  EXPECT_EQ(daemon.Control("GET", "/readyz").status, 200);
}

TEST_F(DaemonTest, SighupReloadsGoodConfigAndKeepsServingOnBadOne) {
  DaemonProcess daemon(dir_.path());
  ASSERT_TRUE(daemon.Start()) << daemon.Stderr();
  std::string digest0 = ParseJson(daemon.Control("GET", "/control/v1/node"))["config"]["digest"];

  // A tenant and a price change: reloadable.
  WriteFile(daemon.config_path(),
            daemon.BaseConfig() +
                "[[tenant]]\nname = \"acme\"\nweight = 2.0\nprice_output_per_mtok = 0.6\n");
  ASSERT_TRUE(daemon.process().Signal(SIGHUP));
  ASSERT_TRUE(daemon.notify().WaitFor("RELOADING=1", std::chrono::seconds(10)));
  ASSERT_TRUE(daemon.notify().WaitFor("READY=1", std::chrono::seconds(10)));
  auto node = ParseJson(daemon.Control("GET", "/control/v1/node"));
  std::string digest1 = node["config"]["digest"];
  EXPECT_NE(digest1, digest0);
  EXPECT_TRUE(node["config"]["restart_pending"].empty());

  // A bad edit is refused: the node keeps the last good config and serves.
  WriteFile(daemon.config_path(), daemon.BaseConfig() + "[cost]\npue = 0.5\n");
  ASSERT_TRUE(daemon.process().Signal(SIGHUP));
  ASSERT_TRUE(daemon.notify().WaitFor("READY=1", std::chrono::seconds(10)));
  node = ParseJson(daemon.Control("GET", "/control/v1/node"));
  EXPECT_EQ(node["config"]["digest"], digest1);
  EXPECT_EQ(daemon.Control("GET", "/healthz").status, 200);
  EXPECT_THAT(daemon.Stderr(), HasSubstr("config_reload_failed"));

  // A setting that needs a restart is reported, not applied.
  std::string moved = daemon.BaseConfig();
  moved.replace(moved.find("tokenmill.sock"), 14, "other.sock");
  WriteFile(daemon.config_path(), moved);
  ASSERT_TRUE(daemon.process().Signal(SIGHUP));
  ASSERT_TRUE(daemon.notify().WaitFor("READY=1", std::chrono::seconds(10)));
  node = ParseJson(daemon.Control("GET", "/control/v1/node"));
  EXPECT_THAT(node["config"]["restart_pending"].dump(), HasSubstr("api.socket"));
  EXPECT_EQ(node["api"]["socket"], daemon.socket_path().string());
  EXPECT_EQ(daemon.Stop(), 0);
}

TEST_F(DaemonTest, BadConfigExitsTwoWithLocationAndStartsNothing) {
  DaemonProcess daemon(dir_.path(), {.extra_toml = "[scheduler]\nblock_tokens = 17\n"});
  EXPECT_FALSE(daemon.Start());
  auto code = daemon.process().Wait(std::chrono::seconds(10));
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 2);
  // The offending line is the second of the appended text.
  int line = 0;
  for (char c : daemon.BaseConfig()) line += c == '\n';
  EXPECT_THAT(daemon.Stderr(),
              HasSubstr(daemon.config_path().string() + ":" + std::to_string(line + 2) + ":"));
  EXPECT_THAT(daemon.Stderr(), HasSubstr("block_tokens"));
  EXPECT_FALSE(std::filesystem::exists(daemon.socket_path()));
  EXPECT_FALSE(std::filesystem::exists(daemon.data_dir()));
}

TEST_F(DaemonTest, CheckConfigValidatesAndExits) {
  DaemonProcess good(dir_.path());
  auto ok =
      RunCommand({TokenmilldPath(), "--check-config", "--config", good.config_path().string()});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_THAT(ok.out, HasSubstr("configuration OK"));
  EXPECT_FALSE(std::filesystem::exists(good.data_dir()));

  WriteFile(good.config_path(), "[api]\nsockett = \"/tmp/x.sock\"\n");
  auto bad =
      RunCommand({TokenmilldPath(), "--check-config", "--config", good.config_path().string()});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_THAT(bad.err, HasSubstr(good.config_path().string() + ":2:"));
  EXPECT_THAT(bad.err, HasSubstr("sockett"));

  auto missing =
      RunCommand({TokenmilldPath(), "--check-config", "--config", "/nonexistent/t.toml"});
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_THAT(missing.err, HasSubstr("/nonexistent/t.toml"));
  auto bad_flag = RunCommand({TokenmilldPath(), "--no-such-flag"});
  EXPECT_EQ(bad_flag.exit_code, 2);
}

TEST_F(DaemonTest, SecondDaemonOnSameDataDirIsRefused) {
  TempDir second_dir;
  DaemonProcess first(dir_.path());
  ASSERT_TRUE(first.Start()) << first.Stderr();
  DaemonProcess second(second_dir.path(), {.data_dir = first.data_dir()});
  EXPECT_FALSE(second.Start());
  EXPECT_EQ(second.process().Wait(std::chrono::seconds(10)), 1);
  EXPECT_THAT(second.Stderr(), HasSubstr("in use"));
  EXPECT_THAT(second.Stderr(), HasSubstr(std::to_string(first.process().pid())));
  EXPECT_EQ(first.Control("GET", "/healthz").status, 200);
  EXPECT_FALSE(std::filesystem::exists(second.socket_path()));
}

TEST_F(DaemonTest, SecondDaemonOnSameSocketIsRefused) {
  TempDir second_dir;
  DaemonProcess first(dir_.path());
  ASSERT_TRUE(first.Start()) << first.Stderr();
  DaemonProcess second(second_dir.path(), {.socket = first.socket_path()});
  EXPECT_FALSE(second.Start());
  EXPECT_EQ(second.process().Wait(std::chrono::seconds(10)), 1);
  EXPECT_THAT(second.Stderr(), HasSubstr(first.socket_path().string()));
  EXPECT_EQ(first.Control("GET", "/healthz").status, 200);
}

TEST_F(DaemonTest, WatchdogPingsWhileLoopAnswers) {
  DaemonProcess daemon(dir_.path(), {.watchdog = std::chrono::milliseconds(400)});
  ASSERT_TRUE(daemon.Start()) << daemon.Stderr();
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(daemon.notify().WaitFor("WATCHDOG=1", std::chrono::seconds(2))) << "ping " << i;
  }
}

TEST_F(DaemonTest, MetricsEndpointExportsBuildProcessAndDevices) {
  DaemonProcess daemon(dir_.path());
  ASSERT_TRUE(daemon.Start()) << daemon.Stderr();
  std::string address = daemon.MetricsAddress();
  ASSERT_THAT(address, ::testing::StartsWith("127.0.0.1:"));
  std::string text;
  // The sampler's first reading lands within an interval (200 ms).
  ASSERT_TRUE(WaitUntil(
      [&] {
        text = CurlRequest("http://" + address + "/metrics", "").body;
        return text.find("tokenmill_device_memory_bytes{") != std::string::npos;
      },
      std::chrono::seconds(10)))
      << text;
  EXPECT_THAT(text, HasSubstr("tokenmill_build_info{"));
  EXPECT_THAT(text, HasSubstr(std::string("version=\"") + kVersion + "\""));
  EXPECT_THAT(text, HasSubstr("process_resident_memory_bytes"));
  EXPECT_THAT(text, HasSubstr("tokenmill_node_ready 1"));
  EXPECT_THAT(text, HasSubstr("device=\"cpu\""));
}

TEST_F(DaemonTest, CliShowsStatusAndDevices) {
  DaemonProcess daemon(dir_.path());
  ASSERT_TRUE(daemon.Start()) << daemon.Stderr();
  std::string socket = daemon.socket_path().string();
  auto status = RunCommand({TokenmillCliPath(), "--socket", socket, "status"});
  EXPECT_EQ(status.exit_code, 0) << status.err;
  EXPECT_THAT(status.out, HasSubstr("serving"));
  EXPECT_THAT(status.out, HasSubstr("itest"));
  EXPECT_THAT(status.out, HasSubstr(kVersion));

  auto table = RunCommand({TokenmillCliPath(), "--socket", socket, "devices"});
  EXPECT_EQ(table.exit_code, 0) << table.err;
  EXPECT_THAT(table.out, HasSubstr("ID"));
  EXPECT_THAT(table.out, HasSubstr("cpu"));

  auto as_json = RunCommand({TokenmillCliPath(), "--socket", socket, "--json", "devices"});
  ASSERT_EQ(as_json.exit_code, 0) << as_json.err;
  json devices = json::parse(as_json.out, nullptr, false);
  ASSERT_FALSE(devices.is_discarded()) << as_json.out;
  EXPECT_EQ(devices["devices"][0]["id"], "cpu");

  auto drain = RunCommand({TokenmillCliPath(), "--socket", socket, "drain"});
  EXPECT_EQ(drain.exit_code, 0);
  EXPECT_THAT(drain.out, HasSubstr("draining"));
  EXPECT_EQ(daemon.Control("GET", "/readyz").status, 503);

  auto unreachable =
      RunCommand({TokenmillCliPath(), "--socket", (dir_.path() / "none.sock").string(), "status"});
  EXPECT_EQ(unreachable.exit_code, 1);
  EXPECT_THAT(unreachable.err, HasSubstr("cannot reach tokenmilld"));
}

}  // namespace
}  // namespace tokenmill::testing
