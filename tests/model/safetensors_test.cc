// Hugging Face checkpoint directories: config.json + safetensors (F32, F16,
// BF16) + tokenizer.json, made here with the tiny shape, loaded and checked.
#include <cstring>
#include <map>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/model/mapped_file.h"
#include "runtime/model/model_layout.h"
#include "runtime/model/model_loader.h"
#include "runtime/model/safetensors_file.h"
#include "runtime/model/synth.h"
#include "runtime/model/synth_vocab.h"
#include "tests/model/model_test_util.h"
#include "tests/support/temp_dir.h"

namespace tokenmill::model {
namespace {

using devices::Architecture;
using devices::TensorType;
using nlohmann::json;

struct StTensor {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};

// Header padded with spaces to 8 bytes, as safetensors writers do.
std::string EncodeSafetensors(const std::vector<StTensor>& tensors) {
  json header = json::object();
  header["__metadata__"] = {{"format", "pt"}};
  std::string data;
  for (const StTensor& t : tensors) {
    header[t.name] = {{"dtype", t.dtype},
                      {"shape", t.shape},
                      {"data_offsets", {data.size(), data.size() + t.bytes.size()}}};
    data += t.bytes;
  }
  std::string text = header.dump();
  text.resize((text.size() + 7) / 8 * 8, ' ');
  std::string out(8, '\0');
  const uint64_t n = text.size();
  std::memcpy(out.data(), &n, 8);
  return out + text + data;
}

// Value k of a tensor; exact in bf16 and f16.
float Value(TensorRole role, int64_t k) {
  if (role == TensorRole::kNorm) return 1.0f + static_cast<float>(k % 16) / 128.0f;
  if (role == TensorRole::kBias) return static_cast<float>(k % 32 - 16) / 1024.0f;
  return static_cast<float>(k % 64 - 32) / 256.0f;
}

// Values `first` .. first + n - 1 of the role's sequence.
std::string Encode(const std::string& dtype, TensorRole role, int64_t n, int64_t first = 0) {
  std::string out;
  for (int64_t k = first; k < first + n; ++k) {
    const float v = Value(role, k);
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    if (dtype == "F32") {
      out.append(reinterpret_cast<const char*>(&v), 4);
    } else if (dtype == "BF16") {
      const auto h = static_cast<uint16_t>(bits >> 16);  // exact for these values
      out.append(reinterpret_cast<const char*>(&h), 2);
    } else {  // F16 of values exact in 10 mantissa bits, normal range
      const uint32_t sign = (bits >> 16) & 0x8000;
      const int32_t exp = static_cast<int32_t>((bits >> 23) & 0xff) - 127 + 15;
      const uint32_t mant = (bits >> 13) & 0x3ff;
      const auto h = static_cast<uint16_t>(v == 0.0f ? 0 : sign | (exp << 10) | mant);
      out.append(reinterpret_cast<const char*>(&h), 2);
    }
  }
  return out;
}

struct Checkpoint {
  Architecture arch = Architecture::kLlama;
  bool tied = false;
  bool lm_head_present = true;
  std::string matrix_dtype = "BF16";
  json rope_scaling = nullptr;
  int shards = 1;
  int experts = 0;                // llama: Mixtral's (MixtralForCausalLM); qwen3moe: its own
  bool mistral = false;           // MistralForCausalLM with
  json sliding_window = nullptr;  // this window (also Mixtral's)
};

const char* ArchitectureClass(Architecture arch) {
  switch (arch) {
    case Architecture::kLlama:
      return "LlamaForCausalLM";
    case Architecture::kQwen2:
      return "Qwen2ForCausalLM";
    case Architecture::kQwen3:
      return "Qwen3ForCausalLM";
    case Architecture::kGemma3:
      return "Gemma3ForCausalLM";  // not loaded from safetensors yet
    case Architecture::kQwen3Moe:
      return "Qwen3MoeForCausalLM";
  }
  return "";
}

class SafetensorsTest : public ::testing::Test {
 protected:
  // Qwen3 checkpoints set head_dim (heads x head_dim != hidden size).
  devices::ModelHyperparams Shape(Architecture arch = Architecture::kLlama) const {
    devices::ModelHyperparams hp;
    hp.dim = 64;
    hp.n_layers = 2;
    hp.n_heads = 4;
    hp.n_kv_heads = 2;
    hp.head_dim = arch == Architecture::kQwen3 || arch == Architecture::kQwen3Moe ? 32 : 16;
    hp.ffn_dim = 128;
    hp.vocab_size = 300;
    hp.context_length = 4096;
    return hp;
  }

