// Which listener reaches which API, against the real daemon (issue 11): the
// client TCP port serves the OpenAI API only, a control TCP port needs the
// admin token, each listener has its own connection budget, and clients that
// do not read cannot hold the server's memory.
#include <unistd.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/tenants/tenant_registry.h"
#include "tests/integration/daemon_process.h"
#include "tests/support/http_client.h"

namespace tokenmill::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using json = nlohmann::json;

constexpr char kAdminToken[] = "admin-token-for-tests-0123456789";

std::string Url(const std::string& host_port, const std::string& path) {
  return "http://" + host_port + path;
}

// "127.0.0.1:PORT" of a listener, from /control/v1/node over the socket.
std::string Address(DaemonProcess& daemon, const std::string& key) {
  const json node = json::parse(daemon.Control("GET", "/control/v1/node").body, nullptr, false);
  if (node.is_discarded() || !node["api"][key].is_string()) return "";
  return node["api"][key];
}

uint16_t PortOf(const std::string& host_port) {
  return static_cast<uint16_t>(std::stoi(host_port.substr(host_port.rfind(':') + 1)));
}

TEST(ApiListenersTest, ClientPortServesNoControlApi) {
  TempDir dir;
  DaemonProcess daemon(dir.path(), {.api_toml = "tcp = \"127.0.0.1:0\"\n"});
  ASSERT_TRUE(daemon.Start()) << daemon.Stderr();
  const std::string tcp = Address(daemon, "tcp");
  ASSERT_FALSE(tcp.empty());

  // Every control path, read or write, is absent on the client port.
  struct Probe {
    std::string method, path, body;
  };
  const std::vector<Probe> probes = {
      {"GET", "/control/v1/node", ""},
      {"GET", "/control/v1/devices", ""},
      {"GET", "/control/v1/usage?group=total", ""},
      {"GET", "/control/v1/cost", ""},
      {"GET", "/control/v1/tenants", ""},
      {"GET", "/control/v1/models", ""},
      {"POST", "/control/v1/drain", ""},
      {"PUT", "/control/v1/tenants/mallory",
       R"({"api_keys":["mallory-key-0123456789"],"price_input_per_mtok":0})"},
      {"POST", "/control/v1/models", R"({"id":"shadow","path":"/etc/shadow"})"},
      {"GET", "/control", ""},
      {"GET", "/metrics", ""},
  };
  for (const Probe& p : probes) {
    CurlResult r = CurlRequest(Url(tcp, p.path), "", p.method, p.body);
    ASSERT_EQ(r.code, 0) << p.method << " " << p.path;
    EXPECT_EQ(r.status, 404) << p.method << " " << p.path << ": " << r.body;
    EXPECT_THAT(r.body, Not(HasSubstr("shadow"))) << "nothing about the file may leak";
  }
  // None of them ran.
  EXPECT_EQ(daemon.Control("GET", "/readyz").status, 200) << "the drain must not have run";
  EXPECT_EQ(daemon.Control("GET", "/control/v1/tenants/mallory").status, 404);
  EXPECT_EQ(daemon.Control("GET", "/control/v1/models/shadow").status, 404);

  // What the port is for still answers: health probes and the OpenAI API.
  EXPECT_EQ(CurlRequest(Url(tcp, "/healthz"), "").status, 200);
  EXPECT_EQ(CurlRequest(Url(tcp, "/readyz"), "").status, 200);
  CurlResult models = CurlRequest(Url(tcp, "/v1/models"), "");
  EXPECT_EQ(models.status, 200) << "the OpenAI API answers here: " << models.body;
  // And the socket still serves the control API.
  EXPECT_EQ(daemon.Control("GET", "/control/v1/node").status, 200);
  EXPECT_EQ(Address(daemon, "control_tcp"), "") << "no control port unless configured";
}

