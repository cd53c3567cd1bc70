#include "runtime/model/safetensors_loader.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "runtime/model/model_layout.h"
#include "runtime/model/safetensors_file.h"
#include "runtime/model/status_macros.h"
#include "runtime/model/tensor_binding.h"
#include "runtime/tokenizer/hf_tokenizer.h"

namespace tokenmill::model {
namespace {

namespace fs = std::filesystem;
using devices::Architecture;
using devices::TensorType;
using nlohmann::json;

absl::StatusOr<std::string> ReadText(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path.string(), ": cannot open"));
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

absl::StatusOr<json> ReadJson(const fs::path& path) {
  auto text = ReadText(path);
  if (!text.ok()) return text.status();
  json value = json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded() || !value.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path.string(), ": not a JSON object"));
  }
  return value;
}

// Reads config.json fields with messages naming the file and the key.
class ConfigReader {
 public:
  ConfigReader(const json& config, std::string file) : config_(config), file_(std::move(file)) {}

  const std::string& file() const { return file_; }

  absl::Status Error(const std::string& key, const std::string& what) const {
    return absl::InvalidArgumentError(absl::StrCat(file_, ": key '", key, "': ", what));
  }

  absl::StatusOr<int32_t> Int(const json& obj, const std::string& key,
                              std::optional<int32_t> fallback) const {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) {
      if (fallback) return *fallback;
      return Error(key, "missing");
    }
    if (!it->is_number_integer() || it->get<int64_t>() <= 0 ||
        it->get<int64_t>() > std::numeric_limits<int32_t>::max()) {
      return Error(key, "expected a positive 32-bit integer");
    }
    return static_cast<int32_t>(it->get<int64_t>());
  }
  absl::StatusOr<int32_t> Int(const std::string& key, std::optional<int32_t> fallback) const {
    return Int(config_, key, fallback);
  }

  absl::StatusOr<float> Float(const json& obj, const std::string& key,
                              std::optional<float> fallback) const {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) {
      if (fallback) return *fallback;
      return Error(key, "missing");
    }
    if (!it->is_number() || !std::isfinite(it->get<double>()))
      return Error(key, "expected a number");
    return it->get<float>();
  }
  absl::StatusOr<float> Float(const std::string& key, std::optional<float> fallback) const {
    return Float(config_, key, fallback);
  }

  absl::StatusOr<bool> Bool(const std::string& key, bool fallback) const {
    auto it = config_.find(key);
    if (it == config_.end() || it->is_null()) return fallback;
    if (!it->is_boolean()) return Error(key, "expected true or false");
    return it->get<bool>();
  }

 private:
  const json& config_;
  std::string file_;
};

absl::Status ReadRopeScaling(const ConfigReader& r, const json& config,
                             devices::ModelHyperparams* hp) {
  devices::RopeScaling* scaling = &hp->rope_scaling;
  auto it = config.find("rope_scaling");
  if (it == config.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_object()) return r.Error("rope_scaling", "expected an object or null");
  const json& rs = *it;
  std::string type;
  for (const char* key : {"rope_type", "type"}) {
    auto t = rs.find(key);
    if (t != rs.end() && t->is_string()) {
      type = t->get<std::string>();
      break;
    }
  }
  if (type == "default") return absl::OkStatus();
  if (type == "linear") {
    TM_ASSIGN(hp->rope_linear_factor, r.Float(rs, "factor", std::nullopt));
    if (!(hp->rope_linear_factor >= 1.0f) || !std::isfinite(hp->rope_linear_factor)) {
      return r.Error("rope_scaling", "a linear factor must be a finite number >= 1");
    }
    return absl::OkStatus();
  }
  if (type != "llama3") {
    return absl::UnimplementedError(absl::StrCat(r.Error("rope_scaling", "").message(),
                                                 "RoPE scaling type '", type,
                                                 "' is not supported (llama3 and linear are)"));
  }
  TM_ASSIGN(scaling->factor, r.Float(rs, "factor", std::nullopt));
  TM_ASSIGN(scaling->low_freq_factor, r.Float(rs, "low_freq_factor", 1.0f));
  TM_ASSIGN(scaling->high_freq_factor, r.Float(rs, "high_freq_factor", 4.0f));
  TM_ASSIGN(scaling->original_context, r.Int(rs, "original_max_position_embeddings", 8192));
  if (!(scaling->factor > 0.0f) || !(scaling->high_freq_factor > scaling->low_freq_factor)) {
    return r.Error("rope_scaling",
                   "factor must be positive and high_freq_factor > low_freq_factor");
  }
  return absl::OkStatus();
}