  std::vector<StTensor> Tensors(const Checkpoint& c) const {
    devices::ModelSpec spec;
    spec.hp = Shape(c.arch);
    spec.hp.n_experts = c.experts;
    LayoutOptions layout;
    layout.output = c.lm_head_present;
    layout.qkv_bias = c.arch == Architecture::kQwen2;
    layout.qk_norm = c.arch == Architecture::kQwen3 || c.arch == Architecture::kQwen3Moe;
    if (c.experts > 0) {
      layout.experts = c.arch == Architecture::kQwen3Moe ? LayoutOptions::Experts::kQwen3Moe
                                                         : LayoutOptions::Experts::kMixtral;
    }
    std::vector<StTensor> tensors;
    for (const TensorSlot& slot : ModelTensorSlots(layout, &spec)) {
      if (slot.role == TensorRole::kExperts) {
        // One tensor per expert; expert e's values start at 7 * e.
        for (int64_t e = 0; e < slot.shape[0]; ++e) {
          StTensor t;
          const size_t star = slot.hf_name.find('*');
          t.name = slot.hf_name.substr(0, star) + std::to_string(e) + slot.hf_name.substr(star + 1);
          t.shape = {slot.shape[1], slot.shape[2]};
          t.dtype = c.matrix_dtype;
          t.bytes = Encode(t.dtype, TensorRole::kMatrix, slot.shape[1] * slot.shape[2], 7 * e);
          tensors.push_back(std::move(t));
        }
        continue;
      }
      StTensor t;
      t.name = slot.hf_name;
      t.shape = slot.shape;
      t.dtype = slot.role == TensorRole::kNorm   ? "BF16"
                : slot.role == TensorRole::kBias ? "F16"
                                                 : c.matrix_dtype;
      int64_t n = 1;
      for (int64_t d : slot.shape) n *= d;
      t.bytes = Encode(t.dtype, slot.role, n);
      tensors.push_back(std::move(t));
    }
    return tensors;
  }

  std::filesystem::path Write(const Checkpoint& c, const std::string& name = "ckpt") {
    const std::filesystem::path dir = tmp_.path() / name;
    std::filesystem::create_directories(dir);
    const devices::ModelHyperparams hp = Shape(c.arch);
    json config = {{"architectures", {ArchitectureClass(c.arch)}},
                   {"hidden_size", hp.dim},
                   {"num_hidden_layers", hp.n_layers},
                   {"num_attention_heads", hp.n_heads},
                   {"num_key_value_heads", hp.n_kv_heads},
                   {"intermediate_size", hp.ffn_dim},
                   {"vocab_size", hp.vocab_size},
                   {"max_position_embeddings", hp.context_length},
                   {"rms_norm_eps", 1e-5},
                   {"rope_theta", 500000.0},
                   {"tie_word_embeddings", c.tied},
                   {"torch_dtype", "bfloat16"},
                   {"rope_scaling", c.rope_scaling}};
    if (c.arch == Architecture::kQwen3 || c.arch == Architecture::kQwen3Moe) {
      config["head_dim"] = hp.head_dim;
    }
    if (c.arch == Architecture::kQwen3Moe) {
      config["architectures"] = {"Qwen3MoeForCausalLM"};
      config["num_experts"] = c.experts;
      config["num_experts_per_tok"] = 2;
      config["moe_intermediate_size"] = hp.ffn_dim;
      config["intermediate_size"] = 4 * hp.ffn_dim;  // the dense size, unused
      config["norm_topk_prob"] = true;
    } else if (c.experts > 0) {
      config["architectures"] = {"MixtralForCausalLM"};
      config["num_local_experts"] = c.experts;
      config["num_experts_per_tok"] = 2;
      config["sliding_window"] = c.sliding_window;
    } else if (c.mistral) {
      config["architectures"] = {"MistralForCausalLM"};
      config["sliding_window"] = c.sliding_window;
    }
    WriteText(dir / "config.json", config.dump(2));
    std::vector<StTensor> tensors = Tensors(c);
    if (c.shards == 1) {
      testing::WriteBytes(dir / "model.safetensors", EncodeSafetensors(tensors));
    } else {
      json index = {{"metadata", json::object()}, {"weight_map", json::object()}};
      std::vector<std::vector<StTensor>> parts(static_cast<size_t>(c.shards));
      for (size_t k = 0; k < tensors.size(); ++k) {
        const size_t shard = k * parts.size() / tensors.size();
        index["weight_map"][tensors[k].name] = "model-0000" + std::to_string(shard + 1) +
                                               "-of-0000" + std::to_string(c.shards) +
                                               ".safetensors";
        parts[shard].push_back(tensors[k]);
      }
      for (size_t s = 0; s < parts.size(); ++s) {
        testing::WriteBytes(dir / ("model-0000" + std::to_string(s + 1) + "-of-0000" +
                                   std::to_string(c.shards) + ".safetensors"),
                            EncodeSafetensors(parts[s]));
      }
      WriteText(dir / "model.safetensors.index.json", index.dump());
    }
    WriteTokenizer(dir);
    return dir;
  }

