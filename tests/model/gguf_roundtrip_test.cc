// WriteSynthGguf -> LoadModel gives back exactly SynthesizeModel's model, with
// weights left in the file mapping.
#include <cmath>
#include <filesystem>
#include <string>

#include "gtest/gtest.h"
#include "runtime/model/gguf_file.h"
#include "runtime/model/mapped_file.h"
#include "runtime/model/model_loader.h"
#include "runtime/model/synth.h"
#include "tests/model/model_test_util.h"
#include "tests/support/temp_dir.h"

namespace tokenmill::model {
namespace {

using devices::Architecture;
using devices::TensorType;
using testing::ExpectSameModel;
using testing::Views;

SynthOptions Tiny(Architecture arch, TensorType type, bool tied) {
  SynthOptions o;
  o.arch = arch;
  o.dim = 64;
  o.n_layers = 2;
  o.n_heads = 4;
  o.n_kv_heads = 2;
  o.ffn_dim = 128;
  o.vocab_size = 300;
  o.weight_type = type;
  o.tied_embeddings = tied;
  o.seed = 7;
  if (arch == Architecture::kQwen3) o.head_dim = 32;  // heads x head_dim != dim
  return o;
}

struct RoundTripCase {
  Architecture arch;
  TensorType type;
  bool tied;
};

class GgufRoundTripTest : public ::testing::TestWithParam<RoundTripCase> {};

// Writes `options`' model as GGUF to `path` and loads it back; the loaded
// model must equal the synthesized one.
absl::StatusOr<LoadedModel> WriteAndLoadBack(const SynthOptions& options,
                                             const std::filesystem::path& path) {
  if (absl::Status s = WriteSynthGguf(options, path); !s.ok()) return s;
  absl::StatusOr<LoadedModel> loaded = LoadModel(path);
  if (!loaded.ok()) return loaded.status();
  absl::StatusOr<LoadedModel> synth = SynthesizeModel(options);
  if (!synth.ok()) return synth.status();
  ExpectSameModel(*loaded, *synth);
  return loaded;
}

TEST_P(GgufRoundTripTest, LoadGivesTheSynthesizedModel) {
  const RoundTripCase c = GetParam();
  const SynthOptions options = Tiny(c.arch, c.type, c.tied);
  tokenmill::testing::TempDir dir;
  const auto path = dir.path() / "model.gguf";
  absl::StatusOr<LoadedModel> loaded = WriteAndLoadBack(options, path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->format, "gguf");
  EXPECT_EQ(loaded->path, path);

  const devices::ModelSpec& spec = loaded->spec;
  EXPECT_EQ(spec.arch, c.arch);
  const bool qwen = c.arch != Architecture::kLlama;
  EXPECT_EQ(spec.hp.rope_style,
            qwen ? devices::RopeStyle::kHalves : devices::RopeStyle::kAdjacentPairs);
  EXPECT_EQ(spec.token_embedding.type, c.type);
  EXPECT_EQ(spec.layers[1].w_down.type, c.type);
  EXPECT_EQ(spec.layers[0].attn_norm.type, TensorType::kF32);
  const int64_t head_dim = c.arch == Architecture::kQwen3 ? 32 : 16;
  EXPECT_EQ(spec.hp.head_dim, head_dim);
  EXPECT_EQ(spec.layers[0].wq.shape, (std::vector<int64_t>{4 * head_dim, 64}));
  EXPECT_EQ(spec.layers[0].wk.shape, (std::vector<int64_t>{2 * head_dim, 64}));
  EXPECT_EQ(spec.layers[0].wo.shape, (std::vector<int64_t>{64, 4 * head_dim}));
  EXPECT_EQ(spec.layers[0].w_down.shape, (std::vector<int64_t>{64, 128}));
  EXPECT_EQ(spec.layers[0].bq.empty(), c.arch != Architecture::kQwen2);
  // Qwen3's per-head q/k norms: f32 {head_dim}, named as llama.cpp names them.
  EXPECT_EQ(spec.layers[1].q_norm.empty(), c.arch != Architecture::kQwen3);
  EXPECT_EQ(spec.layers[1].k_norm.empty(), c.arch != Architecture::kQwen3);
  if (c.arch == Architecture::kQwen3) {
    EXPECT_EQ(spec.layers[1].q_norm.name, "blk.1.attn_q_norm.weight");
    EXPECT_EQ(spec.layers[1].k_norm.name, "blk.1.attn_k_norm.weight");
    EXPECT_EQ(spec.layers[1].k_norm.shape, (std::vector<int64_t>{head_dim}));
    EXPECT_EQ(spec.layers[1].k_norm.type, TensorType::kF32);
  }
  EXPECT_EQ(spec.tied_embeddings, c.tied);
  if (c.tied) {
    EXPECT_EQ(spec.output.data, spec.token_embedding.data);
  } else {
    EXPECT_NE(spec.output.data, spec.token_embedding.data);
  }
  EXPECT_EQ(loaded->metadata.at("general.architecture"), devices::ArchitectureName(c.arch));
  EXPECT_EQ(loaded->metadata.at("general.name"), "tokenmill-synth");
  // Qwen3 uses Qwen2's tokenizer.
  EXPECT_EQ(loaded->tokenizer.pre,
            qwen ? tokenizer::PreTokenizer::kQwen2 : tokenizer::PreTokenizer::kLlama3);
  // Qwen2's tokenizer.json normalises to NFC; GGUF says so by the pre name.
  EXPECT_EQ(loaded->tokenizer.normalizer,
            qwen ? tokenizer::Normalizer::kNfc : tokenizer::Normalizer::kNone);

  // Every tensor (norms included: f32 in the file, 32-byte aligned) is a view
  // into the mapping, not a copy.
  const ModelBacking* backing = BackingOf(spec);
  ASSERT_NE(backing, nullptr);
  ASSERT_EQ(backing->files.size(), 1u);
  EXPECT_TRUE(backing->buffers.empty());
  for (const auto& [label, view] : Views(spec)) {
    if (view->empty()) continue;
    EXPECT_TRUE(backing->InMappedFile(view->data, view->bytes)) << label;
  }
  // The synthesized model owns its weights instead.
  absl::StatusOr<LoadedModel> synth = SynthesizeModel(options);
  ASSERT_TRUE(synth.ok()) << synth.status();
  EXPECT_FALSE(BackingOf(synth->spec)->InMappedFile(synth->spec.layers[0].wq.data, 1));
}

INSTANTIATE_TEST_SUITE_P(
    AllTypes, GgufRoundTripTest,
    ::testing::Values(RoundTripCase{Architecture::kLlama, TensorType::kF32, false},
                      RoundTripCase{Architecture::kLlama, TensorType::kF16, false},
                      RoundTripCase{Architecture::kLlama, TensorType::kBF16, false},
                      RoundTripCase{Architecture::kLlama, TensorType::kQ8_0, false},
                      RoundTripCase{Architecture::kLlama, TensorType::kQ4_0, false},
                      RoundTripCase{Architecture::kLlama, TensorType::kQ8_0, true},
                      RoundTripCase{Architecture::kQwen2, TensorType::kF32, false},
                      RoundTripCase{Architecture::kQwen2, TensorType::kF16, true},
                      RoundTripCase{Architecture::kQwen2, TensorType::kBF16, false},
                      RoundTripCase{Architecture::kQwen2, TensorType::kQ8_0, false},
                      RoundTripCase{Architecture::kQwen2, TensorType::kQ4_0, true},
                      RoundTripCase{Architecture::kQwen3, TensorType::kF32, false},
                      RoundTripCase{Architecture::kQwen3, TensorType::kF16, true},
                      RoundTripCase{Architecture::kQwen3, TensorType::kBF16, false},
                      RoundTripCase{Architecture::kQwen3, TensorType::kQ8_0, false},
                      RoundTripCase{Architecture::kQwen3, TensorType::kQ4_0, true}));

// Gemma 3's window travels as llama.cpp's converter writes it: the window
// only for the default pattern (6) and local base (10000); the pattern key
// when it differs. Post norms under llama.cpp's names.
TEST(GgufRoundTrip, Gemma3WindowAndPostNorms) {
  for (int32_t pattern : {6, 2}) {
    SynthOptions options = Tiny(Architecture::kGemma3, TensorType::kF16, true);
    options.head_dim = 32;
    options.sliding_window = 5;
    options.sliding_window_pattern = pattern;
    tokenmill::testing::TempDir dir;
    const auto path = dir.path() / "model.gguf";
    absl::StatusOr<LoadedModel> loaded = WriteAndLoadBack(options, path);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    const devices::ModelSpec& spec = loaded->spec;
    EXPECT_EQ(spec.arch, Architecture::kGemma3);
    EXPECT_EQ(spec.hp.sliding_window, 5);
    EXPECT_EQ(spec.hp.sliding_window_pattern, pattern);
    EXPECT_EQ(spec.hp.rope_theta_local, 10000.0f);
    EXPECT_EQ(spec.hp.query_pre_attn_scalar, 32.0f);
    EXPECT_EQ(spec.hp.rms_norm_eps, 1e-6f);
    EXPECT_EQ(loaded->metadata.count("gemma3.attention.sliding_window_pattern"),
              pattern == 6 ? 0u : 1u);
    EXPECT_EQ(spec.layers[1].attn_post_norm.name, "blk.1.post_attention_norm.weight");
    EXPECT_EQ(spec.layers[1].ffn_post_norm.name, "blk.1.post_ffw_norm.weight");
    EXPECT_EQ(spec.layers[1].q_norm.name, "blk.1.attn_q_norm.weight");
    EXPECT_TRUE(spec.tied_embeddings);
    EXPECT_TRUE(devices::IsLocalLayer(spec.hp, 0));
    EXPECT_EQ(devices::IsLocalLayer(spec.hp, 1), pattern != 2);
  }
}

// Mixtral (llama with experts, and a Mistral window over every layer) and
// Qwen3-MoE: llama.cpp's keys and stacked expert tensors, the router in f32.
TEST(GgufRoundTrip, ExpertsTravelAsStackedTensors) {
  for (Architecture arch : {Architecture::kLlama, Architecture::kQwen3Moe}) {
    for (TensorType type : {TensorType::kF16, TensorType::kQ8_0}) {
      SynthOptions options = Tiny(arch, type, false);
      options.n_experts = 8;
      options.n_experts_used = 2;
      if (arch == Architecture::kQwen3Moe) options.head_dim = 32;
      if (arch == Architecture::kLlama) options.sliding_window = 7;
      tokenmill::testing::TempDir dir;
      const auto path = dir.path() / "model.gguf";
      absl::StatusOr<LoadedModel> loaded = WriteAndLoadBack(options, path);
      ASSERT_TRUE(loaded.ok()) << loaded.status();
      const devices::ModelSpec& spec = loaded->spec;
      EXPECT_EQ(spec.arch, arch);
      EXPECT_EQ(spec.hp.n_experts, 8);
      EXPECT_EQ(spec.hp.n_experts_used, 2);
      EXPECT_TRUE(spec.hp.expert_weights_norm);
      EXPECT_EQ(spec.hp.ffn_dim, 128);
      const std::string prefix = arch == Architecture::kLlama ? "llama." : "qwen3moe.";
      EXPECT_EQ(loaded->metadata.at(prefix + "expert_count"), "8");
      EXPECT_EQ(loaded->metadata.count("qwen3moe.expert_feed_forward_length"),
                arch == Architecture::kQwen3Moe ? 1u : 0u);
      const devices::LayerWeights& l = spec.layers[1];
      EXPECT_TRUE(l.w_gate.empty() && l.w_up.empty() && l.w_down.empty());
      EXPECT_EQ(l.router.name, "blk.1.ffn_gate_inp.weight");
      EXPECT_EQ(l.router.type, TensorType::kF32);
      EXPECT_EQ(l.router.shape, (std::vector<int64_t>{8, 64}));
      EXPECT_EQ(l.gate_exps.shape, (std::vector<int64_t>{8, 128, 64}));
      EXPECT_EQ(l.down_exps.name, "blk.1.ffn_down_exps.weight");
      EXPECT_EQ(l.down_exps.shape, (std::vector<int64_t>{8, 64, 128}));
      EXPECT_EQ(l.up_exps.type, type);
      EXPECT_EQ(l.q_norm.empty(), arch == Architecture::kLlama);
      EXPECT_EQ(spec.hp.sliding_window, arch == Architecture::kLlama ? 7 : 0);
      if (arch == Architecture::kLlama) {
        EXPECT_TRUE(devices::IsLocalLayer(spec.hp, 0));
        EXPECT_TRUE(devices::IsLocalLayer(spec.hp, 1));
      }
      // Expert 3's slice is rows [3 * 128, 4 * 128) of the stack.
      const devices::TensorView e3 = devices::ExpertSlice(l.gate_exps, 3);
      EXPECT_EQ(e3.shape, (std::vector<int64_t>{128, 64}));
      EXPECT_EQ(e3.data, l.gate_exps.row(3 * 128));
      EXPECT_EQ(spec.Problem(), "");
    }
  }
}

TEST(GgufRoundTrip, ExpertCountsAreChecked) {
  SynthOptions options = Tiny(Architecture::kQwen3Moe, TensorType::kF16, false);
  options.n_experts = 4;
  options.n_experts_used = 5;
  EXPECT_FALSE(ValidateSynthOptions(options).ok());
  options.n_experts = 0;
  options.n_experts_used = 0;
  EXPECT_FALSE(ValidateSynthOptions(options).ok());  // qwen3moe needs experts
  options.arch = Architecture::kQwen3;
  options.n_experts = 4;
  options.n_experts_used = 2;
  EXPECT_FALSE(ValidateSynthOptions(options).ok());  // qwen3 has none
  auto model = SynthesizeModel(Tiny(Architecture::kLlama, TensorType::kF16, false));
  ASSERT_TRUE(model.ok());
  devices::ModelSpec spec = model->spec;
  spec.hp.n_experts_used = 1;
  EXPECT_NE(spec.Problem().find("experts"), std::string::npos) << spec.Problem();
}

TEST(GgufRoundTrip, Llama3RopeFactorsTravelAsRopeFreqs) {
  SynthOptions options = Tiny(Architecture::kLlama, TensorType::kF16, false);
  options.llama3_rope_scaling = true;
  options.rope_theta = 500000.0f;
  tokenmill::testing::TempDir dir;
  const auto path = dir.path() / "m.gguf";
  absl::StatusOr<LoadedModel> loaded = WriteAndLoadBack(options, path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const devices::TensorView& f = loaded->spec.rope_freq_factors;
  ASSERT_FALSE(f.empty());
  EXPECT_EQ(f.name, "rope_freqs.weight");
  EXPECT_EQ(f.shape, (std::vector<int64_t>{8}));  // head_dim 16 / 2
  const auto* factors = static_cast<const float*>(f.data);
  EXPECT_EQ(factors[0], 1.0f);  // high frequencies keep their speed
  EXPECT_EQ(factors[7], 8.0f);  // the lowest is slowed by the full factor
  for (int i = 1; i < 8; ++i) EXPECT_GE(factors[i], factors[i - 1]);
  // In GGUF the scaling lives in the factors, not in hp.rope_scaling.
  EXPECT_FALSE(loaded->spec.hp.rope_scaling.enabled());
}

// Gemma 3 4B+: llama.cpp's converter writes rope.scaling.type "linear" and
// the factor; the loader reads them into rope_linear_factor.
TEST(GgufRoundTrip, LinearRopeScalingTravelsAsLlamaCppWritesIt) {
  SynthOptions options = Tiny(Architecture::kGemma3, TensorType::kF16, true);
  options.head_dim = 32;
  options.sliding_window = 5;
  options.rope_linear_factor = 8.0f;
  tokenmill::testing::TempDir dir;
  const auto path = dir.path() / "m.gguf";
  absl::StatusOr<LoadedModel> loaded = WriteAndLoadBack(options, path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->spec.hp.rope_linear_factor, 8.0f);
  EXPECT_EQ(loaded->metadata.at("gemma3.rope.scaling.type"), "linear");
  EXPECT_EQ(loaded->spec.Problem(), "");
  devices::ModelSpec spec = loaded->spec;
  spec.hp.rope_linear_factor = 0.5f;
  EXPECT_NE(spec.Problem().find("rope_linear_factor"), std::string::npos) << spec.Problem();
}

TEST(GgufRoundTrip, HeaderIsVersion3WithAlignment32) {
  tokenmill::testing::TempDir dir;
  const auto path = dir.path() / "m.gguf";
  ASSERT_TRUE(WriteSynthGguf(Tiny(Architecture::kLlama, TensorType::kQ4_0, false), path).ok());
  auto file = GgufFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->version(), 3u);
  EXPECT_EQ((*file)->alignment(), 32u);
  EXPECT_EQ((*file)->data_offset() % 32, 0u);
  // token_embd, output_norm, output, then 9 tensors per layer.
  ASSERT_EQ((*file)->tensors().size(), 3u + 2 * 9);
  EXPECT_EQ((*file)->tensors()[0].name, "token_embd.weight");
  EXPECT_EQ((*file)->tensors()[1].name, "output_norm.weight");
  EXPECT_EQ((*file)->tensors()[2].name, "output.weight");
  EXPECT_EQ((*file)->tensors()[3].name, "blk.0.attn_norm.weight");
  EXPECT_EQ((*file)->tensors()[0].ne, (std::vector<uint64_t>{64, 300}));
  const GgufValue* vocab = (*file)->Find("llama.vocab_size");
  ASSERT_NE(vocab, nullptr);
  EXPECT_EQ(vocab->AsInt(), 300);
  const GgufValue* types = (*file)->Find("tokenizer.ggml.token_type");
  ASSERT_NE(types, nullptr);
  EXPECT_EQ(types->item_type, GgufType::kI32);
}

TEST(Synth, SameSeedSameBytesOtherSeedOtherBytes) {
  SynthOptions options = Tiny(Architecture::kLlama, TensorType::kF32, false);
  auto a = SynthesizeModel(options);
  auto b = SynthesizeModel(options);
  ASSERT_TRUE(a.ok() && b.ok());
  ExpectSameModel(*a, *b);
  options.seed = 8;
  auto c = SynthesizeModel(options);
  ASSERT_TRUE(c.ok());
  EXPECT_NE(
      std::memcmp(a->spec.layers[0].wq.data, c->spec.layers[0].wq.data, a->spec.layers[0].wq.bytes),
      0);
}

// Pins the generator: the same bytes on every machine and every build.
TEST(Synth, GeneratorIsPinned) {
  auto model = SynthesizeModel(Tiny(Architecture::kLlama, TensorType::kF32, false));
  ASSERT_TRUE(model.ok());
  const devices::TensorView& wq = model->spec.layers[1].wq;
  uint64_t h = 0xcbf29ce484222325ull;
  const auto* p = static_cast<const uint8_t*>(wq.data);
  for (size_t k = 0; k < wq.bytes; ++k) h = (h ^ p[k]) * 0x100000001b3ull;
  EXPECT_EQ(h, 6268401571750661860ull) << "update only when the generator is meant to change";
}

TEST(Synth, WeightsHaveTheIntendedScale) {
  auto model = SynthesizeModel(Tiny(Architecture::kQwen2, TensorType::kF32, false));
  ASSERT_TRUE(model.ok());
  const devices::ModelSpec& spec = model->spec;
  auto range = [](const devices::TensorView& v, float* lo, float* hi, double* mean) {
    const auto* x = static_cast<const float*>(v.data);
    *lo = x[0];
    *hi = x[0];
    double sum = 0;
    for (int64_t i = 0; i < v.elements(); ++i) {
      *lo = std::min(*lo, x[i]);
      *hi = std::max(*hi, x[i]);
      sum += x[i];
    }
    *mean = sum / static_cast<double>(v.elements());
  };
  float lo, hi;
  double mean;
  const float a = std::sqrt(3.0f / 64.0f);
  range(spec.layers[0].wq, &lo, &hi, &mean);
  EXPECT_GE(lo, -a);
  EXPECT_LE(hi, a);
  EXPECT_LT(lo, -0.9f * a);
  EXPECT_GT(hi, 0.9f * a);
  EXPECT_NEAR(mean, 0.0, 0.02);
  range(spec.layers[0].w_down, &lo, &hi, &mean);  // in = ffn 128
  EXPECT_LE(hi, std::sqrt(3.0f / 128.0f));
  range(spec.token_embedding, &lo, &hi, &mean);
  EXPECT_GE(lo, -1.0f);
  EXPECT_LE(hi, 1.0f);
  EXPECT_LT(lo, -0.95f);
  range(spec.layers[1].ffn_norm, &lo, &hi, &mean);
  EXPECT_GE(lo, 0.95f);
  EXPECT_LE(hi, 1.05f);
  EXPECT_NE(lo, hi);
  range(spec.layers[1].bk, &lo, &hi, &mean);
  EXPECT_GE(lo, -0.1f);
  EXPECT_LE(hi, 0.1f);
}

TEST(Synth, RejectsBadShapes) {
  SynthOptions o = Tiny(Architecture::kLlama, TensorType::kF16, false);
  o.dim = 48;  // not a multiple of 32
  EXPECT_EQ(ValidateSynthOptions(o).code(), absl::StatusCode::kInvalidArgument);
  o = Tiny(Architecture::kLlama, TensorType::kF16, false);
  o.n_kv_heads = 3;
  EXPECT_EQ(SynthesizeModel(o).status().code(), absl::StatusCode::kInvalidArgument);
  o = Tiny(Architecture::kLlama, TensorType::kF16, false);
  o.vocab_size = 200;
  EXPECT_EQ(ValidateSynthOptions(o).code(), absl::StatusCode::kInvalidArgument);
  tokenmill::testing::TempDir dir;
  EXPECT_FALSE(WriteSynthGguf(o, dir.path() / "x.gguf").ok());
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "x.gguf"));
}

TEST(LoadModel, NamesMissingAndForeignFiles) {
  tokenmill::testing::TempDir dir;
  auto missing = LoadModel(dir.path() / "nope.gguf");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("nope.gguf"), absl::string_view::npos);
  const auto text = dir.Write("notes.txt", "hello, this is not a model");
  auto foreign = LoadModel(text);
  EXPECT_EQ(foreign.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(foreign.status().message().find("notes.txt"), absl::string_view::npos);
}

}  // namespace
}  // namespace tokenmill::model
