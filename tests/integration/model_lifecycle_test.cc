// Model loads against the real daemon, as an attacker on the control API and
// a careless operator would try them: paths with NUL bytes, relative paths,
// devices and FIFOs, ".." and symlinks out of the model roots; ids at the
// length limit; failed loads (logged, listed, not retried at every start);
// metric series gone with their model and tenant; 405 on the OpenAI
// endpoints; tenant names "." and "..".
#include <sys/stat.h>
#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <sstream>
#include <string>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/model/synth.h"
#include "runtime/tenants/tenant_registry.h"
#include "tests/integration/daemon_process.h"
#include "tests/support/temp_dir.h"
#include "tests/support/tiny_model.h"

namespace tokenmill::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr char kAcmeKey[] = "acme-key-0123456789";

// A model root with a model in it, a file outside it, and the ways out.
struct ModelTree {
  explicit ModelTree(const fs::path& dir)
      : root(dir / "models"), outside(dir / "outside"), model(root / "tiny.gguf") {
    fs::create_directories(root);
    fs::create_directories(outside);
    EXPECT_TRUE(model::WriteSynthGguf(TinyModelShape(), model).ok());
    // A real model outside the roots: were it loaded, the test would see it.
    EXPECT_TRUE(model::WriteSynthGguf(TinyModelShape(), outside / "secret.gguf").ok());
    fs::create_symlink(outside / "secret.gguf", root / "link.gguf");
    fs::create_symlink(model, root / "alias.gguf");
    EXPECT_EQ(mkfifo((root / "pipe.gguf").c_str(), 0600), 0);
    WriteFile(root / "garbage.gguf", std::string(4096, 'x'));
  }
  // The node's [node] lines: only this root (and /dev, to show that a device
  // is refused as such, not only for being outside).
  std::string NodeToml() const {
    return absl::StrCat("model_roots = [\"", root.string(), "\", \"/dev\"]\n");
  }
  fs::path root, outside, model;
};

CurlResult PostModel(DaemonProcess& daemon, const std::string& id, const std::string& path) {
  return daemon.Control("POST", "/control/v1/models", json{{"id", id}, {"path", path}}.dump());
}

std::string ErrorOf(const CurlResult& r) {
  json body = json::parse(r.body, nullptr, false);
  if (body.is_discarded() || !body.contains("error")) return r.body;
  return body["error"].value("message", "");
}

// Polls the model until `state` (or a deadline of 30 s); its JSON.
json WaitModelState(DaemonProcess& daemon, const std::string& id, const std::string& state) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  json model;
  while (std::chrono::steady_clock::now() < deadline) {
    CurlResult r = daemon.Control("GET", "/control/v1/models/" + id);
    model = json::parse(r.body, nullptr, false);
    if (r.status == 200 && !model.is_discarded() && model.value("state", "") == state) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return model;
}