  // A byte-level BPE tokenizer.json (the synthetic vocabulary) and its config.
  static void WriteTokenizer(const std::filesystem::path& dir) {
    auto vocab = BuildSynthVocabulary(300, tokenizer::PreTokenizer::kLlama3);
    ASSERT_TRUE(vocab.ok());
    json model = {{"type", "BPE"}, {"vocab", json::object()}, {"merges", vocab->merges}};
    json added = json::array();
    for (size_t id = 0; id < vocab->tokens.size(); ++id) {
      if (vocab->token_types[id] == tokenizer::TokenType::kControl) {
        added.push_back({{"id", id}, {"content", vocab->tokens[id]}, {"special", true}});
      } else {
        model["vocab"][vocab->tokens[id]] = id;
      }
    }
    json tok = {{"version", "1.0"},
                {"model", model},
                {"added_tokens", added},
                {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}}},
                {"decoder", {{"type", "ByteLevel"}}}};
    WriteText(dir / "tokenizer.json", tok.dump());
    json config = {{"bos_token", "<|begin_of_text|>"},
                   {"eos_token", "<|end_of_text|>"},
                   {"chat_template", vocab->chat_template}};
    WriteText(dir / "tokenizer_config.json", config.dump());
  }

  static void WriteText(const std::filesystem::path& path, const std::string& text) {
    testing::WriteBytes(path, text);
  }

  // Loads dir and expects refusal with `code`, the message holding `part`.
  void ExpectRefused(const std::filesystem::path& dir, absl::StatusCode code,
                     const std::string& part) {
    auto model = LoadModel(dir);
    ASSERT_FALSE(model.ok());
    EXPECT_EQ(model.status().code(), code) << model.status();
    EXPECT_NE(std::string(model.status().message()).find(part), std::string::npos)
        << model.status();
  }

  tokenmill::testing::TempDir tmp_;
};

TEST_F(SafetensorsTest, LlamaUntied) {
  const auto dir = Write(Checkpoint{});
  auto model = LoadModel(dir);
  ASSERT_TRUE(model.ok()) << model.status();
  const devices::ModelSpec& spec = model->spec;
  EXPECT_EQ(model->format, "safetensors");
  EXPECT_EQ(spec.arch, Architecture::kLlama);
  EXPECT_EQ(spec.hp.dim, 64);
  EXPECT_EQ(spec.hp.n_kv_heads, 2);
  EXPECT_EQ(spec.hp.head_dim, 16);
  EXPECT_EQ(spec.hp.vocab_size, 300);
  EXPECT_EQ(spec.hp.context_length, 4096);
  EXPECT_FLOAT_EQ(spec.hp.rms_norm_eps, 1e-5f);
  EXPECT_EQ(spec.hp.rope_theta, 500000.0f);
  EXPECT_EQ(spec.hp.rope_style, devices::RopeStyle::kHalves);
  EXPECT_FALSE(spec.hp.rope_scaling.enabled());
  EXPECT_FALSE(spec.tied_embeddings);
  EXPECT_TRUE(spec.layers[0].bq.empty());
  EXPECT_EQ(spec.layers[1].wq.type, TensorType::kBF16);
  EXPECT_EQ(spec.layers[1].wq.name, "model.layers.1.self_attn.q_proj.weight");
  EXPECT_EQ(spec.layers[1].w_down.shape, (std::vector<int64_t>{64, 128}));
  EXPECT_EQ(spec.output.name, "lm_head.weight");
  // Matrices stay in the mapping; bf16 norms became f32 copies.
  const ModelBacking* backing = BackingOf(spec);
  EXPECT_TRUE(backing->InMappedFile(spec.layers[1].wq.data, spec.layers[1].wq.bytes));
  EXPECT_TRUE(backing->InMappedFile(spec.output.data, spec.output.bytes));
  const devices::TensorView& norm = spec.layers[0].ffn_norm;
  EXPECT_EQ(norm.type, TensorType::kF32);
  EXPECT_EQ(norm.bytes, 64 * sizeof(float));
  EXPECT_FALSE(backing->InMappedFile(norm.data, norm.bytes));
  for (int k = 0; k < 64; ++k) {
    EXPECT_EQ(static_cast<const float*>(norm.data)[k], Value(TensorRole::kNorm, k));
  }
  // Tokenizer from tokenizer.json + tokenizer_config.json.
  EXPECT_EQ(model->tokenizer.kind, tokenizer::TokenizerKind::kByteLevelBpe);
  EXPECT_EQ(model->tokenizer.tokens.size(), 300u);
  EXPECT_EQ(model->tokenizer.bos_id, 295);
  EXPECT_EQ(model->tokenizer.eos_id, 296);
  EXPECT_FALSE(model->tokenizer.chat_template.empty());
  EXPECT_EQ(model->metadata.at("general.architecture"), "llama");
  EXPECT_EQ(model->metadata.at("hidden_size"), "64");
}