TEST(ApiListenersTest, ControlPortNeedsTheAdminToken) {
  TempDir dir;
  DaemonProcess daemon(dir.path(), {.api_toml = "tcp = \"127.0.0.1:0\"\ncontrol_tcp = "
                                                "\"127.0.0.1:0\"\ncontrol_token_sha256 = \"" +
                                                tenants::ApiKeySha256(kAdminToken) + "\"\n"});
  ASSERT_TRUE(daemon.Start()) << daemon.Stderr();
  const std::string control = Address(daemon, "control_tcp");
  const std::string tcp = Address(daemon, "tcp");
  ASSERT_FALSE(control.empty());
  ASSERT_NE(control, tcp);
  const std::string good = std::string("Authorization: Bearer ") + kAdminToken;

  // Without the token, or with a wrong one, or another scheme: 401.
  for (const std::vector<std::string>& headers : std::vector<std::vector<std::string>>{
           {},
           {"Authorization: Bearer wrong-token"},
           {std::string("Authorization: Bearer ") + kAdminToken + "x"},
           {std::string("Authorization: Basic ") + kAdminToken},
           {"Authorization: Bearer "}}) {
    for (const char* path : {"/control/v1/node", "/control/v1/cost", "/nope", "/v1/models"}) {
      CurlResult r = CurlRequest(Url(control, path), "", "GET", "", headers);
      ASSERT_EQ(r.code, 0);
      EXPECT_EQ(r.status, 401) << path << " with " << ::testing::PrintToString(headers);
      EXPECT_THAT(r.headers, HasSubstr("WWW-Authenticate: Bearer"));
    }
  }
  CurlResult refused = CurlRequest(Url(control, "/control/v1/drain"), "", "POST");
  EXPECT_EQ(refused.status, 401);
  EXPECT_EQ(daemon.Control("GET", "/readyz").status, 200) << "a refused drain must not run";

  // With it, the control API answers as on the socket; the scheme is
  // case-insensitive.
  CurlResult node = CurlRequest(Url(control, "/control/v1/node"), "", "GET", "", {good});
  EXPECT_EQ(node.status, 200) << node.body;
  CurlResult cost = CurlRequest(Url(control, "/control/v1/cost"), "", "GET", "",
                                {std::string("authorization: bearer ") + kAdminToken});
  EXPECT_EQ(cost.status, 200) << cost.body;
  CurlResult drain = CurlRequest(Url(control, "/control/v1/drain"), "", "POST", "", {good});
  EXPECT_EQ(drain.status, 202) << drain.body;
  EXPECT_EQ(daemon.Control("GET", "/readyz").status, 503) << "the drain ran";
  // The OpenAI API lives on the client port, not here; the probes need no token.
  EXPECT_EQ(CurlRequest(Url(control, "/v1/models"), "", "GET", "", {good}).status, 404);
  EXPECT_EQ(CurlRequest(Url(control, "/tokenize"), "", "POST", R"({"prompt":"a"})", {good}).status,
            404);
  EXPECT_EQ(CurlRequest(Url(control, "/healthz"), "").status, 200);
  // The client port still serves no control path, token or not.
  EXPECT_EQ(CurlRequest(Url(tcp, "/control/v1/node"), "", "GET", "", {good}).status, 404);

  // The CLI reaches the control port with --url and the token from the
  // environment; without the right token it reports the 401.
  CommandResult cli = RunCommand({TokenmillCliPath(), "--url", "http://" + control, "status"},
                                 std::chrono::seconds(30), "", {{"TOKENMILL_TOKEN", kAdminToken}});
  EXPECT_EQ(cli.exit_code, 0) << cli.err;
  EXPECT_THAT(cli.out, HasSubstr("itest"));
  CommandResult wrong =
      RunCommand({TokenmillCliPath(), "--url", "http://" + control, "--token", "wrong", "status"},
                 std::chrono::seconds(30));
  EXPECT_EQ(wrong.exit_code, 1);
  EXPECT_THAT(wrong.err, HasSubstr("HTTP 401"));
  CommandResult no_token = RunCommand({TokenmillCliPath(), "--url", "http://" + control, "status"},
                                      std::chrono::seconds(30), "", {{"TOKENMILL_TOKEN", ""}});
  EXPECT_EQ(no_token.exit_code, 2) << "--url without a token is a usage error";

  // Refusals and state changes are logged with the peer.
  const std::string log = daemon.Stderr();
  EXPECT_THAT(log, HasSubstr("control_unauthorized listener=control peer=127.0.0.1:"));
  EXPECT_THAT(log, HasSubstr("control_request method=POST path=\"/control/v1/drain\" "
                             "listener=control peer=127.0.0.1:"));
  EXPECT_THAT(log, Not(HasSubstr(kAdminToken))) << "the token is never logged";
}

