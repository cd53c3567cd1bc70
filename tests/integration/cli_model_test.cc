// `tokenmill model synth` and `tokenmill bench`, run as a user runs them.
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/model/model_loader.h"
#include "tests/integration/daemon_process.h"

namespace tokenmill::testing {
namespace {

using ::testing::HasSubstr;

TEST(CliModelTest, SynthWritesALoadableModelAndBenchReportsFigures) {
  TempDir dir;
  std::string path = (dir.path() / "tiny.gguf").string();
  auto synth = RunCommand({TokenmillCliPath(), "model", "synth", "--shape", "tiny", "--type",
                           "q8_0", "--layers", "3", "--out", path});
  ASSERT_EQ(synth.exit_code, 0) << synth.err;
  EXPECT_THAT(synth.out, HasSubstr("wrote " + path));

  auto loaded = model::LoadModel(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->spec.hp.n_layers, 3);
  EXPECT_EQ(loaded->spec.layers[0].wq.type, devices::TensorType::kQ8_0);

  auto bench = RunCommand({TokenmillCliPath(), "bench", path, "--threads", "1", "--prompt", "32",
                           "--gen", "4", "--batches", "1,2", "--repetitions", "2", "--json"},
                          std::chrono::seconds(120));
  ASSERT_EQ(bench.exit_code, 0) << bench.err;
  auto j = nlohmann::json::parse(bench.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << bench.out;
  EXPECT_GT(j["prompt_tokens_per_second"].get<double>(), 0.0);
  ASSERT_EQ(j["decode"].size(), 2u);
  EXPECT_EQ(j["decode"][1]["batch"], 2);
  EXPECT_GT(j["decode"][0]["tokens_per_second"].get<double>(), 0.0);
  EXPECT_LE(j["decode"][0]["tokens_per_second_min"].get<double>(),
            j["decode"][0]["tokens_per_second_max"].get<double>());
  // The bound is the median of both probes' repetitions (5 each), never the
  // best one alone.
  EXPECT_EQ(j["bandwidth_samples"].get<int>(), 10);
  EXPECT_LE(j["bandwidth_low_bytes_per_second"].get<double>(),
            j["bandwidth_bytes_per_second"].get<double>());
  EXPECT_LE(j["bandwidth_bytes_per_second"].get<double>(),
            j["bandwidth_high_bytes_per_second"].get<double>());
  EXPECT_GT(j["stream_copy_bytes_per_second"].get<double>(), 1e8);
  EXPECT_GT(j["stream_triad_bytes_per_second"].get<double>(), 1e8);
  EXPECT_GT(j["bandwidth_bytes_per_second"].get<double>(), 1e8);
  EXPECT_GT(j["batch1_fraction_of_bound"].get<double>(), 0.0);
  EXPECT_EQ(j["weight_bytes_per_token"].get<uint64_t>(), loaded->spec.WeightBytesPerToken());
}

TEST(CliModelTest, BadInputsAreRefusedWithReasons) {
  TempDir dir;
  auto no_file = RunCommand({TokenmillCliPath(), "bench", (dir.path() / "none.gguf").string()});
  EXPECT_EQ(no_file.exit_code, 1);
  EXPECT_THAT(no_file.err, HasSubstr("none.gguf"));

  std::string junk = dir.Write("junk.gguf", "GGUF\x03\x00\x00\x00 not really").string();
  auto corrupt = RunCommand({TokenmillCliPath(), "bench", junk});
  EXPECT_EQ(corrupt.exit_code, 1);
  EXPECT_THAT(corrupt.err, HasSubstr("junk.gguf"));

  auto bad_shape = RunCommand({TokenmillCliPath(), "model", "synth", "--heads", "5", "--out",
                               (dir.path() / "x.gguf").string()});
  EXPECT_EQ(bad_shape.exit_code, 1);
  EXPECT_FALSE(bad_shape.err.empty());
  auto bad_type = RunCommand({TokenmillCliPath(), "model", "synth", "--type", "q2_k", "--out",
                              (dir.path() / "x.gguf").string()});
  EXPECT_EQ(bad_type.exit_code, 2);
  // K-quant rows hold whole super-blocks: the tiny shape (dim 64) cannot.
  auto k_shape = RunCommand({TokenmillCliPath(), "model", "synth", "--type", "q4_k_m", "--out",
                             (dir.path() / "x.gguf").string()});
  EXPECT_EQ(k_shape.exit_code, 1);
  EXPECT_THAT(k_shape.err, HasSubstr("multiples of 256"));
}

}  // namespace
}  // namespace tokenmill::testing
