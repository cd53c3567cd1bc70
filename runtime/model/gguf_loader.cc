#include "runtime/model/gguf_loader.h"

#include <cmath>
#include <limits>
#include <optional>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "runtime/model/model_layout.h"
#include "runtime/model/status_macros.h"
#include "runtime/model/tensor_binding.h"

namespace tokenmill::model {
namespace {

using devices::Architecture;
using devices::TensorType;

// Reads <arch>.* keys with messages that name the file and the key.
class HyperparamReader {
 public:
  HyperparamReader(const GgufFile& file, std::string prefix)
      : file_(file), prefix_(std::move(prefix)) {}

  std::string Key(const std::string& suffix) const { return prefix_ + suffix; }

  // A positive int32; `fallback` when absent (missing is an error without one).
  absl::StatusOr<int32_t> Int(const std::string& suffix, std::optional<int32_t> fallback) const {
    const std::string key = Key(suffix);
    const GgufValue* v = file_.Find(key);
    if (v == nullptr) {
      if (fallback) return *fallback;
      return Missing(key);
    }
    if (v->type == GgufType::kArray) {
      return absl::UnimplementedError(absl::StrCat(file_.path().string(), ": metadata key '", key,
                                                   "': per-layer values are not supported"));
    }
    const std::optional<int64_t> x = v->AsInt();
    if (!x || *x <= 0 || *x > std::numeric_limits<int32_t>::max()) {
      return absl::InvalidArgumentError(absl::StrCat(file_.path().string(), ": metadata key '", key,
                                                     "': ", v->AsText().value_or("?"),
                                                     " is not a positive 32-bit integer"));
    }
    return static_cast<int32_t>(*x);
  }

  absl::StatusOr<float> Float(const std::string& suffix, std::optional<float> fallback) const {
    const std::string key = Key(suffix);
    const GgufValue* v = file_.Find(key);
    if (v == nullptr) {
      if (fallback) return *fallback;
      return Missing(key);
    }
    const std::optional<double> x = v->AsDouble();
    if (!x || !std::isfinite(*x)) {
      return absl::InvalidArgumentError(
          absl::StrCat(file_.path().string(), ": metadata key '", key, "': expected a number"));
    }
    return static_cast<float>(*x);
  }

 private:
  absl::Status Missing(const std::string& key) const {
    return absl::InvalidArgumentError(
        absl::StrCat(file_.path().string(), ": metadata key '", key, "' is missing"));
  }