TEST(ApiListenersTest, SocketLogsWhoChangesTheNode) {
  TempDir dir;
  DaemonProcess daemon(dir.path());
  ASSERT_TRUE(daemon.Start()) << daemon.Stderr();
  ASSERT_EQ(daemon.Control("GET", "/control/v1/node").status, 200);
  ASSERT_EQ(daemon.Control("POST", "/control/v1/drain").status, 202);
  ASSERT_EQ(daemon.Control("DELETE", "/control/v1/drain").status, 200);
  ASSERT_TRUE(daemon.Stop().has_value());
  // libcurl runs in this process: the daemon saw this test's pid and uid.
  const std::string who = " listener=local peer=- pid=" + std::to_string(getpid()) +
                          " uid=" + std::to_string(getuid()) + " gid=" + std::to_string(getgid());
  const std::string log = daemon.Stderr();
  EXPECT_THAT(log, HasSubstr("control_request method=POST path=\"/control/v1/drain\"" + who));
  EXPECT_THAT(log, HasSubstr("control_request method=DELETE path=\"/control/v1/drain\"" + who));
  EXPECT_THAT(log, Not(HasSubstr("control_request method=GET"))) << "reads are not logged";
}

// Issue 11: keep-alive connections filling the TCP port made `tokenmill
// status` fail on the socket, as both shared one connection budget.
TEST(ApiListenersTest, FullClientPortLeavesTheSocketServing) {
  TempDir dir;
  DaemonProcess daemon(dir.path(), {.api_toml = "tcp = \"127.0.0.1:0\"\nmax_connections = 8\n",
                                    .idle_timeout = "60s"});
  ASSERT_TRUE(daemon.Start()) << daemon.Stderr();
  const uint16_t port = PortOf(Address(daemon, "tcp"));
  std::vector<std::unique_ptr<RawClient>> idle;
  for (int i = 0; i < 8; ++i) {
    auto client = RawClient::ConnectTcp(port);
    ASSERT_NE(client, nullptr);
    ASSERT_TRUE(client->Send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"));
    auto response = client->ReadResponse(std::chrono::seconds(10));
    ASSERT_TRUE(response.has_value()) << "connection " << i << " was not admitted";
    idle.push_back(std::move(client));  // kept alive, idle
  }
  auto refused = RawClient::ConnectTcp(port);
  ASSERT_NE(refused, nullptr);
  EXPECT_TRUE(refused->WaitClosed(std::chrono::seconds(5))) << "the port's budget is full";

  // The operator's tools still reach the node over the socket.
  CurlResult node = daemon.Control("GET", "/control/v1/node");
  EXPECT_EQ(node.code, 0);
  EXPECT_EQ(node.status, 200);
  CommandResult status =
      RunCommand({TokenmillCliPath(), "--socket", daemon.socket_path().string(), "status"},
                 std::chrono::seconds(30));
  EXPECT_EQ(status.exit_code, 0) << status.err;
  EXPECT_THAT(status.out, HasSubstr("itest"));
}

// Issue 11: a client that never reads may hold 16 MiB of output per
// connection; the daemon bounds what all of them hold together.
TEST(ApiListenersTest, ClientThatNeverReadsIsDroppedPastTheOutputBudget) {
  TempDir dir;
  DaemonProcess daemon(dir.path(),
                       {.api_toml = "tcp = \"127.0.0.1:0\"\nmax_buffered_output_bytes = \"1MiB\"\n",
                        .idle_timeout = "60s"});
  ASSERT_TRUE(daemon.Start()) << daemon.Stderr();
  const std::string tcp = Address(daemon, "tcp");
  // Pipelined probes whose answers the client never reads: about 40 times the
  // bytes it sends pile up in the daemon once the kernel's buffers are full.
  auto greedy = RawClient::ConnectUnix(daemon.socket_path().string());
  ASSERT_NE(greedy, nullptr);
  std::string batch;
  for (int i = 0; i < 1000; ++i) batch += "GET /control/v1/node HTTP/1.1\r\nHost: x\r\n\r\n";
  for (int i = 0; i < 20; ++i) {
    if (!greedy->Send(batch)) break;  // dropped while we were still sending
  }
  EXPECT_TRUE(greedy->WaitClosed(std::chrono::seconds(20))) << "it must be dropped";
  // Everyone else is served.
  EXPECT_EQ(daemon.Control("GET", "/control/v1/node").status, 200);
  EXPECT_EQ(CurlRequest(Url(tcp, "/healthz"), "").status, 200);
  EXPECT_TRUE(
      WaitUntil([&] { return daemon.Stderr().find("slow_reader_dropped") != std::string::npos; },
                std::chrono::seconds(10)));
  const std::string log = daemon.Stderr();
  EXPECT_THAT(log, HasSubstr("slow_reader_dropped reason=server_output_budget listener=unix:" +
                             daemon.socket_path().string() +
                             " role=local peer=pid:" + std::to_string(getpid())));
  EXPECT_THAT(log, HasSubstr("server_limit_bytes=1048576"));
}

}  // namespace
}  // namespace tokenmill::testing
