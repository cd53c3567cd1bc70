// Planned drains of a real daemon through the real CLI: `tokenmill drain
// --wait` returns once running requests have finished (the Kubernetes
// preStop hook), gives up with exit 1 when they outlast the wait, and the
// Slurm prolog/epilog of packaging/slurm drain the node before a job and
// resume it after.
#include <atomic>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
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

constexpr char kKey[] = "key-drain-0123456789";
const std::filesystem::path kSlurm =
    std::filesystem::path(TOKENMILL_SOURCE_DIR) / "packaging" / "slurm";

class DrainTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const model::SynthOptions shape =
        TinyModelShape(devices::TensorType::kF16, /*vocab_size=*/300, /*context_length=*/4096);
    const std::filesystem::path model_path = dir_.path() / "tiny.gguf";
    ASSERT_TRUE(model::WriteSynthGguf(shape, model_path).ok());
    DaemonOptions options;
    options.api_toml = "tcp = \"127.0.0.1:0\"\n";
    // Teardown cancels what a test left running instead of waiting for it.
    options.node_toml = "drain_timeout = \"1s\"\n";
    options.extra_toml = absl::StrCat("[[model]]\nid = \"tiny\"\npath = \"", model_path.string(),
                                      "\"\n\n[[tenant]]\nname = \"alpha\"\napi_keys_sha256 = [\"",
                                      tenants::ApiKeySha256(kKey), "\"]\n");
    daemon_ = std::make_unique<DaemonProcess>(dir_.path(), options);
    ASSERT_TRUE(daemon_->Start()) << daemon_->Stderr();
    ASSERT_TRUE(daemon_->WaitModelReady("tiny")) << daemon_->Stderr();
  }

  void TearDown() override {
    if (daemon_) {
      EXPECT_EQ(daemon_->Stop(), 0) << daemon_->Stderr();
    }
    for (auto& t : requests_) t.join();
  }

  // Long completions in the background; their HTTP status and generated
  // token counts land in statuses_ / tokens_.
  void StartLongRequests(int n, int max_tokens) {
    statuses_.assign(n, 0);
    tokens_.assign(n, 0);
    for (int i = 0; i < n; ++i) {
      requests_.emplace_back([this, i, max_tokens] {
        json body = {{"model", "tiny"},
                     {"prompt", absl::StrCat("request ", i, " of a planned drain")},
                     {"max_tokens", max_tokens},
                     {"ignore_eos", true}};
        auto r = CurlRequest(
            absl::StrCat("http://127.0.0.1:", daemon_->ApiTcpPort(), "/v1/completions"), "", "POST",
            body.dump(),
            {"Content-Type: application/json", absl::StrCat("Authorization: Bearer ", kKey)},
            120000);
        statuses_[i] = r.status;
        json j = json::parse(r.body, nullptr, false);
        if (!j.is_discarded() && j.contains("usage")) {
          tokens_[i] = j["usage"].value("completion_tokens", 0);
        }
      });
    }
  }

  json Capacity() {
    auto r = daemon_->Control("GET", "/control/v1/node");
    json j = json::parse(r.body, nullptr, false);
    return j.is_discarded() ? json::object() : j.value("capacity", json::object());
  }

  bool WaitRunning() {
    return WaitUntil([&] { return Capacity().value("running", 0) > 0; }, std::chrono::seconds(30));
  }

  void JoinRequests() {
    for (auto& t : requests_) t.join();
    requests_.clear();
  }

  int Readyz() {
    return CurlRequest(absl::StrCat("http://127.0.0.1:", daemon_->ApiTcpPort(), "/readyz"), "")
        .status;
  }

  std::string Socket() { return daemon_->socket_path().string(); }

  TempDir dir_;
  std::unique_ptr<DaemonProcess> daemon_;
  std::vector<std::thread> requests_;
  std::vector<int> statuses_, tokens_;
};

