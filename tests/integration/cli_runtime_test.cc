// The tokenmill CLI against a real daemon: models load/list/unload, tenants
// put/list, generate (streams), usage.
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/model/synth.h"
#include "runtime/tenants/tenant_registry.h"
#include "tests/integration/daemon_process.h"
#include "tests/support/temp_dir.h"
#include "tests/support/tiny_model.h"

namespace tokenmill::testing {
namespace {

TEST(CliRuntimeTest, ModelsTenantsGenerateAndUsage) {
  TempDir dir;
  const auto model_path = dir.path() / "tiny.gguf";
  ASSERT_TRUE(model::WriteSynthGguf(TinyModelShape(), model_path).ok());
  DaemonOptions options;
  options.extra_toml = absl::StrCat("[[model]]\nid = \"tiny\"\npath = \"", model_path.string(),
                                    "\"\n\n[[tenant]]\nname = \"ops\"\napi_keys_sha256 = [\"",
                                    tenants::ApiKeySha256("ops-key-123456"), "\"]\n");
  DaemonProcess daemon(dir.path(), options);
  ASSERT_TRUE(daemon.Start()) << daemon.Stderr();
  ASSERT_TRUE(daemon.WaitModelReady("tiny")) << daemon.Stderr();
  auto cli = [&](std::vector<std::string> args) {
    std::vector<std::string> argv = {TokenmillCliPath(), "--socket", daemon.socket_path().string()};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunCommand(argv);
  };

  // A second model loaded at run time, with progress, then listed.
  auto load = cli({"models", "load", "second", model_path.string()});
  ASSERT_EQ(load.exit_code, 0) << load.out << load.err;
  auto list = cli({"models", "list"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  EXPECT_NE(list.out.find("tiny"), std::string::npos) << list.out;
  EXPECT_NE(list.out.find("second"), std::string::npos) << list.out;
  EXPECT_NE(list.out.find("ready"), std::string::npos) << list.out;

  // An API tenant with a key; it shows in the list next to the config's.
  auto put = cli({"tenants", "put", "acme", "--key", "acme-key-123456", "--weight", "3"});
  ASSERT_EQ(put.exit_code, 0) << put.out << put.err;
  auto tenants = cli({"tenants", "list"});
  EXPECT_NE(tenants.out.find("acme"), std::string::npos) << tenants.out;
  EXPECT_NE(tenants.out.find("ops"), std::string::npos) << tenants.out;

  // Changing one setting of an existing tenant keeps the others: its key and
  // its prices (PATCH), unless --replace asks for a full replace.
  auto priced = cli({"tenants", "put", "acme", "--price-in", "2.5", "--price-out", "7"});
  ASSERT_EQ(priced.exit_code, 0) << priced.out << priced.err;
  auto reweighted = cli({"tenants", "put", "acme", "--weight", "5"});
  ASSERT_EQ(reweighted.exit_code, 0) << reweighted.out << reweighted.err;
  auto acme = nlohmann::json::parse(daemon.Control("GET", "/control/v1/tenants/acme").body);
  EXPECT_EQ(acme["weight"], 5.0) << acme.dump();
  EXPECT_EQ(acme["api_key_count"], 1) << acme.dump();
  EXPECT_EQ(acme["price_input_per_mtok"], 2.5) << acme.dump();
  EXPECT_EQ(acme["price_output_per_mtok"], 7.0) << acme.dump();
  // A new tenant is created by the same command.
  auto fresh = cli({"tenants", "put", "fresh", "--weight", "2"});
  ASSERT_EQ(fresh.exit_code, 0) << fresh.out << fresh.err;
  EXPECT_EQ(
      nlohmann::json::parse(daemon.Control("GET", "/control/v1/tenants/fresh").body)["weight"],
      2.0);
  auto replaced = cli({"tenants", "put", "fresh", "--replace", "--rate", "10"});
  ASSERT_EQ(replaced.exit_code, 0) << replaced.out << replaced.err;
  auto fresh_json = nlohmann::json::parse(daemon.Control("GET", "/control/v1/tenants/fresh").body);
  EXPECT_EQ(fresh_json["weight"], 1.0) << fresh_json.dump();
  EXPECT_EQ(fresh_json["rate_limit_tokens_per_s"], 10.0) << fresh_json.dump();

  // generate streams to stdout and sums up on stderr. A fixed seed: unseeded,
  // the random model once drew its end token as the sixth token (5 tokens,
  // finish: stop) and failed the count.
  auto gen = cli({"generate", "--model", "second", "--key", "acme-key-123456", "--max-tokens",
                  "6", "--seed", "11", "Hello"});
  ASSERT_EQ(gen.exit_code, 0) << gen.out << gen.err;
  EXPECT_FALSE(gen.out.empty());
  EXPECT_NE(gen.err.find("6 tokens"), std::string::npos) << gen.err;
  auto denied = cli({"generate", "--key", "wrong-key", "Hello"});
  EXPECT_EQ(denied.exit_code, 1);

  auto usage = cli({"usage", "--group", "total"});
  ASSERT_EQ(usage.exit_code, 0) << usage.err;
  EXPECT_NE(usage.out.find("acme"), std::string::npos) << usage.out;

  auto unload = cli({"models", "unload", "second", "--wait"});
  ASSERT_EQ(unload.exit_code, 0) << unload.out << unload.err;
  EXPECT_EQ(daemon.Control("GET", "/control/v1/models/second").status, 404);
  EXPECT_EQ(daemon.Stop(), 0) << daemon.Stderr();
}

}  // namespace
}  // namespace tokenmill::testing