absl::StatusOr<TensorType> WeightType(const SafetensorsTensor& t, const std::string& file) {
  if (t.dtype == "F32") return TensorType::kF32;
  if (t.dtype == "F16") return TensorType::kF16;
  if (t.dtype == "BF16") return TensorType::kBF16;
  return absl::UnimplementedError(absl::StrCat(file, ": tensor '", t.name, "': dtype ", t.dtype,
                                               " is not supported (F32, F16, BF16 are)"));
}

// The checkpoint's .safetensors files: the index's weight_map when sharded,
// else model.safetensors, else every *.safetensors in the directory.
absl::StatusOr<std::vector<fs::path>> ShardPaths(const fs::path& dir) {
  const fs::path index = dir / "model.safetensors.index.json";
  std::vector<fs::path> paths;
  std::error_code ec;
  if (fs::exists(index, ec)) {
    auto json_index = ReadJson(index);
    if (!json_index.ok()) return json_index.status();
    auto map = json_index->find("weight_map");
    if (map == json_index->end() || !map->is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(index.string(), ": key 'weight_map' missing"));
    }
    std::vector<std::string> names;
    for (const auto& [tensor, file] : map->items()) {
      if (!file.is_string() || file.get<std::string>().find('/') != std::string::npos) {
        return absl::InvalidArgumentError(
            absl::StrCat(index.string(), ": weight_map entry '", tensor, "' is not a file name"));
      }
      names.push_back(file.get<std::string>());
    }
    std::sort(names.begin(), names.end());
    names.erase(std::unique(names.begin(), names.end()), names.end());
    for (const auto& name : names) paths.push_back(dir / name);
  } else if (fs::exists(dir / "model.safetensors", ec)) {
    paths.push_back(dir / "model.safetensors");
  } else {
    for (const auto& entry : fs::directory_iterator(dir, ec)) {
      if (entry.path().extension() == ".safetensors") paths.push_back(entry.path());
    }
    std::sort(paths.begin(), paths.end());
  }
  if (paths.empty()) {
    return absl::NotFoundError(absl::StrCat(dir.string(), ": no .safetensors files"));
  }
  return paths;
}

// Gemma 3's attention from config.json (Gemma3TextConfig): sliding_window;
// which layers use it, from layer_types (newer configs; must repeat with a
// period whose last layer is global) or sliding_window_pattern (default 6);
// rope_local_base_freq (default 10000); query_pre_attn_scalar (default
// head_dim). GELU other than the tanh approximation and logit soft-capping
// are refused.
absl::Status ReadGemma3Config(const ConfigReader& r, const json& config,
                              devices::ModelHyperparams* hp) {
  const std::string& file = r.file();
  TM_ASSIGN(hp->sliding_window, r.Int("sliding_window", std::nullopt));
  auto types = config.find("layer_types");
  if (types != config.end() && types->is_array()) {
    const int32_t n = static_cast<int32_t>(types->size());
    int32_t period = 0;
    for (int32_t i = 0; i < n && period == 0; ++i) {
      if ((*types)[static_cast<size_t>(i)] == "full_attention") period = i + 1;
    }
    bool periodic = n == hp->n_layers;
    for (int32_t i = 0; i < n && periodic; ++i) {
      const bool full = period > 0 && i % period == period - 1;
      periodic =
          (*types)[static_cast<size_t>(i)] == (full ? "full_attention" : "sliding_attention");
    }
    if (!periodic) {
      return absl::UnimplementedError(
          absl::StrCat(file,
                       ": key 'layer_types': only sliding layers repeating with a full-attention "
                       "layer last in each period, one entry per layer, are supported"));
    }
    // No full layer at all: every layer local (a period longer than the model).
    hp->sliding_window_pattern = period > 0 ? period : hp->n_layers + 1;
  } else {
    TM_ASSIGN(hp->sliding_window_pattern, r.Int("sliding_window_pattern", 6));
  }
  TM_ASSIGN(hp->rope_theta_local, r.Float("rope_local_base_freq", 10000.0f));
  TM_ASSIGN(hp->query_pre_attn_scalar,
            r.Float("query_pre_attn_scalar", static_cast<float>(hp->head_dim)));
  for (const char* key : {"final_logit_softcapping", "attn_logit_softcapping"}) {
    auto it = config.find(key);
    if (it != config.end() && !it->is_null()) {
      return absl::UnimplementedError(
          absl::StrCat(file, ": key '", key, "': logit soft-capping is not supported"));
    }
  }
  auto act = config.find("hidden_activation");
  if (act != config.end() && !act->is_null() && *act != "gelu_pytorch_tanh") {
    return absl::UnimplementedError(absl::StrCat(file, ": key 'hidden_activation': ", act->dump(),
                                                 " is not supported (gelu_pytorch_tanh is)"));
  }
  return absl::OkStatus();
}