TEST_F(DrainTest, DrainWaitReturnsOnceRunningRequestsHaveFinished) {
  StartLongRequests(2, 800);
  ASSERT_TRUE(WaitRunning());
  auto drain = RunCommand({TokenmillCliPath(), "--socket", Socket(), "drain", "--wait", "60"},
                          std::chrono::seconds(90));
  EXPECT_EQ(drain.exit_code, 0) << drain.out << drain.err;
  EXPECT_EQ(drain.out, "draining\ndrained\n");
  // At its return nothing runs, waits or is prepared, and the node drains.
  const json capacity = Capacity();
  EXPECT_EQ(capacity.value("running", -1), 0) << capacity.dump();
  EXPECT_EQ(capacity.value("queue_depth", -1), 0);
  EXPECT_EQ(capacity.value("preparing", -1), 0);
  EXPECT_EQ(capacity.value("draining", false), true);
  EXPECT_EQ(Readyz(), 503);
  // The requests were let finish, not cut.
  JoinRequests();
  for (size_t i = 0; i < statuses_.size(); ++i) {
    EXPECT_EQ(statuses_[i], 200);
    EXPECT_EQ(tokens_[i], 800);
  }
}

TEST_F(DrainTest, DrainWaitGivesUpWhileRequestsStillRun) {
  StartLongRequests(2, 3000);
  ASSERT_TRUE(WaitRunning());
  auto drain = RunCommand({TokenmillCliPath(), "--socket", Socket(), "drain", "--wait", "0.05"});
  EXPECT_EQ(drain.exit_code, 1) << drain.out << drain.err;
  EXPECT_THAT(drain.err, HasSubstr("still busy"));
  EXPECT_EQ(Readyz(), 503) << "it drained all the same";
  // Teardown's stop cancels the requests after drain_timeout.
}

TEST_F(DrainTest, SlurmPrologDrainsBeforeTheJobAndEpilogResumesAfter) {
  const std::map<std::string, std::string> env = {{"TOKENMILL_CLI", TokenmillCliPath()},
                                                  {"TOKENMILL_SOCKET", Socket()},
                                                  {"TOKENMILL_DRAIN_WAIT", "60"},
                                                  {"SLURM_JOB_ID", "4242"}};
  EXPECT_EQ(Readyz(), 200);
  StartLongRequests(2, 800);
  ASSERT_TRUE(WaitRunning());
  auto prolog = RunCommand({"bash", (kSlurm / "tokenmill-prolog.sh").string()},
                           std::chrono::seconds(90), "", env);
  EXPECT_EQ(prolog.exit_code, 0) << prolog.out << prolog.err;
  EXPECT_THAT(prolog.err, HasSubstr("job=4242 tokenmill drained"));
  json capacity = Capacity();
  EXPECT_EQ(capacity.value("running", -1), 0) << capacity.dump();
  EXPECT_EQ(capacity.value("draining", false), true);
  EXPECT_EQ(Readyz(), 503);
  JoinRequests();
  for (int status : statuses_) EXPECT_EQ(status, 200);

  auto epilog = RunCommand({"bash", (kSlurm / "tokenmill-epilog.sh").string()},
                           std::chrono::seconds(30), "", env);
  EXPECT_EQ(epilog.exit_code, 0) << epilog.out << epilog.err;
  EXPECT_THAT(epilog.err, HasSubstr("job=4242 tokenmill resumed"));
  EXPECT_EQ(Capacity().value("draining", true), false);
  EXPECT_EQ(Readyz(), 200);
}

TEST_F(DrainTest, StrictPrologFailsWhenRequestsOutlastTheWait) {
  StartLongRequests(2, 3000);
  ASSERT_TRUE(WaitRunning());
  auto prolog =
      RunCommand({"bash", (kSlurm / "tokenmill-prolog.sh").string()}, std::chrono::seconds(30), "",
                 {{"TOKENMILL_CLI", TokenmillCliPath()},
                  {"TOKENMILL_SOCKET", Socket()},
                  {"TOKENMILL_DRAIN_WAIT", "0.05"},
                  {"TOKENMILL_DRAIN_STRICT", "1"}});
  EXPECT_EQ(prolog.exit_code, 1) << prolog.out << prolog.err;
  EXPECT_THAT(prolog.err, HasSubstr("failing the prolog"));
}

TEST_F(DrainTest, PrologWithoutADaemonHasNothingToDrain) {
  auto prolog =
      RunCommand({"bash", (kSlurm / "tokenmill-prolog.sh").string()}, std::chrono::seconds(30), "",
                 {{"TOKENMILL_CLI", TokenmillCliPath()},
                  {"TOKENMILL_SOCKET", (dir_.path() / "absent.sock").string()}});
  EXPECT_EQ(prolog.exit_code, 0) << prolog.out << prolog.err;
  EXPECT_THAT(prolog.err, HasSubstr("nothing to drain"));
  EXPECT_EQ(Readyz(), 200);
}

}  // namespace
}  // namespace tokenmill::testing