TEST_F(SafetensorsTest, TiedByFlagOrByMissingLmHead) {
  Checkpoint flag;
  flag.tied = true;  // lm_head present but ignored
  Checkpoint absent;
  absent.lm_head_present = false;
  for (const auto& [name, c] : {std::pair{"flag", flag}, std::pair{"absent", absent}}) {
    SCOPED_TRACE(name);
    auto model = LoadModel(Write(c, name));
    ASSERT_TRUE(model.ok()) << model.status();
    EXPECT_TRUE(model->spec.tied_embeddings);
    EXPECT_EQ(model->spec.output.data, model->spec.token_embedding.data);
    EXPECT_EQ(model->spec.output.shape, (std::vector<int64_t>{300, 64}));
  }
}

TEST_F(SafetensorsTest, Llama3RopeScalingIsParsed) {
  Checkpoint c;
  c.matrix_dtype = "F32";
  c.rope_scaling = {{"rope_type", "llama3"},
                    {"factor", 32.0},
                    {"low_freq_factor", 1.0},
                    {"high_freq_factor", 4.0},
                    {"original_max_position_embeddings", 8192}};
  auto model = LoadModel(Write(c));
  ASSERT_TRUE(model.ok()) << model.status();
  const devices::RopeScaling& rs = model->spec.hp.rope_scaling;
  EXPECT_TRUE(rs.enabled());
  EXPECT_EQ(rs.factor, 32.0f);
  EXPECT_EQ(rs.low_freq_factor, 1.0f);
  EXPECT_EQ(rs.high_freq_factor, 4.0f);
  EXPECT_EQ(rs.original_context, 8192);
  EXPECT_TRUE(model->spec.rope_freq_factors.empty());
  EXPECT_EQ(model->spec.layers[0].wq.type, TensorType::kF32);
}

TEST_F(SafetensorsTest, LinearRopeScalingNeedsAFactorOfAtLeastOne) {
  Checkpoint c;
  c.rope_scaling = {{"rope_type", "linear"}, {"factor", 0.5}};
  ExpectRefused(Write(c), absl::StatusCode::kInvalidArgument, "linear factor");
  c.rope_scaling = {{"rope_type", "linear"}};
  ExpectRefused(Write(c, "no-factor"), absl::StatusCode::kInvalidArgument, "factor");
}

TEST_F(SafetensorsTest, OtherRopeScalingIsUnimplemented) {
  Checkpoint c;
  c.rope_scaling = {{"type", "yarn"}, {"factor", 4.0}};
  ExpectRefused(Write(c), absl::StatusCode::kUnimplemented, "yarn");
}

TEST_F(SafetensorsTest, Qwen2HasBiasesAndF16Weights) {
  Checkpoint c;
  c.arch = Architecture::kQwen2;
  c.matrix_dtype = "F16";
  auto model = LoadModel(Write(c));
  ASSERT_TRUE(model.ok()) << model.status();
  const devices::ModelSpec& spec = model->spec;
  EXPECT_EQ(spec.arch, Architecture::kQwen2);
  EXPECT_EQ(spec.hp.rope_style, devices::RopeStyle::kHalves);
  EXPECT_EQ(spec.layers[0].wq.type, TensorType::kF16);
  for (const devices::TensorView* b :
       {&spec.layers[1].bq, &spec.layers[1].bk, &spec.layers[1].bv}) {
    ASSERT_FALSE(b->empty());
    EXPECT_EQ(b->type, TensorType::kF32);
    for (int k = 0; k < 32; ++k) {
      EXPECT_EQ(static_cast<const float*>(b->data)[k], Value(TensorRole::kBias, k));
    }
  }
  EXPECT_EQ(spec.layers[1].bq.shape, (std::vector<int64_t>{64}));
  EXPECT_EQ(spec.layers[1].bk.shape, (std::vector<int64_t>{32}));
}

