#include "runtime/model/synth.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "devices/cpu/kernels.h"
#include "runtime/model/gguf_loader.h"
#include "runtime/model/gguf_writer.h"
#include "runtime/model/mapped_file.h"
#include "runtime/model/model_layout.h"
#include "runtime/model/synth_vocab.h"

namespace tokenmill::model {
namespace {

using devices::Architecture;
using devices::TensorType;
using Metadata = std::vector<std::pair<std::string, GgufValue>>;

// Llama 3.1 RoPE scaling constants, written as rope_freqs.weight.
constexpr float kLlama3Factor = 8.0f;
constexpr float kLlama3LowFreqFactor = 1.0f;
constexpr float kLlama3HighFreqFactor = 4.0f;
constexpr float kLlama3OriginalContext = 8192.0f;

uint64_t Fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Uniform in [-1, 1): 24 random bits, exact in float on every machine.
float UniformSigned(uint64_t& state) {
  const auto bits = static_cast<uint32_t>(SplitMix64(state) >> 40);
  return static_cast<float>(bits) * (2.0f / 16777216.0f) - 1.0f;
}

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

TensorType SlotType(const SynthOptions& options, const TensorSlot& slot) {
  if ((slot.role != TensorRole::kEmbedding && slot.role != TensorRole::kMatrix &&
       slot.role != TensorRole::kExperts) ||
      EndsWith(slot.gguf_name, "ffn_gate_inp.weight")) {
    return TensorType::kF32;
  }
  if (options.k_mix &&
      (EndsWith(slot.gguf_name, "attn_v.weight") || EndsWith(slot.gguf_name, "ffn_down.weight") ||
       slot.gguf_name == "output.weight")) {
    return TensorType::kQ6_K;
  }
  return options.weight_type;
}

// Rows of all but the last dimension (experts' matrices stacked).
int64_t SlotRows(const TensorSlot& slot) {
  int64_t rows = 1;
  for (size_t i = 0; i + 1 < slot.shape.size(); ++i) rows *= slot.shape[i];
  return rows;
}

// Row `row` of a slot's tensor as floats. Every row has its own PRNG stream,
// so rows can be made in any order and the bytes never depend on it.
void GenerateRow(const SynthOptions& options, const TensorSlot& slot, int64_t row, float* out) {
  const int64_t cols = slot.shape.back();
  if (slot.role == TensorRole::kRopeFactors) {
    const double low_wavelen = kLlama3OriginalContext / kLlama3LowFreqFactor;
    const double high_wavelen = kLlama3OriginalContext / kLlama3HighFreqFactor;
    for (int64_t i = 0; i < cols; ++i) {
      const double freq = std::pow(static_cast<double>(options.rope_theta),
                                   -2.0 * static_cast<double>(i) / (2.0 * cols));
      const double wavelen = 2.0 * M_PI / freq;
      double factor = 1.0;
      if (wavelen > low_wavelen) {
        factor = kLlama3Factor;
      } else if (wavelen >= high_wavelen) {
        const double smooth = (kLlama3OriginalContext / wavelen - kLlama3LowFreqFactor) /
                              (kLlama3HighFreqFactor - kLlama3LowFreqFactor);
        factor = 1.0 / ((1.0 - smooth) / kLlama3Factor + smooth);
      }
      out[i] = static_cast<float>(factor);
    }
    return;
  }
  uint64_t state = options.seed * 0xD1B54A32D192ED03ull ^ Fnv1a(slot.gguf_name) ^
                   (static_cast<uint64_t>(row) + 1) * 0x9E3779B97F4A7C15ull;
  SplitMix64(state);
  float scale = 1.0f;
  float offset = 0.0f;
  switch (slot.role) {
    case TensorRole::kEmbedding:
      break;
    case TensorRole::kMatrix:
    case TensorRole::kExperts:
      // Uniform in [-a, a] has variance a^2/3: activations keep unit scale.
      scale = std::sqrt(3.0f / static_cast<float>(cols));
      break;
    case TensorRole::kNorm:
      scale = 0.05f;
      offset = 1.0f;
      break;
    case TensorRole::kBias:
      scale = 0.1f;
      break;
    case TensorRole::kRopeFactors:
      break;
  }
  for (int64_t i = 0; i < cols; ++i) out[i] = offset + scale * UniformSigned(state);
}

void EncodeRow(TensorType type, const float* x, int64_t n, uint8_t* out) {
  switch (type) {
    case TensorType::kF32:
      std::memcpy(out, x, static_cast<size_t>(n) * sizeof(float));
      return;
    case TensorType::kF16:
    case TensorType::kBF16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = type == TensorType::kF16 ? devices::cpu::FloatToHalf(x[i])
                                                    : devices::cpu::FloatToBf16(x[i]);
        std::memcpy(out + 2 * i, &h, sizeof(h));
      }
      return;
    case TensorType::kQ8_0:
    case TensorType::kQ4_0:
    case TensorType::kQ4_K:
    case TensorType::kQ5_K:
    case TensorType::kQ6_K:
      devices::cpu::QuantizeRow(type, x, n, out);
      return;
  }
}

uint32_t FileType(TensorType type, bool k_mix) {
  // llama.cpp's general.file_type (LLAMA_FTYPE_*): a uniform weight type, or
  // Q4_K_M / Q5_K_M for the K mix.
  switch (type) {
    case TensorType::kQ4_K:
      return k_mix ? 15 : 14;
    case TensorType::kQ5_K:
      return k_mix ? 17 : 16;
    case TensorType::kQ6_K:
      return 18;
    case TensorType::kF32:
      return 0;
    case TensorType::kF16:
      return 1;
    case TensorType::kQ4_0:
      return 2;
    case TensorType::kQ8_0:
      return 7;
    case TensorType::kBF16:
      return 32;
  }
  return 0;
}

Metadata SynthMetadata(const SynthOptions& options, const devices::ModelHyperparams& hp,
                       const tokenizer::TokenizerSpec& vocab) {
  const std::string arch = devices::ArchitectureName(options.arch);
  Metadata m;
  auto add = [&](std::string key, GgufValue value) {
    m.emplace_back(std::move(key), std::move(value));
  };
  auto u32 = [](int32_t v) { return GgufValue::U32(static_cast<uint32_t>(v)); };
  add("general.architecture", GgufValue::String(arch));
  add("general.name", GgufValue::String(options.name));
  add("general.alignment", GgufValue::U32(kGgufDefaultAlignment));
  add("general.file_type", GgufValue::U32(FileType(options.weight_type, options.k_mix)));
  add(arch + ".vocab_size", u32(hp.vocab_size));
  add(arch + ".context_length", u32(hp.context_length));
  add(arch + ".embedding_length", u32(hp.dim));
  add(arch + ".block_count", u32(hp.n_layers));
  add(arch + ".feed_forward_length", u32(hp.ffn_dim));
  add(arch + ".attention.head_count", u32(hp.n_heads));
  add(arch + ".attention.head_count_kv", u32(hp.n_kv_heads));
  add(arch + ".attention.key_length", u32(hp.head_dim));
  add(arch + ".attention.value_length", u32(hp.head_dim));
  add(arch + ".attention.layer_norm_rms_epsilon", GgufValue::F32(hp.rms_norm_eps));
  add(arch + ".rope.freq_base", GgufValue::F32(hp.rope_theta));
  add(arch + ".rope.dimension_count", u32(hp.head_dim));
  if (hp.rope_linear_factor != 1.0f) {
    add(arch + ".rope.scaling.type", GgufValue::String("linear"));
    add(arch + ".rope.scaling.factor", GgufValue::F32(hp.rope_linear_factor));
  }
  if (hp.n_experts > 0) {
    add(arch + ".expert_count", u32(hp.n_experts));
    add(arch + ".expert_used_count", u32(hp.n_experts_used));
    if (options.arch == Architecture::kQwen3Moe) {
      add(arch + ".expert_feed_forward_length", u32(hp.ffn_dim));
    }
  }
  if (hp.sliding_window > 0 && options.arch == Architecture::kLlama) {
    // Mistral's window: llama.cpp writes and reads no such key for llama.
    add(arch + ".attention.sliding_window", u32(hp.sliding_window));
  } else if (hp.sliding_window > 0) {
    // As llama.cpp's converter writes Gemma 3: the window only; the pattern
    // and local base when they differ from llama.cpp's defaults (6, 10000).
    add(arch + ".attention.sliding_window", u32(hp.sliding_window));
    if (hp.sliding_window_pattern != 6) {
      add(arch + ".attention.sliding_window_pattern", u32(hp.sliding_window_pattern));
    }
    if (hp.rope_theta_local != 10000.0f) {
      add(arch + ".rope.freq_base_swa", GgufValue::F32(hp.rope_theta_local));
    }
  }
  add("tokenizer.ggml.model", GgufValue::String("gpt2"));
  add("tokenizer.ggml.pre",
      GgufValue::String(options.arch == Architecture::kLlama ? "llama-bpe" : "qwen2"));
  add("tokenizer.ggml.tokens", GgufValue::StringArray(vocab.tokens));
  std::vector<int64_t> types;
  types.reserve(vocab.token_types.size());
  for (tokenizer::TokenType t : vocab.token_types) types.push_back(static_cast<int64_t>(t));
  add("tokenizer.ggml.token_type", GgufValue::IntArray(GgufType::kI32, std::move(types)));
  add("tokenizer.ggml.merges", GgufValue::StringArray(vocab.merges));
  add("tokenizer.ggml.bos_token_id", u32(*vocab.bos_id));
  add("tokenizer.ggml.eos_token_id", u32(*vocab.eos_id));
  add("tokenizer.ggml.add_bos_token", GgufValue::Bool(vocab.add_bos));
  add("tokenizer.ggml.add_eos_token", GgufValue::Bool(vocab.add_eos));
  add("tokenizer.chat_template", GgufValue::String(vocab.chat_template));
  return m;
}

// Fills everything but tensor data: hyperparameters, tensor names, types and
// shapes, tokenizer and metadata. `slots` point into model->spec.
absl::Status PlanModel(const SynthOptions& options, LoadedModel* model,
                       std::vector<TensorSlot>* slots, Metadata* metadata) {
  if (absl::Status s = ValidateSynthOptions(options); !s.ok()) return s;
  devices::ModelSpec& spec = model->spec;
  spec.name = options.name;
  spec.arch = options.arch;
  devices::ModelHyperparams& hp = spec.hp;
  hp.dim = options.dim;
  hp.n_layers = options.n_layers;
  hp.n_heads = options.n_heads;
  hp.n_kv_heads = options.n_kv_heads;
  hp.head_dim = options.head_dim > 0 ? options.head_dim : options.dim / options.n_heads;
  hp.ffn_dim = options.ffn_dim;
  hp.vocab_size = options.vocab_size;
  hp.context_length = options.context_length;
  hp.rms_norm_eps = 1e-5f;
  hp.rope_theta = options.rope_theta;
  hp.rope_linear_factor = options.rope_linear_factor;
  if (options.arch == Architecture::kGemma3) {
    hp.rms_norm_eps = 1e-6f;
    hp.query_pre_attn_scalar = static_cast<float>(hp.head_dim);
    if (options.sliding_window > 0) {
      hp.sliding_window = options.sliding_window;
      hp.sliding_window_pattern = options.sliding_window_pattern;
      hp.rope_theta_local = options.rope_theta_local;
    }
  }
  if (options.arch == Architecture::kLlama && options.sliding_window > 0) {
    hp.sliding_window = options.sliding_window;
    hp.sliding_window_pattern = 0;
    hp.rope_theta_local = options.rope_theta;
  }
  hp.n_experts = options.n_experts;
  hp.n_experts_used = options.n_experts_used;
  const bool llama = options.arch == Architecture::kLlama;
  hp.rope_style = llama ? devices::RopeStyle::kAdjacentPairs : devices::RopeStyle::kHalves;
  // Qwen3 uses Qwen2's tokenizer (GGUF tokenizer.ggml.pre "qwen2").
  auto vocab = BuildSynthVocabulary(
      options.vocab_size,
      llama ? tokenizer::PreTokenizer::kLlama3 : tokenizer::PreTokenizer::kQwen2,
      options.extra_control_tokens);
  if (!vocab.ok()) return vocab.status();
  model->tokenizer = *std::move(vocab);
  if (options.chat_template) model->tokenizer.chat_template = *options.chat_template;

  LayoutOptions layout;
  layout.output = !options.tied_embeddings;
  layout.rope_factors = options.llama3_rope_scaling;
  layout.qkv_bias = options.arch == Architecture::kQwen2;
  layout.qk_norm = options.arch == Architecture::kQwen3 || options.arch == Architecture::kGemma3 ||
                   options.arch == Architecture::kQwen3Moe;
  layout.post_norms = options.arch == Architecture::kGemma3;
  if (options.n_experts > 0) {
    layout.experts = options.arch == Architecture::kQwen3Moe ? LayoutOptions::Experts::kQwen3Moe
                                                             : LayoutOptions::Experts::kMixtral;
  }
  *slots = ModelTensorSlots(layout, &spec);
  for (const TensorSlot& slot : *slots) {
    slot.view->name = slot.gguf_name;
    slot.view->type = SlotType(options, slot);
    slot.view->shape = slot.shape;
    slot.view->bytes =
        devices::TensorBytes(slot.view->type, static_cast<uint64_t>(slot.view->elements()));
  }
  spec.tied_embeddings = options.tied_embeddings;
  *metadata = SynthMetadata(options, hp, model->tokenizer);
  model->metadata = MetadataText(*metadata);
  model->format = "gguf";
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateSynthOptions(const SynthOptions& o) {
  auto bad = [](auto&&... what) {
    return absl::InvalidArgumentError(absl::StrCat("synthetic model: ", what...));
  };
  if (o.dim <= 0 || o.dim % 32 != 0)
    return bad("dim ", o.dim, " must be a positive multiple of 32");
  if (o.n_layers <= 0 || o.n_layers > 1024) return bad("n_layers ", o.n_layers, " must be 1..1024");
  if (o.head_dim < 0 || o.head_dim % 2 != 0 || o.head_dim > 1024) {
    return bad("head_dim ", o.head_dim, " must be 0 (dim / n_heads) or even, at most 1024");
  }
  if (o.head_dim == 0 &&
      (o.n_heads <= 0 || o.dim % o.n_heads != 0 || (o.dim / o.n_heads) % 2 != 0)) {
    return bad("n_heads ", o.n_heads, " must divide dim ", o.dim, " into even head sizes");
  }
  if (o.n_heads <= 0 || o.n_heads > 1024 || (o.head_dim * o.n_heads) % 32 != 0) {
    return bad("n_heads ", o.n_heads, " x head_dim ", o.head_dim,
               " must be a multiple of 32 (1..1024 heads)");
  }
  if (o.n_kv_heads <= 0 || o.n_heads % o.n_kv_heads != 0) {
    return bad("n_kv_heads ", o.n_kv_heads, " must divide n_heads ", o.n_heads);
  }
  if (o.ffn_dim <= 0 || o.ffn_dim % 32 != 0) {
    return bad("ffn_dim ", o.ffn_dim, " must be a positive multiple of 32");
  }
  if (o.vocab_size < 256 + kSynthSpecialCount + 1 || o.vocab_size > (1 << 20)) {
    return bad("vocab_size ", o.vocab_size, " must be between ", 256 + kSynthSpecialCount + 1,
               " and 1048576");
  }
  if (o.context_length <= 0) return bad("context_length must be positive");
  if (!(o.rope_theta > 1.0f) || !std::isfinite(o.rope_theta)) {
    return bad("rope_theta must be a finite number above 1");
  }
  switch (o.weight_type) {
    case TensorType::kF32:
    case TensorType::kF16:
    case TensorType::kBF16:
    case TensorType::kQ8_0:
    case TensorType::kQ4_0:
    case TensorType::kQ4_K:
    case TensorType::kQ5_K:
    case TensorType::kQ6_K:
      break;
    default:
      return bad("unknown weight type ", static_cast<uint32_t>(o.weight_type));
  }
  if (o.k_mix && o.weight_type != TensorType::kQ4_K && o.weight_type != TensorType::kQ5_K) {
    return bad("the K mix takes weight type q4_k or q5_k");
  }
  const int64_t block =
      o.k_mix ? 256 : static_cast<int64_t>(devices::TensorTypeBlockElements(o.weight_type));
  const int64_t q_dim = int64_t{o.n_heads} * (o.head_dim > 0 ? o.head_dim : o.dim / o.n_heads);
  if (o.dim % block != 0 || o.ffn_dim % block != 0 || q_dim % block != 0) {
    return bad("dim ", o.dim, ", ffn_dim ", o.ffn_dim, " and heads x head_dim ", q_dim,
               " must be multiples of ", block, " for ", devices::TensorTypeName(o.weight_type));
  }
  if (o.sliding_window < 0 ||
      (o.sliding_window > 0 && o.arch != Architecture::kGemma3 && o.arch != Architecture::kLlama)) {
    return bad("sliding_window ", o.sliding_window, " must be 0, or positive for gemma3 or llama");
  }
  if (o.n_experts < 0 || o.n_experts > 1024 ||
      (o.n_experts > 0 && (o.n_experts_used < 1 || o.n_experts_used > o.n_experts)) ||
      (o.n_experts == 0 && o.n_experts_used != 0)) {
    return bad(o.n_experts, " experts, ", o.n_experts_used,
               " used: expected 1..1024 experts with 1..experts used, or 0 and 0");
  }
  if ((o.arch == Architecture::kQwen3Moe) != (o.n_experts > 0) && o.arch != Architecture::kLlama) {
    return bad(devices::ArchitectureName(o.arch), o.n_experts > 0
                                                      ? " has no experts (llama and qwen3moe have)"
                                                      : " needs experts (n_experts > 0)");
  }
  if (o.sliding_window > 0 && o.arch == Architecture::kGemma3 &&
      (o.sliding_window_pattern <= 0 || !(o.rope_theta_local > 1.0f) ||
       !std::isfinite(o.rope_theta_local))) {
    return bad("a sliding window needs a positive layer pattern and a local rope base above 1");
  }
  if (!(o.rope_linear_factor >= 1.0f) || !std::isfinite(o.rope_linear_factor)) {
    return bad("rope_linear_factor must be a finite number >= 1");
  }
  if (o.rope_linear_factor != 1.0f &&
      (o.llama3_rope_scaling || (o.arch == Architecture::kLlama && o.sliding_window > 0))) {
    return bad(
        "linear RoPE scaling cannot be combined with Llama 3 scaling or a window on "
        "every layer");
  }
  if (o.name.empty()) return bad("name must not be empty");
  return absl::OkStatus();
}

absl::StatusOr<LoadedModel> SynthesizeModel(const SynthOptions& options) {
  LoadedModel model;
  std::vector<TensorSlot> slots;
  Metadata metadata;
  if (absl::Status s = PlanModel(options, &model, &slots, &metadata); !s.ok()) return s;
  auto backing = std::make_shared<ModelBacking>();
  std::vector<float> row;
  for (const TensorSlot& slot : slots) {
    devices::TensorView& view = *slot.view;
    uint8_t* data = backing->NewBuffer(view.bytes);
    row.resize(static_cast<size_t>(view.cols()));
    const size_t row_bytes = view.row_bytes();
    for (int64_t r = 0; r < SlotRows(slot); ++r) {
      GenerateRow(options, slot, r, row.data());
      EncodeRow(view.type, row.data(), view.cols(), data + static_cast<size_t>(r) * row_bytes);
    }
    view.data = data;
  }
  if (options.tied_embeddings) model.spec.output = model.spec.token_embedding;
  model.spec.backing = std::move(backing);
  return model;
}

absl::Status WriteSynthGguf(const SynthOptions& options, const std::filesystem::path& path) {
  LoadedModel model;
  std::vector<TensorSlot> slots;
  Metadata metadata;
  if (absl::Status s = PlanModel(options, &model, &slots, &metadata); !s.ok()) return s;
  GgufWriter writer(kGgufDefaultAlignment);
  for (auto& [key, value] : metadata) writer.AddMetadata(key, std::move(value));
  for (const TensorSlot& slot : slots) {
    writer.AddTensor(slot.gguf_name, static_cast<uint32_t>(slot.view->type), slot.shape);
  }
  // Rows are generated in chunks of about 4 MiB: memory stays flat whatever
  // the model size.
  constexpr size_t kChunkBytes = 4 << 20;
  std::vector<float> row;
  std::vector<uint8_t> chunk;
  return writer.Write(path, [&](size_t index, GgufTensorSink& sink) -> absl::Status {
    const TensorSlot& slot = slots[index];
    const devices::TensorView& view = *slot.view;
    const size_t row_bytes = view.row_bytes();
    const int64_t rows_per_chunk =
        std::max<int64_t>(1, static_cast<int64_t>(kChunkBytes / std::max<size_t>(row_bytes, 1)));
    row.resize(static_cast<size_t>(view.cols()));
    const int64_t rows = SlotRows(slot);
    for (int64_t begin = 0; begin < rows; begin += rows_per_chunk) {
      const int64_t end = std::min(rows, begin + rows_per_chunk);
      chunk.resize(static_cast<size_t>(end - begin) * row_bytes);
      for (int64_t r = begin; r < end; ++r) {
        GenerateRow(options, slot, r, row.data());
        EncodeRow(view.type, row.data(), view.cols(),
                  chunk.data() + static_cast<size_t>(r - begin) * row_bytes);
      }
      if (absl::Status s = sink.Append(chunk.data(), chunk.size()); !s.ok()) return s;
    }
    return absl::OkStatus();
  });
}

}  // namespace tokenmill::model