// Mixtral's and Qwen3-MoE's experts from config.json: num_local_experts /
// num_experts, num_experts_per_tok; Qwen3-MoE's experts' size
// moe_intermediate_size and norm_topk_prob (default false in transformers;
// llama.cpp always renormalises, and tokenmill follows the config). Qwen3-MoE
// models with dense layers (mlp_only_layers, decoder_sparse_step > 1) are
// refused.
absl::Status ReadExpertConfig(const ConfigReader& r, const json& config, bool qwen3moe,
                              devices::ModelHyperparams* hp) {
  TM_ASSIGN(hp->n_experts, r.Int(qwen3moe ? "num_experts" : "num_local_experts", std::nullopt));
  TM_ASSIGN(hp->n_experts_used, r.Int("num_experts_per_tok", std::nullopt));
  if (!qwen3moe) {
    hp->expert_weights_norm = true;
    return absl::OkStatus();
  }
  TM_ASSIGN(hp->ffn_dim, r.Int("moe_intermediate_size", std::nullopt));
  TM_ASSIGN(hp->expert_weights_norm, r.Bool("norm_topk_prob", false));
  int32_t sparse_step = 1;
  TM_ASSIGN(sparse_step, r.Int("decoder_sparse_step", 1));
  auto dense = config.find("mlp_only_layers");
  if (sparse_step != 1 || (dense != config.end() && dense->is_array() && !dense->empty())) {
    return absl::UnimplementedError(
        absl::StrCat(r.file(),
                     ": keys 'decoder_sparse_step', 'mlp_only_layers': dense layers among the "
                     "expert layers are not supported"));
  }
  return absl::OkStatus();
}

// Binds a kExperts slot from one tensor per expert (slot.hf_name with '*' as
// the index): each {out, in}, one dtype, copied into one stacked buffer that
// `backing` owns (the files hold the experts apart).
absl::Status BindExperts(const TensorSlot& slot,
                         const absl::flat_hash_map<std::string, const SafetensorsTensor*>& tensors,
                         const absl::flat_hash_map<std::string, std::string>& tensor_file,
                         const fs::path& dir, ModelBacking* backing,
                         absl::flat_hash_set<std::string>* used) {
  const int64_t n = slot.shape[0];
  const std::vector<int64_t> expert_shape = {slot.shape[1], slot.shape[2]};
  const size_t star = slot.hf_name.find('*');
  std::vector<const SafetensorsTensor*> parts;
  for (int64_t e = 0; e < n; ++e) {
    const std::string name =
        slot.hf_name.substr(0, star) + std::to_string(e) + slot.hf_name.substr(star + 1);
    auto it = tensors.find(name);
    if (it == tensors.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat(dir.string(), ": tensor '", name, "' is missing"));
    }
    const SafetensorsTensor& t = *it->second;
    const std::string& file = tensor_file.at(name);
    if (t.shape != expert_shape) {
      return absl::InvalidArgumentError(
          absl::StrCat(file, ": tensor '", name, "': shape ", ShapeText(t.shape),
                       " does not match the expected ", ShapeText(expert_shape),
                       " implied by the model's hyperparameters"));
    }
    if (!parts.empty() && t.dtype != parts[0]->dtype) {
      return absl::UnimplementedError(absl::StrCat(file, ": tensor '", name, "': dtype ", t.dtype,
                                                   " differs from expert 0's ", parts[0]->dtype));
    }
    parts.push_back(&t);
    used->insert(name);
  }
  SourceTensor src;
  src.name = slot.hf_name;
  TM_ASSIGN(src.type, WeightType(*parts[0], tensor_file.at(parts[0]->name)));
  src.shape = slot.shape;
  const size_t part_bytes = parts[0]->bytes;
  src.bytes = part_bytes * parts.size();
  uint8_t* stacked = backing->NewBuffer(src.bytes);
  for (size_t e = 0; e < parts.size(); ++e) {
    std::memcpy(stacked + e * part_bytes, parts[e]->data, part_bytes);
  }
  src.data = stacked;
  return BindTensor(slot, src, dir.string(), backing);
}

}  // namespace