TEST_F(SafetensorsTest, Qwen3HasPerHeadQkNormsAndNoBiases) {
  Checkpoint c;
  c.arch = Architecture::kQwen3;
  auto model = LoadModel(Write(c));
  ASSERT_TRUE(model.ok()) << model.status();
  const devices::ModelSpec& spec = model->spec;
  EXPECT_EQ(spec.arch, Architecture::kQwen3);
  EXPECT_EQ(spec.hp.head_dim, 32);
  EXPECT_EQ(spec.hp.rope_style, devices::RopeStyle::kHalves);
  EXPECT_EQ(spec.layers[0].wq.shape, (std::vector<int64_t>{128, 64}));
  EXPECT_EQ(spec.layers[0].wo.shape, (std::vector<int64_t>{64, 128}));
  EXPECT_TRUE(spec.layers[0].bq.empty());
  for (const devices::TensorView* n : {&spec.layers[1].q_norm, &spec.layers[1].k_norm}) {
    ASSERT_FALSE(n->empty());
    EXPECT_EQ(n->type, TensorType::kF32);  // BF16 in the file
    EXPECT_EQ(n->shape, (std::vector<int64_t>{32}));
    for (int k = 0; k < 32; ++k) {
      EXPECT_EQ(static_cast<const float*>(n->data)[k], Value(TensorRole::kNorm, k));
    }
  }
  EXPECT_EQ(spec.layers[1].q_norm.name, "model.layers.1.self_attn.q_norm.weight");
  EXPECT_EQ(model->metadata.at("general.architecture"), "qwen3");
}

// Mixtral and Qwen3-MoE: router and per-expert tensors, stacked in expert
// order into one tensor per projection; config keys of each family.
TEST_F(SafetensorsTest, ExpertsAreStackedInOrder) {
  for (Architecture arch : {Architecture::kLlama, Architecture::kQwen3Moe}) {
    Checkpoint c;
    c.arch = arch;
    c.experts = 4;
    auto model = LoadModel(Write(c, std::string("moe_") + devices::ArchitectureName(arch)));
    ASSERT_TRUE(model.ok()) << model.status();
    const devices::ModelSpec& spec = model->spec;
    EXPECT_EQ(spec.arch, arch);
    EXPECT_EQ(spec.hp.n_experts, 4);
    EXPECT_EQ(spec.hp.n_experts_used, 2);
    EXPECT_EQ(spec.hp.ffn_dim, 128);  // qwen3moe: moe_intermediate_size
    EXPECT_TRUE(spec.hp.expert_weights_norm);
    EXPECT_EQ(spec.hp.sliding_window, 0);  // Mixtral's config: null
    const devices::LayerWeights& l = spec.layers[1];
    EXPECT_EQ(l.router.shape, (std::vector<int64_t>{4, 64}));
    EXPECT_EQ(l.router.name, arch == Architecture::kLlama
                                 ? "model.layers.1.block_sparse_moe.gate.weight"
                                 : "model.layers.1.mlp.gate.weight");
    EXPECT_EQ(l.gate_exps.shape, (std::vector<int64_t>{4, 128, 64}));
    EXPECT_EQ(l.down_exps.shape, (std::vector<int64_t>{4, 64, 128}));
    EXPECT_TRUE(l.w_gate.empty());
    for (const devices::TensorView* stack : {&l.gate_exps, &l.up_exps, &l.down_exps}) {
      for (int64_t e = 0; e < 4; ++e) {
        const devices::TensorView slice = devices::ExpertSlice(*stack, e);
        const auto* bf16 = static_cast<const uint16_t*>(slice.data);
        for (int64_t k : {int64_t{0}, int64_t{1}, slice.elements() - 1}) {
          const uint32_t bits = static_cast<uint32_t>(bf16[k]) << 16;
          float v;
          std::memcpy(&v, &bits, 4);
          EXPECT_EQ(v, Value(TensorRole::kMatrix, 7 * e + k)) << stack->name << " " << e;
        }
      }
    }
    EXPECT_EQ(spec.Problem(), "");
  }
  // A missing expert is named.
  Checkpoint c;
  c.arch = Architecture::kQwen3Moe;
  c.experts = 4;
  const auto dir = Write(c, "moe_missing");
  std::vector<StTensor> tensors = Tensors(c);
  const std::string gone = "model.layers.1.mlp.experts.3.up_proj.weight";
  std::erase_if(tensors, [&](const StTensor& t) { return t.name == gone; });
  testing::WriteBytes(dir / "model.safetensors", EncodeSafetensors(tensors));
  ExpectRefused(dir, absl::StatusCode::kInvalidArgument, gone + "' is missing");
}

