// The runtime commands' pure parts: request bodies from flags, tables from
// the daemon's JSON, the default model, and the load progress display.
#include "daemon/cli/runtime_json.h"

#include <string>

#include "daemon/cli/progress.h"
#include "daemon/cli/table.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tokenmill::cli {
namespace {

using nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

json Model(const std::string& id, const std::string& state, double progress) {
  return json{{"id", id},
              {"path", "/m/" + id + ".gguf"},
              {"device", "cpu0"},
              {"state", state},
              {"load_progress", progress},
              {"architecture", "llama"},
              {"weight_bytes", 3 * 1024 * 1024},
              {"context", 2048},
              {"max_seqs", 16},
              {"stats",
               {{"running", 2},
                {"waiting", 1},
                {"kv_blocks_used", 12},
                {"kv_blocks_cached", 30},
                {"generated_tokens", 4096}}}};
}

TEST(RuntimeJsonTest, ModelRows) {
  TableRows rows =
      ModelRows(json::array({Model("m1", "ready", 1.0), Model("m2", "loading", 0.456)}));
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_THAT(rows[0], ElementsAre("ID", "DEVICE", "STATE", "PROGRESS", "RUNNING", "WAITING",
                                   "KV USED/CACHED", "GENERATED"));
  EXPECT_THAT(rows[1], ElementsAre("m1", "cpu0", "ready", "100%", "2", "1", "12/30", "4096"));
  EXPECT_EQ(rows[2][2], "loading");
  EXPECT_EQ(rows[2][3], "45%");
  // Missing fields show as "-" rather than failing.
  TableRows sparse = ModelRows(json::array({json{{"id", "m3"}}}));
  EXPECT_THAT(sparse[1], ElementsAre("m3", "-", "-", "0%", "-", "-", "-/-", "-"));
  EXPECT_EQ(ModelRows(json("nonsense")).size(), 1u);
  EXPECT_EQ(ModelReadyLine(Model("m1", "ready", 1)),
            "m1 ready on cpu0: llama, 3.0 MiB weights, context 2048, max 16 sequences");
}

TEST(RuntimeJsonTest, TenantRowsAndDetails) {
  json tenant = {{"name", "acme"},
                 {"source", "api"},
                 {"weight", 2.5},
                 {"rate_limit_tokens_per_s", 0},
                 {"max_concurrent", 4},
                 {"in_flight", 1},
                 {"max_queue", 256},
                 {"kv_reserved_blocks", 64},
                 {"kv_max_fraction", 0.5},
                 {"cache_group", ""},
                 {"models", {"m1", "m2"}},
                 {"api_key_count", 2},
                 {"price_input_per_mtok", 0.1},
                 {"price_output_per_mtok", 0.4}};
  TableRows rows = TenantRows(json::array({tenant}));
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_THAT(rows[1], ElementsAre("acme", "api", "2.5", "unlimited", "1/4", "256", "64", "0.5",
                                   "-", "m1,m2", "2", "$0.10/$0.40"));
  TableRows details = TenantDetailRows(tenant);
  std::string text = RenderTable(details);
  EXPECT_THAT(text, HasSubstr("rate limit          unlimited tokens/s\n"));
  EXPECT_THAT(text, HasSubstr("cache group         (private)\n"));
  EXPECT_THAT(text, HasSubstr("models              m1,m2\n"));
  tenant["models"] = json::array();
  tenant["cache_group"] = "shared";
  EXPECT_EQ(TenantRows(json::array({tenant}))[1][9], "*");
  EXPECT_THAT(RenderTable(TenantDetailRows(tenant)), HasSubstr("cache group         shared\n"));
}

TEST(RuntimeJsonTest, RequestBodiesCarryOnlyGivenFlags) {
  EXPECT_EQ(ModelLoadBody({.id = "m1", .path = "/m.gguf"}),
            json({{"id", "m1"}, {"path", "/m.gguf"}}));
  EXPECT_EQ(ModelLoadBody({.id = "m1",
                           .path = "/m.gguf",
                           .device = "cpu0",
                           .max_seqs = 8,
                           .max_batch_tokens = 512,
                           .context = 1024}),
            json({{"id", "m1"},
                  {"path", "/m.gguf"},
                  {"device", "cpu0"},
                  {"max_seqs", 8},
                  {"max_batch_tokens", 512},
                  {"context", 1024}}));

  EXPECT_EQ(TenantPutBody({}), json::object());
  TenantFlags flags;
  flags.api_keys = {"k1", "k2"};
  flags.weight = 2;
  flags.rate_limit_tokens_per_s = 1000;
  flags.schema_compile_s_per_min = 0.5;
  flags.max_concurrent = 0;  // given as 0 = unlimited: still sent
  flags.cache_group = "g";
  flags.models = {"m1"};
  flags.price_output_per_mtok = 0.6;
  EXPECT_EQ(TenantPutBody(flags), json({{"api_keys", {"k1", "k2"}},
                                        {"weight", 2.0},
                                        {"rate_limit_tokens_per_s", 1000.0},
                                        {"schema_compile_s_per_min", 0.5},
                                        {"max_concurrent", 0},
                                        {"cache_group", "g"},
                                        {"models", {"m1"}},
                                        {"price_output_per_mtok", 0.6}}));

  json completion = GenerateBody({.model = "m1", .prompt = "Hi", .max_tokens = 8, .stop = {"\n"}});
  EXPECT_EQ(completion, json({{"model", "m1"},
                              {"prompt", "Hi"},
                              {"stream", true},
                              {"max_tokens", 8},
                              {"stop", {"\n"}},
                              {"stream_options", {{"include_usage", true}}}}));
  json chat =
      GenerateBody({.model = "m1", .prompt = "Hi", .chat = true, .temperature = 0.5, .seed = 7});
  EXPECT_EQ(chat["messages"], json::parse(R"([{"role":"user","content":"Hi"}])"));
  EXPECT_FALSE(chat.contains("prompt"));
  EXPECT_EQ(chat["temperature"], 0.5);
  EXPECT_EQ(chat["seed"], 7);
}

TEST(RuntimeJsonTest, DefaultModelIsTheFirstReadyOne) {
  json list = {{"models", json::array({Model("a", "loading", 0.5), Model("b", "ready", 1),
                                       Model("c", "ready", 1)})}};
  EXPECT_EQ(DefaultModel(list), "b");
  EXPECT_EQ(DefaultModel(json{{"models", json::array({Model("a", "failed", 0)})}}), std::nullopt);
  EXPECT_EQ(DefaultModel(json::object()), std::nullopt);
}

TEST(RuntimeJsonTest, PathSegmentEscapes) {
  EXPECT_EQ(PathSegment("llama-3.1_8b~q8"), "llama-3.1_8b~q8");
  EXPECT_EQ(PathSegment("a/b c?"), "a%2Fb%20c%3F");
}

TEST(LoadProgressTest, BarText) {
  EXPECT_EQ(ProgressBarText(0.5, 10), "[#####-----]  50%");
  EXPECT_EQ(ProgressBarText(1.0, 4), "[####] 100%");
  EXPECT_EQ(ProgressBarText(-1, 4), "[----]   0%");
  EXPECT_EQ(ProgressBarText(7, 4), "[####] 100%");
}

TEST(LoadProgressTest, TerminalRedrawsInPlace) {
  LoadProgress progress("m1", /*terminal=*/true);
  std::string first = progress.Update(0.0);
  EXPECT_EQ(first, "\rloading m1 " + ProgressBarText(0.0));
  EXPECT_EQ(progress.Update(0.0), "");  // nothing changed, nothing drawn
  EXPECT_EQ(progress.Update(0.5), "\rloading m1 " + ProgressBarText(0.5));
  EXPECT_EQ(progress.Finish(true), "\rloading m1 " + ProgressBarText(1.0) + "\n");
}

TEST(LoadProgressTest, PipeGetsOneLinePerTenPercent) {
  LoadProgress progress("m1", /*terminal=*/false);
  std::string out;
  for (double f : {0.0, 0.03, 0.09, 0.1, 0.15, 0.35, 0.36, 0.999}) out += progress.Update(f);
  EXPECT_EQ(out, "loading m1: 0%\nloading m1: 10%\nloading m1: 30%\nloading m1: 90%\n");
  EXPECT_EQ(progress.Finish(true), "loading m1: 100%\n");

  LoadProgress failed("m2", false);
  EXPECT_EQ(failed.Update(0.2), "loading m2: 20%\n");
  EXPECT_EQ(failed.Finish(false), "");
}

}  // namespace
}  // namespace tokenmill::cli
