#include "devices/model_spec.h"

#include <cmath>
#include <numbers>
#include <string>
#include <vector>

#include "devices/kv_layout.h"

namespace tokenmill::devices {

const char* TensorTypeName(TensorType type) {
  switch (type) {
    case TensorType::kF32:
      return "f32";
    case TensorType::kF16:
      return "f16";
    case TensorType::kQ4_0:
      return "q4_0";
    case TensorType::kQ8_0:
      return "q8_0";
    case TensorType::kQ4_K:
      return "q4_k";
    case TensorType::kQ5_K:
      return "q5_k";
    case TensorType::kQ6_K:
      return "q6_k";
    case TensorType::kBF16:
      return "bf16";
  }
  return "unknown";
}

size_t TensorTypeBlockElements(TensorType type) {
  switch (type) {
    case TensorType::kQ8_0:
    case TensorType::kQ4_0:
      return 32;
    case TensorType::kQ4_K:
    case TensorType::kQ5_K:
    case TensorType::kQ6_K:
      return 256;
    default:
      return 1;
  }
}

size_t TensorTypeBlockBytes(TensorType type) {
  switch (type) {
    case TensorType::kF32:
      return 4;
    case TensorType::kF16:
      return 2;
    case TensorType::kBF16:
      return 2;
    case TensorType::kQ8_0:
      return 2 + 32;
    case TensorType::kQ4_0:
      return 2 + 16;
    case TensorType::kQ4_K:
      return 2 + 2 + 12 + 128;
    case TensorType::kQ5_K:
      return 2 + 2 + 12 + 32 + 128;
    case TensorType::kQ6_K:
      return 128 + 64 + 16 + 2;
  }
  return 0;
}

size_t TensorBytes(TensorType type, uint64_t elements) {
  return elements / TensorTypeBlockElements(type) * TensorTypeBlockBytes(type);
}

int64_t TensorView::elements() const {
  if (shape.empty()) return 0;
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

const char* ArchitectureName(Architecture arch) {
  switch (arch) {
    case Architecture::kLlama:
      return "llama";
    case Architecture::kQwen2:
      return "qwen2";
    case Architecture::kQwen3:
      return "qwen3";
    case Architecture::kGemma3:
      return "gemma3";
    case Architecture::kQwen3Moe:
      return "qwen3moe";
  }
  return "unknown";
}

bool IsLocalLayer(const ModelHyperparams& hp, int32_t layer) {
  return hp.sliding_window > 0 &&
         (hp.sliding_window_pattern == 0 ||
          layer % hp.sliding_window_pattern != hp.sliding_window_pattern - 1);
}

int32_t LayerWindow(const ModelHyperparams& hp, int32_t layer) {
  return IsLocalLayer(hp, layer) ? hp.sliding_window : 0;
}

TensorView ExpertSlice(const TensorView& stacked, int64_t e) {
  TensorView slice;
  slice.name = stacked.name;
  slice.type = stacked.type;
  slice.shape = {stacked.shape[1], stacked.shape[2]};
  slice.bytes = TensorBytes(stacked.type, static_cast<uint64_t>(slice.shape[0] * slice.shape[1]));
  slice.data = static_cast<const uint8_t*>(stacked.data) + static_cast<size_t>(e) * slice.bytes;
  return slice;
}

float AttentionScale(const ModelHyperparams& hp) {
  const float scalar =
      hp.query_pre_attn_scalar > 0.0f ? hp.query_pre_attn_scalar : static_cast<float>(hp.head_dim);
  return 1.0f / std::sqrt(scalar);
}

namespace {

std::string Join(const std::vector<int64_t>& v) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + std::to_string(v[i]);
  return out;
}

// What is wrong with tensor `t` in role `role`, or "".
std::string TensorProblem(const TensorView& t, const std::string& role,
                          const std::vector<int64_t>& shape, bool f32_only) {
  if (t.empty()) return role + " is missing";
  const std::string name = t.name.empty() ? role : role + " (" + t.name + ")";
  if (f32_only && t.type != TensorType::kF32) {
    return name + " is " + TensorTypeName(t.type) + ", expected f32";
  }
  if (t.shape != shape) {
    return name + " has shape {" + Join(t.shape) + "}, expected {" + Join(shape) + "}";
  }
  const size_t block = TensorTypeBlockElements(t.type);
  if (block == 0 || shape.back() % static_cast<int64_t>(block) != 0) {
    return name + ": " + std::to_string(shape.back()) + " columns do not fill " +
           TensorTypeName(t.type) + " blocks";
  }
  const uint64_t need = TensorBytes(t.type, static_cast<uint64_t>(t.elements()));
  if (t.bytes < need) {
    return name + ": " + std::to_string(t.bytes) + " bytes, " + std::to_string(need) + " needed";
  }
  return "";
}

}  // namespace

std::string HyperparamsProblem(const ModelHyperparams& hp) {
  if (hp.dim <= 0 || hp.n_layers <= 0 || hp.n_heads <= 0 || hp.n_kv_heads <= 0 ||
      hp.head_dim <= 0 || hp.ffn_dim <= 0 || hp.vocab_size <= 0 || hp.context_length <= 0) {
    return "model hyperparameters must be positive (dim, layers, heads, kv heads, head_dim, ffn, "
           "vocab, context)";
  }
  if (hp.n_heads % hp.n_kv_heads != 0) {
    return std::to_string(hp.n_heads) + " heads are not a multiple of " +
           std::to_string(hp.n_kv_heads) + " kv heads";
  }
  if (hp.head_dim % 2 != 0) return "head_dim " + std::to_string(hp.head_dim) + " is odd (RoPE)";
  const int64_t dim = hp.dim, q_dim = int64_t{hp.n_heads} * hp.head_dim, ffn = hp.ffn_dim;
  if (dim % 32 != 0 || ffn % 32 != 0 || q_dim % 32 != 0) {
    return "dim " + std::to_string(dim) + ", ffn_dim " + std::to_string(ffn) +
           " and heads x head_dim " + std::to_string(q_dim) + " must be multiples of 32";
  }
  if (!(hp.rms_norm_eps > 0.0f) || !(hp.rope_theta > 0.0f)) {
    return "rms_norm_eps and rope_theta must be positive";
  }
  return "";
}

std::string ModelSpec::Problem() const {
  if (std::string problem = HyperparamsProblem(hp); !problem.empty()) return problem;
  const int64_t dim = hp.dim, q_dim = int64_t{hp.n_heads} * hp.head_dim;
  const int64_t kv_dim = int64_t{hp.n_kv_heads} * hp.head_dim, ffn = hp.ffn_dim;
  if (layers.size() != static_cast<size_t>(hp.n_layers)) {
    return std::to_string(layers.size()) + " layers of weights for " + std::to_string(hp.n_layers) +
           " layers";
  }
  struct Expected {
    const TensorView* t;
    std::string role;
    std::vector<int64_t> shape;
    bool f32_only;
    bool optional;
  };
  const bool moe = hp.n_experts > 0;
  if (hp.n_experts < 0 || hp.n_experts > 1024 || hp.n_experts_used < 0 ||
      (moe && (hp.n_experts_used < 1 || hp.n_experts_used > hp.n_experts)) ||
      (!moe && hp.n_experts_used != 0)) {
    return std::to_string(hp.n_experts) + " experts with " + std::to_string(hp.n_experts_used) +
           " used per token: expected 1..1024 experts and 1..n_experts used, or none of either";
  }
  if (arch == Architecture::kQwen3Moe && !moe) return "qwen3moe needs experts (n_experts > 0)";
  if (moe && arch != Architecture::kLlama && arch != Architecture::kQwen3Moe) {
    return std::string("experts are set, but ") + ArchitectureName(arch) +
           " has none here (llama, as Mixtral, and qwen3moe have)";
  }
  const int64_t n_exp = hp.n_experts;
  std::vector<Expected> expected = {
      {&token_embedding, "token_embedding", {hp.vocab_size, dim}, false, false},
      {&output_norm, "output_norm", {dim}, true, false},
      {&output, "output", {hp.vocab_size, dim}, false, false},
      {&rope_freq_factors, "rope_freq_factors", {hp.head_dim / 2}, true, true},
  };
  for (size_t i = 0; i < layers.size(); ++i) {
    const LayerWeights& w = layers[i];
    const std::string p = "layer " + std::to_string(i) + " ";
    const Expected layer[] = {
        {&w.attn_norm, p + "attn_norm", {dim}, true, false},
        {&w.wq, p + "wq", {q_dim, dim}, false, false},
        {&w.wk, p + "wk", {kv_dim, dim}, false, false},
        {&w.wv, p + "wv", {kv_dim, dim}, false, false},
        {&w.wo, p + "wo", {dim, q_dim}, false, false},
        {&w.ffn_norm, p + "ffn_norm", {dim}, true, false},
        // dense FFN or experts; presence checked below
        {&w.w_gate, p + "w_gate", {ffn, dim}, false, true},
        {&w.w_up, p + "w_up", {ffn, dim}, false, true},
        {&w.w_down, p + "w_down", {dim, ffn}, false, true},
        {&w.router, p + "router", {n_exp, dim}, false, true},
        {&w.gate_exps, p + "gate_exps", {n_exp, ffn, dim}, false, true},
        {&w.up_exps, p + "up_exps", {n_exp, ffn, dim}, false, true},
        {&w.down_exps, p + "down_exps", {n_exp, dim, ffn}, false, true},
        // llama has no biases; qwen2 has all three
        {&w.bq, p + "bq", {q_dim}, true, true},
        {&w.bk, p + "bk", {kv_dim}, true, true},
        {&w.bv, p + "bv", {kv_dim}, true, true},
        // qwen3 and gemma3 only; checked for presence below
        {&w.q_norm, p + "q_norm", {hp.head_dim}, true, true},
        {&w.k_norm, p + "k_norm", {hp.head_dim}, true, true},
        // gemma3 only; checked for presence below
        {&w.attn_post_norm, p + "attn_post_norm", {dim}, true, true},
        {&w.ffn_post_norm, p + "ffn_post_norm", {dim}, true, true},
    };
    expected.insert(expected.end(), std::begin(layer), std::end(layer));
    for (const TensorView* t : {&w.w_gate, &w.w_up, &w.w_down}) {
      if (t->empty() != moe) {
        return p + "dense FFN weight " + (moe ? "is set in a model with experts" : "is missing");
      }
    }
    for (const TensorView* t : {&w.router, &w.gate_exps, &w.up_exps, &w.down_exps}) {
      if (t->empty() == moe) {
        return p + "expert weight " + (moe ? "is missing" : "is set in a model without experts");
      }
    }
    const bool gemma3 = arch == Architecture::kGemma3;
    const bool qk_norm = arch == Architecture::kQwen3 || arch == Architecture::kQwen3Moe || gemma3;
    for (const TensorView* t : {&w.q_norm, &w.k_norm}) {
      if (t->empty() == qk_norm) {
        return p + (t == &w.q_norm ? "q_norm" : "k_norm") +
               (qk_norm
                    ? " is missing (" + std::string(ArchitectureName(arch)) +
                          " normalizes q and k per head)"
                    : " is set, but " + std::string(ArchitectureName(arch)) + " has no q/k norm");
      }
    }
    for (const TensorView* t : {&w.attn_post_norm, &w.ffn_post_norm}) {
      if (t->empty() == gemma3) {
        return p + (t == &w.attn_post_norm ? "attn_post_norm" : "ffn_post_norm") +
               (gemma3 ? " is missing (gemma3 normalizes attention and FFN outputs)"
                       : " is set, but only gemma3 has post norms");
      }
    }
  }
  if (arch != Architecture::kGemma3 && arch != Architecture::kLlama && hp.sliding_window != 0) {
    return std::string("a sliding window is set, but ") + ArchitectureName(arch) +
           " has none here (gemma3 and llama, as Mistral, have)";
  }
  if (hp.sliding_window < 0 || hp.sliding_window_pattern < 0 ||
      (arch == Architecture::kGemma3 && hp.sliding_window > 0 && hp.sliding_window_pattern <= 0)) {
    return "sliding_window " + std::to_string(hp.sliding_window) + " with pattern " +
           std::to_string(hp.sliding_window_pattern) +
           ": the window must be >= 0 and, when set, the pattern positive (gemma3) or 0 (every "
           "layer)";
  }
  if (hp.sliding_window > 0 && !(hp.rope_theta_local > 0.0f)) {
    return "rope_theta_local must be positive when a sliding window is set";
  }
  if (hp.query_pre_attn_scalar < 0.0f) return "query_pre_attn_scalar must not be negative";
  if (!(hp.rope_linear_factor >= 1.0f) || !std::isfinite(hp.rope_linear_factor)) {
    return "rope_linear_factor " + std::to_string(hp.rope_linear_factor) +
           " must be a finite number >= 1";
  }
  if (hp.rope_linear_factor != 1.0f && (hp.rope_scaling.enabled() || !rope_freq_factors.empty())) {
    return "linear RoPE scaling cannot be combined with Llama 3 frequency scaling";
  }
  if (hp.rope_linear_factor != 1.0f && hp.sliding_window > 0 && hp.sliding_window_pattern == 0) {
    return "linear RoPE scaling with a sliding window on every layer is not supported";
  }
  for (const Expected& e : expected) {
    if (e.optional && e.t->empty()) continue;
    if (std::string problem = TensorProblem(*e.t, e.role, e.shape, e.f32_only); !problem.empty()) {
      return problem;
    }
  }
  return "";
}

uint64_t ModelSpec::WeightBytesPerToken() const {
  uint64_t bytes = token_embedding.row_bytes() + output_norm.bytes + output.bytes;
  for (size_t i = 0; i < layers.size(); ++i) {
    const LayerWeights& l = layers[i];
    for (const TensorView* t : {&l.attn_norm, &l.wq, &l.wk, &l.wv, &l.bq, &l.bk, &l.bv, &l.q_norm,
                                &l.k_norm, &l.wo, &l.attn_post_norm, &l.ffn_norm, &l.w_gate,
                                &l.w_up, &l.w_down, &l.ffn_post_norm, &l.router}) {
      bytes += t->bytes;
    }
    bytes += static_cast<uint64_t>(hp.n_experts_used) * ExpertBytes(static_cast<int32_t>(i));
  }
  return bytes;
}

uint64_t ModelSpec::ExpertBytes(int32_t layer) const {
  if (hp.n_experts <= 0) return 0;
  const LayerWeights& l = layers[static_cast<size_t>(layer)];
  return (l.gate_exps.bytes + l.up_exps.bytes + l.down_exps.bytes) /
         static_cast<uint64_t>(hp.n_experts);
}

uint64_t ModelSpec::WeightBytes() const {
  uint64_t bytes = token_embedding.bytes + output_norm.bytes;
  if (!tied_embeddings) bytes += output.bytes;
  for (const auto& l : layers) {
    for (const TensorView* t : {&l.attn_norm,
                                &l.wq,
                                &l.wk,
                                &l.wv,
                                &l.bq,
                                &l.bk,
                                &l.bv,
                                &l.q_norm,
                                &l.k_norm,
                                &l.wo,
                                &l.attn_post_norm,
                                &l.ffn_norm,
                                &l.w_gate,
                                &l.w_up,
                                &l.w_down,
                                &l.ffn_post_norm,
                                &l.router,
                                &l.gate_exps,
                                &l.up_exps,
                                &l.down_exps}) {
      bytes += t->bytes;
    }
  }
  return bytes;
}

void RopeInvFrequencies(const ModelHyperparams& hp, const float* freq_factors, float* inv_freq,
                        bool local) {
  const int32_t half = hp.head_dim / 2;
  const float theta = local ? hp.rope_theta_local : hp.rope_theta;
  const RopeScaling& s = hp.rope_scaling;
  // Wavelengths (in positions) above which a frequency is fully scaled, and
  // below which it is kept as trained; in between the two are blended.
  const double scaled_above = s.original_context / static_cast<double>(s.low_freq_factor);
  const double kept_below = s.original_context / static_cast<double>(s.high_freq_factor);
  for (int32_t i = 0; i < half; ++i) {
    double inv = std::exp(-2.0 * i / hp.head_dim * std::log(static_cast<double>(theta)));
    if (freq_factors != nullptr) {
      inv /= freq_factors[i];
    } else if (s.enabled()) {
      const double wavelen = 2.0 * std::numbers::pi / inv;
      if (wavelen > scaled_above) {
        inv /= s.factor;
      } else if (wavelen >= kept_below) {
        const double smooth = (s.original_context / wavelen - s.low_freq_factor) /
                              (static_cast<double>(s.high_freq_factor) - s.low_freq_factor);
        inv = (1.0 - smooth) * inv / s.factor + smooth * inv;
      }
    }
    if (!local) inv /= hp.rope_linear_factor;
    inv_freq[i] = static_cast<float>(inv);
  }
}

KvLayout KvLayoutFor(const ModelSpec& spec, int32_t block_tokens, KvType type) {
  KvLayout layout;
  layout.block_tokens = block_tokens;
  layout.n_layers = spec.hp.n_layers;
  layout.n_kv_heads = spec.hp.n_kv_heads;
  layout.head_dim = spec.hp.head_dim;
  layout.type = type;
  return layout;
}

}  // namespace tokenmill::devices