bool WaitModelGone(DaemonProcess& daemon, const std::string& id) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < deadline) {
    if (daemon.Control("GET", "/control/v1/models/" + id).status == 404) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

// The sample lines of a /metrics scrape that contain `label` (model="x").
int SeriesWith(DaemonProcess& daemon, const std::string& label) {
  CurlResult scrape = CurlRequest("http://" + daemon.MetricsAddress() + "/metrics", "");
  EXPECT_EQ(scrape.status, 200);
  std::istringstream lines(scrape.body);
  int count = 0;
  for (std::string line; std::getline(lines, line);) {
    if (!line.starts_with("#") && absl::StrContains(line, label)) ++count;
  }
  return count;
}

TEST(ModelLifecycleTest, PathsAreCheckedBeforeAnythingIsOpened) {
  TempDir dir;
  ModelTree tree(dir.path());
  DaemonOptions options;
  options.node_toml = tree.NodeToml();
  DaemonProcess daemon(dir.path(), options);
  ASSERT_TRUE(daemon.Start()) << daemon.Stderr();

  // A NUL byte: refused, not cut into the file before it.
  CurlResult nul = PostModel(daemon, "nul", tree.model.string() + std::string(1, '\0') + ".txt");
  EXPECT_EQ(nul.status, 400) << nul.body;
  EXPECT_TRUE(absl::StrContains(ErrorOf(nul), "NUL")) << nul.body;
  EXPECT_EQ(daemon.Control("GET", "/control/v1/models/nul").status, 404);

  // A relative path would be the daemon's working directory's.
  CurlResult relative = PostModel(daemon, "rel", "models/tiny.gguf");
  EXPECT_EQ(relative.status, 400) << relative.body;
  EXPECT_TRUE(absl::StrContains(ErrorOf(relative), "relative")) << relative.body;

  // Devices and FIFOs: a clear 400, at once (opening the FIFO would block).
  CurlResult zero = PostModel(daemon, "zero", "/dev/zero");
  EXPECT_EQ(zero.status, 400) << zero.body;
  EXPECT_TRUE(absl::StrContains(ErrorOf(zero), "character device")) << zero.body;
  CurlResult fifo = PostModel(daemon, "fifo", (tree.root / "pipe.gguf").string());
  EXPECT_EQ(fifo.status, 400) << fifo.body;
  EXPECT_TRUE(absl::StrContains(ErrorOf(fifo), "FIFO")) << fifo.body;

  // Out of the root by "..", by a symlink, or not there at all: one answer,
  // whether or not the file outside exists.
  auto refused = [&](const fs::path& path) {
    CurlResult r = PostModel(daemon, "escape", path.string());
    EXPECT_EQ(r.status, 404) << path << ": " << r.body;
    return absl::StrReplaceAll(ErrorOf(r), {{path.string(), "PATH"}});
  };
  const std::string dotdot = refused(tree.root / ".." / "outside" / "secret.gguf");
  const std::string link = refused(tree.root / "link.gguf");
  const std::string absent_outside = refused(tree.outside / "none.gguf");
  const std::string absent_inside = refused(tree.root / "none.gguf");
  EXPECT_EQ(dotdot, absent_outside);
  EXPECT_EQ(link, absent_outside);
  EXPECT_EQ(absent_inside, absent_outside);
  EXPECT_TRUE(absl::StrContains(dotdot, "model roots")) << dotdot;
  EXPECT_EQ(daemon.Control("GET", "/control/v1/models/escape").status, 404);

  // A symlink inside the root loads; the canonical path is kept and shown.
  CurlResult alias = PostModel(daemon, "alias", (tree.root / "alias.gguf").string());
  ASSERT_EQ(alias.status, 202) << alias.body;
  json ready = WaitModelState(daemon, "alias", "ready");
  EXPECT_EQ(ready.value("path", ""), fs::canonical(tree.model).string()) << ready.dump();
  EXPECT_EQ(ready.value("source", ""), "api");

  // Ids: 64 characters pass, 65 do not.
  const std::string id64(64, 'm');
  CurlResult at_limit = PostModel(daemon, id64, tree.model.string());
  EXPECT_EQ(at_limit.status, 202) << at_limit.body;
  CurlResult over = PostModel(daemon, id64 + "m", tree.model.string());
  EXPECT_EQ(over.status, 400) << over.body;
  EXPECT_TRUE(absl::StrContains(ErrorOf(over), "1-64")) << over.body;

  // The generation endpoints take POST only: 405 with Allow, not 400.
  for (const char* path : {"/v1/completions", "/v1/chat/completions"}) {
    CurlResult get = daemon.Control("GET", path);
    EXPECT_EQ(get.status, 405) << path << ": " << get.body;
    EXPECT_TRUE(absl::StrContains(get.headers, "Allow: POST")) << get.headers;
  }

  // Tenant names "." and ".." (sent as is: curl would resolve them away).
  for (const char* name : {".", ".."}) {
    auto client = RawClient::ConnectUnix(daemon.socket_path().string());
    ASSERT_NE(client, nullptr);
    ASSERT_TRUE(client->Send(absl::StrCat("PUT /control/v1/tenants/", name,
                                          " HTTP/1.1\r\nHost: x\r\nContent-Type: "
                                          "application/json\r\nContent-Length: 2\r\n\r\n{}")));
    auto response = client->ReadResponse(std::chrono::seconds(10));
    ASSERT_TRUE(response.has_value());
    EXPECT_EQ(response->status, 400) << name << ": " << response->body;
  }
  EXPECT_EQ(daemon.Stop(), 0) << daemon.Stderr();
}

TEST(ModelLifecycleTest, FailedLoadsAreLoggedListedAndNotRetriedAtEveryStart) {
  TempDir dir;
  ModelTree tree(dir.path());
  DaemonOptions options;
  options.node_toml = tree.NodeToml();
  options.extra_toml = absl::StrCat("[[model]]\nid = \"broken-config\"\npath = \"",
                                    (tree.root / "garbage.gguf").string(), "\"\n");
  {
    DaemonProcess daemon(dir.path(), options);
    ASSERT_TRUE(daemon.Start()) << daemon.Stderr();
    json config_model = WaitModelState(daemon, "broken-config", "failed");
    EXPECT_TRUE(absl::StrContains(config_model.value("error", ""), "not a model"))
        << config_model.dump();

    ASSERT_EQ(PostModel(daemon, "broken", (tree.root / "garbage.gguf").string()).status, 202);
    json failed = WaitModelState(daemon, "broken", "failed");
    EXPECT_TRUE(absl::StrContains(failed.value("error", ""), "not a model")) << failed.dump();

    ASSERT_EQ(PostModel(daemon, "good", tree.model.string()).status, 202);
    WaitModelState(daemon, "good", "ready");
    ASSERT_EQ(daemon.Control("DELETE", "/control/v1/models/good").status, 202);
    ASSERT_TRUE(WaitModelGone(daemon, "good"));
    ASSERT_EQ(daemon.Stop(), 0);

    const std::string log = daemon.Stderr();
    EXPECT_TRUE(absl::StrContains(log, "model_load_started model=broken path="));
    EXPECT_TRUE(absl::StrContains(log, "model_load_failed model=broken path=")) << log;
    EXPECT_TRUE(absl::StrContains(log, "model_load_failed model=broken-config path=")) << log;
    EXPECT_TRUE(absl::StrContains(log, "not a model")) << log;
    EXPECT_TRUE(absl::StrContains(log, "model_loaded model=good device=")) << log;
    EXPECT_TRUE(absl::StrContains(log, "model_unloaded model=good")) << log;
  }
  {
    // The next start lists the failed API model with its reason and does not
    // load it again; the config's model is the operator's: tried again.
    DaemonProcess daemon(dir.path(), options);
    ASSERT_TRUE(daemon.Start()) << daemon.Stderr();
    json failed = WaitModelState(daemon, "broken", "failed");
    EXPECT_TRUE(absl::StrContains(failed.value("error", ""), "last load failed")) << failed.dump();
    EXPECT_TRUE(absl::StrContains(failed.value("error", ""), "not a model")) << failed.dump();
    WaitModelState(daemon, "broken-config", "failed");
    const std::string log = daemon.Stderr();
    EXPECT_FALSE(absl::StrContains(log, "model_load_started model=broken path=")) << log;
    EXPECT_TRUE(absl::StrContains(log, "model_not_retried model=broken")) << log;
    EXPECT_TRUE(absl::StrContains(log, "model_load_started model=broken-config")) << log;

    // The operator loads it again (a good file now): the failed entry is replaced.
    CurlResult again = PostModel(daemon, "broken", tree.model.string());
    ASSERT_EQ(again.status, 202) << again.body;
    EXPECT_EQ(WaitModelState(daemon, "broken", "ready").value("state", ""), "ready");
    ASSERT_EQ(daemon.Stop(), 0);
  }
  {
    DaemonProcess daemon(dir.path(), options);
    ASSERT_TRUE(daemon.Start()) << daemon.Stderr();
    EXPECT_EQ(WaitModelState(daemon, "broken", "ready").value("state", ""), "ready");
    ASSERT_EQ(daemon.Stop(), 0);
  }
}

// /readyz says ready only once the models the node starts with have settled
// (loaded or failed), so a load balancer sends nothing to a node that would
// answer 503 model_not_ready.
TEST(ModelLifecycleTest, ReadyOnlyOnceTheConfiguredModelsHaveSettled) {
  TempDir dir;
  ModelTree tree(dir.path());
  DaemonOptions options;
  options.node_toml = tree.NodeToml();
  options.extra_toml = absl::StrCat("[[model]]\nid = \"tiny\"\npath = \"", tree.model.string(),
                                    "\"\n[[model]]\nid = \"broken-config\"\npath = \"",
                                    (tree.root / "garbage.gguf").string(), "\"\n");
  DaemonProcess daemon(dir.path(), options);
  ASSERT_TRUE(daemon.Start()) << daemon.Stderr();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  CurlResult ready;
  while (std::chrono::steady_clock::now() < deadline) {
    ready = daemon.Control("GET", "/readyz");
    if (ready.status == 200) break;
    EXPECT_TRUE(absl::StrContains(ready.body, "loading")) << ready.body;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_EQ(ready.status, 200) << ready.body;
  const json models = json::parse(daemon.Control("GET", "/control/v1/models").body);
  ASSERT_EQ(models["models"].size(), 2u) << models.dump();
  for (const json& m : models["models"]) {
    EXPECT_NE(m.value("state", ""), "loading") << m.dump();
  }
  ASSERT_EQ(daemon.Stop(), 0);
}

TEST(ModelLifecycleTest, MetricSeriesGoWithTheirModelAndTenant) {
  TempDir dir;
  ModelTree tree(dir.path());
  DaemonOptions options;
  options.node_toml = tree.NodeToml();
  options.extra_toml =
      absl::StrCat("[[model]]\nid = \"tiny\"\npath = \"", tree.model.string(), "\"\n");
  DaemonProcess daemon(dir.path(), options);
  ASSERT_TRUE(daemon.Start()) << daemon.Stderr();
  ASSERT_TRUE(daemon.WaitModelReady("tiny")) << daemon.Stderr();
  CurlResult put = daemon.Control(
      "PUT", "/control/v1/tenants/acme",
      json{{"api_keys", json::array({kAcmeKey})}, {"price_input_per_mtok", 1.0}}.dump());
  ASSERT_EQ(put.status, 200) << put.body;
  ASSERT_EQ(PostModel(daemon, "second", tree.model.string()).status, 202);
  ASSERT_TRUE(daemon.WaitModelReady("second")) << daemon.Stderr();
  for (const char* model : {"second", "tiny"}) {
    CurlResult gen = CurlRequest(
        "http://localhost/v1/completions", daemon.socket_path().string(), "POST",
        json{{"model", model}, {"prompt", "Hello"}, {"max_tokens", 3}}.dump(),
        {"Content-Type: application/json", absl::StrCat("Authorization: Bearer ", kAcmeKey)});
    ASSERT_EQ(gen.status, 200) << gen.body;
  }
  const int model_series = SeriesWith(daemon, "model=\"second\"");
  const int tenant_series = SeriesWith(daemon, "tenant=\"acme\"");
  EXPECT_GE(model_series, 100);
  EXPECT_GE(tenant_series, 2 * 70);
  std::printf("series: model=\"second\" %d, tenant=\"acme\" %d\n", model_series, tenant_series);

  ASSERT_EQ(daemon.Control("DELETE", "/control/v1/models/second").status, 202);
  ASSERT_TRUE(WaitModelGone(daemon, "second"));
  EXPECT_EQ(SeriesWith(daemon, "model=\"second\""), 0);
  EXPECT_GT(SeriesWith(daemon, "model=\"tiny\""), 0);  // the other model keeps its own

  ASSERT_EQ(daemon.Control("DELETE", "/control/v1/tenants/acme").status, 200);
  EXPECT_EQ(SeriesWith(daemon, "tenant=\"acme\""), 0);
  EXPECT_EQ(daemon.Stop(), 0) << daemon.Stderr();
}

}  // namespace
}  // namespace tokenmill::testing