  const GgufFile& file_;
  std::string prefix_;
};

absl::StatusOr<devices::ModelHyperparams> ReadHyperparams(const GgufFile& file,
                                                          const std::string& arch) {
  const HyperparamReader r(file, arch + ".");
  devices::ModelHyperparams hp;
  TM_ASSIGN(hp.context_length, r.Int("context_length", std::nullopt));
  TM_ASSIGN(hp.dim, r.Int("embedding_length", std::nullopt));
  TM_ASSIGN(hp.n_layers, r.Int("block_count", std::nullopt));
  // qwen3moe files may carry a dense size they do not use; their experts'
  // size is read below.
  TM_ASSIGN(hp.ffn_dim,
            r.Int("feed_forward_length",
                  arch == "qwen3moe" ? std::optional<int32_t>(32) : std::optional<int32_t>()));
  TM_ASSIGN(hp.n_heads, r.Int("attention.head_count", std::nullopt));
  TM_ASSIGN(hp.n_kv_heads, r.Int("attention.head_count_kv", hp.n_heads));
  if (hp.n_heads % hp.n_kv_heads != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(file.path().string(), ": metadata key '", r.Key("attention.head_count_kv"),
                     "': ", hp.n_kv_heads, " does not divide the head count ", hp.n_heads));
  }
  TM_ASSIGN(hp.rms_norm_eps, r.Float("attention.layer_norm_rms_epsilon", std::nullopt));
  TM_ASSIGN(hp.rope_theta, r.Float("rope.freq_base", 10000.0f));
  TM_ASSIGN(hp.head_dim, r.Int("attention.key_length", hp.dim / hp.n_heads));
  int32_t value_length = 0;
  TM_ASSIGN(value_length, r.Int("attention.value_length", hp.head_dim));
  const std::string path = file.path().string();
  if (value_length != hp.head_dim) {
    return absl::UnimplementedError(
        absl::StrCat(path, ": metadata key '", r.Key("attention.value_length"), "': ", value_length,
                     " differs from the key length ", hp.head_dim, " (not supported)"));
  }
  int32_t rope_dims = 0;
  TM_ASSIGN(rope_dims, r.Int("rope.dimension_count", hp.head_dim));
  if (rope_dims != hp.head_dim) {
    return absl::UnimplementedError(absl::StrCat(
        path, ": metadata key '", r.Key("rope.dimension_count"), "': ", rope_dims,
        " differs from the head dim ", hp.head_dim, " (partial rotary is not supported)"));
  }
  if (const GgufValue* scaling = file.Find(r.Key("rope.scaling.type"))) {
    const bool linear = scaling->type == GgufType::kString && scaling->s == "linear";
    if (!linear && (scaling->type != GgufType::kString || scaling->s != "none")) {
      return absl::UnimplementedError(absl::StrCat(
          path, ": metadata key '", r.Key("rope.scaling.type"), "': RoPE scaling '",
          scaling->AsText().value_or("?"), "' is not supported (none and linear are)"));
    }
    // As llama.cpp: linear with no factor (or 0) scales nothing.
    float factor = 0.0f;
    if (linear) TM_ASSIGN(factor, r.Float("rope.scaling.factor", 0.0f));
    if (factor != 0.0f) hp.rope_linear_factor = factor;
    if (!(hp.rope_linear_factor >= 1.0f) || !std::isfinite(hp.rope_linear_factor)) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": metadata key '",
                                                     r.Key("rope.scaling.factor"), "': ", factor,
                                                     " is not a finite number >= 1"));
    }
  }
  return hp;
}

// Gemma 3's attention, as llama.cpp reads it: sliding window (absent: every
// layer global), its layer pattern (default 6: five local, one global), the
// local RoPE base (default 10000), the query scale (1/sqrt(head_dim), except
// the 62-layer 27B's dim / heads, which is its query_pre_attn_scalar).
// Final logit soft-capping (Gemma 2's) is refused.
absl::Status ReadGemma3Hyperparams(const GgufFile& file, devices::ModelHyperparams* hp) {
  const HyperparamReader r(file, "gemma3.");
  const std::string path = file.path().string();
  if (file.Find(r.Key("attention.sliding_window")) != nullptr) {
    TM_ASSIGN(hp->sliding_window, r.Int("attention.sliding_window", std::nullopt));
    TM_ASSIGN(hp->sliding_window_pattern, r.Int("attention.sliding_window_pattern", 6));
    TM_ASSIGN(hp->rope_theta_local, r.Float("rope.freq_base_swa", 10000.0f));
  }
  hp->query_pre_attn_scalar = hp->n_layers == 62 ? static_cast<float>(hp->dim / hp->n_heads)
                                                 : static_cast<float>(hp->head_dim);
  float softcap = 0.0f;
  TM_ASSIGN(softcap, r.Float("final_logit_softcapping", 0.0f));
  if (softcap != 0.0f) {
    return absl::UnimplementedError(absl::StrCat(path, ": metadata key '",
                                                 r.Key("final_logit_softcapping"),
                                                 "': logit soft-capping is not supported"));
  }
  return absl::OkStatus();
}