// Mistral: sliding_window over every layer (null: none).
TEST_F(SafetensorsTest, MistralSlidingWindowCoversEveryLayer) {
  Checkpoint c;
  c.mistral = true;
  c.sliding_window = 96;
  auto model = LoadModel(Write(c, "mistral"));
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->spec.hp.sliding_window, 96);
  EXPECT_EQ(model->spec.hp.rope_theta_local, model->spec.hp.rope_theta);
  EXPECT_TRUE(devices::IsLocalLayer(model->spec.hp, 0));
  EXPECT_TRUE(devices::IsLocalLayer(model->spec.hp, 1));
  EXPECT_EQ(model->spec.Problem(), "");
  c.sliding_window = nullptr;
  auto none = LoadModel(Write(c, "mistral_none"));
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ(none->spec.hp.sliding_window, 0);
}

// A Gemma 3 checkpoint written from a synthesized gemma3 model (whose norms
// hold 1 + w, as GGUF files do): the file stores w, Hugging Face's way, and
// loading must give back the synthesized factors; window, layer_types,
// local RoPE base and query scalar come from config.json.
TEST_F(SafetensorsTest, Gemma3NormsGainOneAndWindowIsRead) {
  SynthOptions o;
  o.arch = Architecture::kGemma3;
  o.dim = 64;
  o.n_layers = 4;
  o.head_dim = 32;
  o.weight_type = TensorType::kF32;
  o.tied_embeddings = true;
  o.sliding_window = 5;
  o.sliding_window_pattern = 2;
  o.vocab_size = 300;
  auto synth = SynthesizeModel(o);
  ASSERT_TRUE(synth.ok()) << synth.status();
  LayoutOptions layout;
  layout.output = false;
  layout.qk_norm = true;
  layout.post_norms = true;
  std::map<std::string, const devices::TensorView*> by_name;
  for (const auto& [label, view] : testing::Views(synth->spec)) by_name[view->name] = view;
  devices::ModelSpec shape;
  shape.hp = synth->spec.hp;
  std::vector<StTensor> tensors;
  for (const TensorSlot& slot : ModelTensorSlots(layout, &shape)) {
    ASSERT_TRUE(by_name.contains(slot.gguf_name)) << slot.gguf_name;
    const devices::TensorView& v = *by_name[slot.gguf_name];
    std::vector<float> values(static_cast<size_t>(v.elements()));
    std::memcpy(values.data(), v.data, values.size() * sizeof(float));
    if (slot.role == TensorRole::kNorm) {
      for (float& x : values) x -= 1.0f;
    }
    tensors.push_back(
        {slot.hf_name, "F32", slot.shape,
         std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float))});
  }
  const std::filesystem::path dir = tmp_.path() / "gemma3";
  std::filesystem::create_directories(dir);
  json config = {{"architectures", {"Gemma3ForCausalLM"}},
                 {"model_type", "gemma3_text"},
                 {"hidden_size", 64},
                 {"num_hidden_layers", 4},
                 {"num_attention_heads", 4},
                 {"num_key_value_heads", 2},
                 {"head_dim", 32},
                 {"intermediate_size", 128},
                 {"vocab_size", 300},
                 {"max_position_embeddings", 2048},
                 {"rms_norm_eps", 1e-6},
                 {"rope_theta", 1000000.0},
                 {"rope_local_base_freq", 10000.0},
                 {"query_pre_attn_scalar", 32},
                 {"sliding_window", 5},
                 {"layer_types",
                  {"sliding_attention", "full_attention", "sliding_attention", "full_attention"}},
                 {"hidden_activation", "gelu_pytorch_tanh"},
                 {"rope_scaling", {{"rope_type", "linear"}, {"factor", 8.0}}},  // as 4B+
                 {"final_logit_softcapping", nullptr}};
  WriteText(dir / "config.json", config.dump(2));
  testing::WriteBytes(dir / "model.safetensors", EncodeSafetensors(tensors));
  WriteTokenizer(dir);
  auto model = LoadModel(dir);
  ASSERT_TRUE(model.ok()) << model.status();
  const devices::ModelSpec& spec = model->spec;
  EXPECT_EQ(spec.arch, Architecture::kGemma3);
  EXPECT_TRUE(spec.tied_embeddings);  // Gemma 3's default
  EXPECT_EQ(spec.hp.sliding_window, 5);
  EXPECT_EQ(spec.hp.sliding_window_pattern, 2);
  EXPECT_EQ(spec.hp.rope_theta_local, 10000.0f);
  EXPECT_EQ(spec.hp.query_pre_attn_scalar, 32.0f);
  EXPECT_EQ(spec.hp.rope_linear_factor, 8.0f);
  EXPECT_FALSE(spec.hp.rope_scaling.enabled());
  EXPECT_EQ(spec.layers[1].attn_post_norm.name, "model.layers.1.post_attention_layernorm.weight");
  EXPECT_EQ(spec.layers[1].ffn_norm.name, "model.layers.1.pre_feedforward_layernorm.weight");
  EXPECT_EQ(spec.layers[1].ffn_post_norm.name, "model.layers.1.post_feedforward_layernorm.weight");
  const auto same = testing::Views(synth->spec);
  const auto got = testing::Views(spec);
  ASSERT_EQ(same.size(), got.size());
  for (size_t i = 0; i < got.size(); ++i) {
    const devices::TensorView& a = *got[i].second;
    const devices::TensorView& b = *same[i].second;
    if (b.empty() || b.type != TensorType::kF32) continue;
    ASSERT_EQ(a.elements(), b.elements()) << got[i].first;
    for (int64_t k = 0; k < a.elements(); ++k) {
      ASSERT_NEAR(static_cast<const float*>(a.data)[k], static_cast<const float*>(b.data)[k], 1e-6)
          << got[i].first << "[" << k << "]";
    }
  }

  config["layer_types"] = {"sliding_attention", "full_attention", "full_attention",
                           "full_attention"};
  WriteText(dir / "config.json", config.dump(2));
  ExpectRefused(dir, absl::StatusCode::kUnimplemented, "layer_types");
  config["layer_types"] = {"sliding_attention", "full_attention", "sliding_attention",
                           "full_attention"};
  config["final_logit_softcapping"] = 30.0;
  WriteText(dir / "config.json", config.dump(2));
  ExpectRefused(dir, absl::StatusCode::kUnimplemented, "soft-capping");
}