absl::StatusOr<LoadedModel> LoadSafetensorsModel(const fs::path& dir) {
  const fs::path config_path = dir / "config.json";
  auto config = ReadJson(config_path);
  if (!config.ok()) return config.status();
  const std::string config_file = config_path.string();
  const ConfigReader r(*config, config_file);

  LoadedModel model;
  devices::ModelSpec& spec = model.spec;
  auto archs = config->find("architectures");
  std::string arch_name;
  if (archs != config->end() && archs->is_array() && !archs->empty() && (*archs)[0].is_string()) {
    arch_name = (*archs)[0].get<std::string>();
  }
  const bool mistral = arch_name == "MistralForCausalLM" || arch_name == "MixtralForCausalLM";
  if (arch_name == "LlamaForCausalLM" || mistral) {
    spec.arch = Architecture::kLlama;
  } else if (arch_name == "Qwen3MoeForCausalLM") {
    spec.arch = Architecture::kQwen3Moe;
  } else if (arch_name == "Qwen2ForCausalLM") {
    spec.arch = Architecture::kQwen2;
  } else if (arch_name == "Qwen3ForCausalLM") {
    spec.arch = Architecture::kQwen3;
  } else if (arch_name == "Gemma3ForCausalLM") {
    spec.arch = Architecture::kGemma3;
  } else {
    return absl::UnimplementedError(
        absl::StrCat(config_file, ": key 'architectures': '", arch_name,
                     "' is not supported (LlamaForCausalLM, MistralForCausalLM, "
                     "MixtralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, Qwen3MoeForCausalLM, "
                     "Gemma3ForCausalLM are)"));
  }
  const bool gemma3 = spec.arch == Architecture::kGemma3;
  devices::ModelHyperparams& hp = spec.hp;
  TM_ASSIGN(hp.dim, r.Int("hidden_size", std::nullopt));
  TM_ASSIGN(hp.n_layers, r.Int("num_hidden_layers", std::nullopt));
  TM_ASSIGN(hp.n_heads, r.Int("num_attention_heads", std::nullopt));
  TM_ASSIGN(hp.n_kv_heads, r.Int("num_key_value_heads", hp.n_heads));
  TM_ASSIGN(hp.ffn_dim, r.Int("intermediate_size", std::nullopt));
  TM_ASSIGN(hp.vocab_size, r.Int("vocab_size", std::nullopt));
  TM_ASSIGN(hp.context_length, r.Int("max_position_embeddings", 2048));
  TM_ASSIGN(hp.rms_norm_eps, r.Float("rms_norm_eps", 1e-6f));
  TM_ASSIGN(hp.rope_theta, r.Float("rope_theta", 10000.0f));
  TM_ASSIGN(hp.head_dim, r.Int("head_dim", hp.dim / hp.n_heads));
  hp.rope_style = devices::RopeStyle::kHalves;
  if (absl::Status s = ReadRopeScaling(r, *config, &hp); !s.ok()) return s;
  if (gemma3) {
    if (absl::Status s = ReadGemma3Config(r, *config, &hp); !s.ok()) return s;
  }
  const bool qwen3moe = spec.arch == Architecture::kQwen3Moe;
  if (arch_name == "MixtralForCausalLM" || qwen3moe) {
    if (absl::Status s = ReadExpertConfig(r, *config, qwen3moe, &hp); !s.ok()) return s;
  }
  if (mistral) {
    // Mistral and Mixtral: sliding_window (null: none) over every layer.
    TM_ASSIGN(hp.sliding_window, r.Int("sliding_window", 0));
    hp.sliding_window_pattern = 0;
    hp.rope_theta_local = hp.rope_theta;
  }
  bool tie = false;
  // Gemma3TextConfig ties by default; the others do not.
  TM_ASSIGN(tie, r.Bool("tie_word_embeddings", gemma3));
  bool sliding = false;
  TM_ASSIGN(sliding, r.Bool("use_sliding_window", false));
  if (sliding) {
    return absl::UnimplementedError(absl::StrCat(
        config_file, ": key 'use_sliding_window': sliding-window attention is not supported"));
  }
  if (absl::Status s = ValidateHyperparams(hp, config_file); !s.ok()) return s;

  auto shard_paths = ShardPaths(dir);
  if (!shard_paths.ok()) return shard_paths.status();
  std::vector<std::unique_ptr<SafetensorsFile>> shards;
  absl::flat_hash_map<std::string, const SafetensorsTensor*> tensors;
  absl::flat_hash_map<std::string, std::string> tensor_file;
  auto backing = std::make_shared<ModelBacking>();
  for (const fs::path& path : *shard_paths) {
    auto shard = SafetensorsFile::Open(path);
    if (!shard.ok()) return shard.status();
    for (const SafetensorsTensor& t : (*shard)->tensors()) {
      if (!tensors.emplace(t.name, &t).second) {
        return absl::InvalidArgumentError(absl::StrCat(path.string(), ": tensor '", t.name,
                                                       "' also appears in ", tensor_file[t.name]));
      }
      tensor_file[t.name] = path.string();
    }
    backing->files.push_back((*shard)->mapping());
    shards.push_back(*std::move(shard));
  }

  LayoutOptions layout;
  layout.output = !tie && tensors.contains("lm_head.weight");
  layout.qkv_bias = spec.arch == Architecture::kQwen2;
  layout.qk_norm = spec.arch == Architecture::kQwen3 || qwen3moe || gemma3;
  layout.post_norms = gemma3;
  if (hp.n_experts > 0) {
    layout.experts =
        qwen3moe ? LayoutOptions::Experts::kQwen3Moe : LayoutOptions::Experts::kMixtral;
  }
  absl::flat_hash_set<std::string> used;
  for (const TensorSlot& slot : ModelTensorSlots(layout, &spec)) {
    if (slot.role == TensorRole::kExperts) {
      if (absl::Status s = BindExperts(slot, tensors, tensor_file, dir, backing.get(), &used);
          !s.ok()) {
        return s;
      }
      continue;
    }
    auto it = tensors.find(slot.hf_name);
    if (it == tensors.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat(dir.string(), ": tensor '", slot.hf_name, "' is missing"));
    }
    const SafetensorsTensor& t = *it->second;
    const std::string& file = tensor_file[t.name];
    SourceTensor src;
    src.name = t.name;
    TM_ASSIGN(src.type, WeightType(t, file));
    src.shape = t.shape;
    src.data = t.data;
    src.bytes = t.bytes;
    if (absl::Status s = BindTensor(slot, src, file, backing.get()); !s.ok()) return s;
    if (gemma3 && slot.role == TensorRole::kNorm) {
      // Gemma3RMSNorm multiplies by (1 + w); the spec holds the factor (as
      // GGUF files do), in a copy (an f32 norm may be a view of the file).
      devices::TensorView& view = *slot.view;
      const size_t n = static_cast<size_t>(view.elements());
      auto* factor = reinterpret_cast<float*>(backing->NewBuffer(n * sizeof(float)));
      const auto* w = static_cast<const float*>(view.data);
      for (size_t k = 0; k < n; ++k) factor[k] = 1.0f + w[k];
      view.data = factor;
    }
    used.insert(t.name);
  }
  for (const auto& [name, t] : tensors) {
    // Old checkpoints store RoPE frequencies; tied ones may still carry lm_head.
    if (used.contains(name) || absl::EndsWith(name, "rotary_emb.inv_freq") ||
        name == "lm_head.weight") {
      continue;
    }
    return absl::UnimplementedError(absl::StrCat(
        tensor_file[name], ": tensor '", name, "' is not part of the ",
        devices::ArchitectureName(spec.arch), " architecture as tokenmill supports it"));
  }
  if (!layout.output) {
    spec.output = spec.token_embedding;
    spec.tied_embeddings = true;
  }

  auto tokenizer_json = ReadText(dir / "tokenizer.json");
  if (!tokenizer_json.ok()) return tokenizer_json.status();
  // tokenizer_config.json and generation_config.json are optional.
  std::string optional_texts[2];
  const char* optional_names[2] = {"tokenizer_config.json", "generation_config.json"};
  for (int k = 0; k < 2; ++k) {
    std::error_code ec;
    if (!fs::exists(dir / optional_names[k], ec)) continue;
    auto text = ReadText(dir / optional_names[k]);
    if (!text.ok()) return text.status();
    optional_texts[k] = *std::move(text);
  }
  auto tokenizer =
      tokenizer::ParseHfTokenizer(*tokenizer_json, optional_texts[0], optional_texts[1]);
  if (!tokenizer.ok()) {
    return absl::Status(tokenizer.status().code(),
                        absl::StrCat((dir / "tokenizer.json").string(), ": ",
                                     std::string(tokenizer.status().message())));
  }
  model.tokenizer = *std::move(tokenizer);

  spec.name = dir.filename().string();
  if (spec.name.empty()) spec.name = dir.parent_path().filename().string();
  spec.backing = std::move(backing);
  model.format = "safetensors";
  model.path = dir;
  model.metadata["general.name"] = spec.name;
  model.metadata["general.architecture"] = devices::ArchitectureName(spec.arch);
  for (const auto& [key, value] : config->items()) {
    if (value.is_string()) {
      model.metadata[key] = value.get<std::string>();
    } else if (value.is_number() || value.is_boolean()) {
      model.metadata[key] = value.dump();
    }
  }
  return model;
}

}  // namespace tokenmill::model