// Mixture of experts, as llama.cpp reads it: <arch>.expert_count (absent or
// 0: dense; qwen3moe needs it), expert_used_count, and for qwen3moe the
// experts' own size expert_feed_forward_length. llama.cpp renormalises the
// top-k weights of both families.
absl::Status ReadExpertHyperparams(const GgufFile& file, const std::string& arch,
                                   devices::ModelHyperparams* hp) {
  const HyperparamReader r(file, arch + ".");
  const std::string path = file.path().string();
  const GgufValue* count = file.Find(r.Key("expert_count"));
  const bool moe = count != nullptr && count->AsInt().value_or(1) != 0;
  if (!moe) {
    if (arch == "qwen3moe") {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": metadata key '", r.Key("expert_count"), "' is missing"));
    }
    return absl::OkStatus();
  }
  TM_ASSIGN(hp->n_experts, r.Int("expert_count", std::nullopt));
  TM_ASSIGN(hp->n_experts_used, r.Int("expert_used_count", std::nullopt));
  if (arch == "qwen3moe") {
    TM_ASSIGN(hp->ffn_dim, r.Int("expert_feed_forward_length", hp->ffn_dim));
  }
  if (hp->n_experts > 1024 || hp->n_experts_used > hp->n_experts) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": ", hp->n_experts_used, " experts used of ", hp->n_experts, " (keys '",
                     r.Key("expert_used_count"), "', '", r.Key("expert_count"),
                     "'): expected at most 1024 experts and no more used than there are"));
  }
  hp->expert_weights_norm = true;
  return absl::OkStatus();
}

// ggml type id -> weight type, kUnimplemented for types executors lack.
absl::StatusOr<TensorType> WeightType(const GgufFile& file, const GgufTensorInfo& info) {
  switch (info.ggml_type) {
    case 0:
      return TensorType::kF32;
    case 1:
      return TensorType::kF16;
    case 2:
      return TensorType::kQ4_0;
    case 8:
      return TensorType::kQ8_0;
    case 12:
      return TensorType::kQ4_K;
    case 13:
      return TensorType::kQ5_K;
    case 14:
      return TensorType::kQ6_K;
    case 30:
      return TensorType::kBF16;
    default:
      return absl::UnimplementedError(
          absl::StrCat(file.path().string(), ": tensor '", info.name, "': ggml type ",
                       GgmlType(info.ggml_type).name,
                       " is not supported (f32, f16, bf16, q8_0, q4_0, q4_k, q5_k, q6_k are)"));
  }
}