TEST_F(SafetensorsTest, Qwen3WithoutKNormIsRefused) {
  Checkpoint c;
  c.arch = Architecture::kQwen3;
  const auto dir = Write(c);
  std::vector<StTensor> tensors = Tensors(c);
  std::erase_if(tensors, [](const StTensor& t) {
    return t.name == "model.layers.1.self_attn.k_norm.weight";
  });
  testing::WriteBytes(dir / "model.safetensors", EncodeSafetensors(tensors));
  ExpectRefused(dir, absl::StatusCode::kInvalidArgument, "model.layers.1.self_attn.k_norm.weight");
}

TEST_F(SafetensorsTest, ShardedCheckpoint) {
  Checkpoint c;
  c.shards = 3;
  auto model = LoadModel(Write(c));
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(BackingOf(model->spec)->files.size(), 3u);
  const devices::TensorView& w = model->spec.layers[1].w_up;
  EXPECT_TRUE(BackingOf(model->spec)->InMappedFile(w.data, w.bytes));
}

TEST_F(SafetensorsTest, UnsupportedDtypeNamesTheTensor) {
  const auto dir = Write(Checkpoint{});
  std::vector<StTensor> tensors = Tensors(Checkpoint{});
  for (StTensor& t : tensors) {
    if (t.name == "model.layers.0.mlp.up_proj.weight") {
      t.dtype = "I16";  // same size as BF16, so the header stays consistent
    }
  }
  testing::WriteBytes(dir / "model.safetensors", EncodeSafetensors(tensors));
  ExpectRefused(dir, absl::StatusCode::kUnimplemented, "model.layers.0.mlp.up_proj.weight");
}

TEST_F(SafetensorsTest, WrongShapeAndMissingTensor) {
  const auto dir = Write(Checkpoint{});
  std::vector<StTensor> tensors = Tensors(Checkpoint{});
  for (StTensor& t : tensors) {
    if (t.name == "model.layers.1.self_attn.k_proj.weight") t.shape = {64, 32};
  }
  testing::WriteBytes(dir / "model.safetensors", EncodeSafetensors(tensors));
  ExpectRefused(dir, absl::StatusCode::kInvalidArgument, "model.layers.1.self_attn.k_proj.weight");
  tensors = Tensors(Checkpoint{});
  tensors.erase(tensors.begin() + 5);
  const std::string missing = Tensors(Checkpoint{})[5].name;
  testing::WriteBytes(dir / "model.safetensors", EncodeSafetensors(tensors));
  ExpectRefused(dir, absl::StatusCode::kInvalidArgument, missing + "' is missing");
}