absl::StatusOr<LoadedModel> ModelFromGguf(const GgufFile& file) {
  const std::string path = file.path().string();
  const GgufValue* arch_value = file.Find("general.architecture");
  if (arch_value == nullptr || arch_value->type != GgufType::kString) {
    return absl::InvalidArgumentError(absl::StrCat(path,
                                                   ": metadata key 'general.architecture' is ",
                                                   arch_value ? "not a string" : "missing"));
  }
  const std::string& arch = arch_value->s;
  LoadedModel model;
  devices::ModelSpec& spec = model.spec;
  if (arch == "llama") {
    spec.arch = Architecture::kLlama;
  } else if (arch == "qwen2") {
    spec.arch = Architecture::kQwen2;
  } else if (arch == "qwen3") {
    spec.arch = Architecture::kQwen3;
  } else if (arch == "gemma3") {
    spec.arch = Architecture::kGemma3;
  } else if (arch == "qwen3moe") {
    spec.arch = Architecture::kQwen3Moe;
  } else {
    return absl::UnimplementedError(
        absl::StrCat(path, ": architecture '", arch,
                     "' is not supported (llama, qwen2, qwen3, gemma3, qwen3moe are)"));
  }
  TM_ASSIGN(spec.hp, ReadHyperparams(file, arch));
  if (spec.arch == Architecture::kLlama || spec.arch == Architecture::kQwen3Moe) {
    if (absl::Status s = ReadExpertHyperparams(file, arch, &spec.hp); !s.ok()) return s;
  }
  if (spec.arch == Architecture::kLlama && file.Find("llama.attention.sliding_window")) {
    // Mistral's window over every layer. llama.cpp's converter writes no
    // such key for llama (and llama.cpp ignores it); tokenmill's synth does.
    const HyperparamReader r(file, "llama.");
    TM_ASSIGN(spec.hp.sliding_window, r.Int("attention.sliding_window", std::nullopt));
    spec.hp.sliding_window_pattern = 0;
    spec.hp.rope_theta_local = spec.hp.rope_theta;
  }
  if (spec.arch == Architecture::kGemma3) {
    if (absl::Status s = ReadGemma3Hyperparams(file, &spec.hp); !s.ok()) return s;
  }
  // GGUF llama files have their q/k rows permuted for adjacent pairs; qwen
  // files keep Hugging Face's order.
  spec.hp.rope_style = spec.arch == Architecture::kLlama ? devices::RopeStyle::kAdjacentPairs
                                                         : devices::RopeStyle::kHalves;
  TM_ASSIGN(model.tokenizer, TokenizerFromGguf(file));

  const GgufTensorInfo* embedding = file.FindTensor("token_embd.weight");
  if (!model.tokenizer.tokens.empty()) {
    if (model.tokenizer.tokens.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": token list too long"));
    }
    spec.hp.vocab_size = static_cast<int32_t>(model.tokenizer.tokens.size());
  } else if (embedding != nullptr && embedding->ne.size() == 2 &&
             embedding->ne[1] <= static_cast<uint64_t>(std::numeric_limits<int32_t>::max())) {
    spec.hp.vocab_size = static_cast<int32_t>(embedding->ne[1]);
  }
  if (absl::Status s = ValidateHyperparams(spec.hp, path); !s.ok()) return s;

  LayoutOptions layout;
  layout.output = file.FindTensor("output.weight") != nullptr;
  layout.rope_factors = file.FindTensor("rope_freqs.weight") != nullptr;
  layout.qkv_bias =
      spec.arch == Architecture::kQwen2 || file.FindTensor("blk.0.attn_q.bias") != nullptr;
  layout.qk_norm = spec.arch == Architecture::kQwen3 || spec.arch == Architecture::kGemma3 ||
                   spec.arch == Architecture::kQwen3Moe;
  layout.post_norms = spec.arch == Architecture::kGemma3;
  if (spec.hp.n_experts > 0) {
    layout.experts = spec.arch == Architecture::kQwen3Moe ? LayoutOptions::Experts::kQwen3Moe
                                                          : LayoutOptions::Experts::kMixtral;
  }
  auto backing = std::make_shared<ModelBacking>();
  backing->files.push_back(file.mapping());
  absl::flat_hash_set<std::string> used;
  for (const TensorSlot& slot : ModelTensorSlots(layout, &spec)) {
    const GgufTensorInfo* info = file.FindTensor(slot.gguf_name);
    if (info == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": tensor '", slot.gguf_name, "' is missing"));
    }
    SourceTensor src;
    src.name = info->name;
    TM_ASSIGN(src.type, WeightType(file, *info));
    src.shape = info->Shape();
    src.data = info->data;
    src.bytes = info->bytes;
    if (absl::Status s = BindTensor(slot, src, path, backing.get()); !s.ok()) return s;
    used.insert(info->name);
  }
  for (const GgufTensorInfo& info : file.tensors()) {
    if (!used.contains(info.name)) {
      return absl::UnimplementedError(absl::StrCat(path, ": tensor '", info.name,
                                                   "' is not part of the ", arch,
                                                   " architecture as tokenmill supports it"));
    }
  }
  if (!layout.output) {
    spec.output = spec.token_embedding;
    spec.tied_embeddings = true;
  }
  model.metadata = MetadataText(file.metadata());
  const GgufValue* name = file.Find("general.name");
  spec.name =
      name != nullptr && name->type == GgufType::kString ? name->s : file.path().stem().string();
  model.metadata["general.name"] = spec.name;
  spec.backing = std::move(backing);
  model.format = "gguf";
  model.path = file.path();
  return model;
}

}  // namespace

absl::StatusOr<LoadedModel> LoadGgufModel(const std::filesystem::path& path) {
  auto file = GgufFile::Open(path);
  if (!file.ok()) return file.status();
  return ModelFromGguf(**file);
}

std::map<std::string, std::string> MetadataText(
    const std::vector<std::pair<std::string, GgufValue>>& metadata) {
  std::map<std::string, std::string> text;
  for (const auto& [key, value] : metadata) {
    if (std::optional<std::string> t = value.AsText()) text[key] = *std::move(t);
  }
  return text;
}

}  // namespace tokenmill::model