TEST_F(SafetensorsTest, ConfigErrors) {
  const auto dir = Write(Checkpoint{});
  auto config = json::parse(testing::ReadBytes(dir / "config.json"));
  config.erase("hidden_size");
  WriteText(dir / "config.json", config.dump());
  ExpectRefused(dir, absl::StatusCode::kInvalidArgument, "hidden_size");
  config["hidden_size"] = 64;
  config["architectures"] = {"GemmaForCausalLM"};
  WriteText(dir / "config.json", config.dump());
  ExpectRefused(dir, absl::StatusCode::kUnimplemented, "GemmaForCausalLM");
  WriteText(dir / "config.json", "{not json");
  ExpectRefused(dir, absl::StatusCode::kInvalidArgument, "config.json");
  std::filesystem::remove(dir / "config.json");
  ExpectRefused(dir, absl::StatusCode::kNotFound, "config.json");
}

TEST_F(SafetensorsTest, MissingTokenizerIsNotFound) {
  const auto dir = Write(Checkpoint{});
  std::filesystem::remove(dir / "tokenizer.json");
  ExpectRefused(dir, absl::StatusCode::kNotFound, "tokenizer.json");
}

// generation_config.json's eos_token_id (a list in Gemma 3 and Llama 3.1)
// names every token that ends generation.
TEST_F(SafetensorsTest, GenerationConfigEndTokens) {
  const auto dir = Write(Checkpoint{});
  WriteText(dir / "generation_config.json", R"({"bos_token_id": 295, "eos_token_id": [296, 10]})");
  auto model = LoadModel(dir);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->tokenizer.eos_id, 296);
  EXPECT_THAT(model->tokenizer.extra_eos_ids, ::testing::Contains(10));
  WriteText(dir / "generation_config.json", R"({"eos_token_id": 300})");
  ExpectRefused(dir, absl::StatusCode::kInvalidArgument, "generation_config.json");
}

TEST_F(SafetensorsTest, CorruptHeaders) {
  const auto dir = Write(Checkpoint{});
  const auto path = dir / "model.safetensors";
  const std::string good = testing::ReadBytes(path);
  auto refuse = [&](const std::string& bytes, const std::string& part) {
    SCOPED_TRACE(part);
    testing::WriteBytes(path, bytes);
    auto file = SafetensorsFile::Open(path);
    ASSERT_FALSE(file.ok());
    EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument) << file.status();
    const std::string message(file.status().message());
    EXPECT_NE(message.find(path.string()), std::string::npos) << message;
    EXPECT_NE(message.find(part), std::string::npos) << message;
    EXPECT_FALSE(LoadModel(dir).ok());
  };
  std::string b = good;
  testing::Poke<uint64_t>(b, 0, uint64_t{1} << 40);
  refuse(b, "100 MiB");
  b = good;
  testing::Poke<uint64_t>(b, 0, good.size());
  refuse(b, "past the end");
  refuse(good.substr(0, 5), "too short");
  b = good;
  b[8] = '[';
  refuse(b, "JSON");
  // Truncating the data section leaves the last tensors' offsets outside it.
  refuse(good.substr(0, good.size() - 10), "outside the data section");

  std::vector<StTensor> tensors = Tensors(Checkpoint{});
  std::string bytes = EncodeSafetensors(tensors);
  const std::string name = tensors[1].name;
  // Shape disagrees with the byte range.
  const size_t at = bytes.find("\"shape\":[64]");
  ASSERT_NE(at, std::string::npos);
  bytes.replace(at, 12, "\"shape\":[65]");
  refuse(bytes, "need");
  // Overlapping ranges: point a tensor's offsets at the start.
  json header = json::parse(good.substr(8, testing::Peek<uint64_t>(good, 0)));
  header[name]["data_offsets"] = header[tensors[0].name]["data_offsets"];
  header[name]["shape"] = header[tensors[0].name]["shape"];
  header[name]["dtype"] = header[tensors[0].name]["dtype"];
  std::string text = header.dump();
  std::string overlapped(8, '\0');
  testing::Poke<uint64_t>(overlapped, 0, text.size());
  refuse(overlapped + text + good.substr(8 + testing::Peek<uint64_t>(good, 0)), "overlaps");
}

}  // namespace
}  // namespace tokenmill::model
