#include "tests/reference/reference_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "tests/reference/naive_ops.h"

namespace tokenmill::reference {
namespace {

std::vector<float> Dequantized(const devices::TensorView& t) {
  return t.empty() ? std::vector<float>() : DequantizeTensor(t);
}

// x rounded through Q8_0 blocks: d = f16(max|x| / 127), q = round(x / d).
std::vector<float> RoundThroughQ8_0(const float* x, int64_t n) {
  const std::vector<uint8_t> blocks = QuantizeQ8_0Naive(x, n);
  std::vector<float> out(static_cast<size_t>(n));
  constexpr size_t kBlockBytes = 2 + 32;
  for (int64_t b = 0; b < n / 32; ++b) {
    const uint8_t* block = blocks.data() + static_cast<size_t>(b) * kBlockBytes;
    uint16_t d_bits;
    std::memcpy(&d_bits, block, sizeof(d_bits));
    const float d = HalfToFloatNaive(d_bits);
    for (int64_t i = 0; i < 32; ++i) {
      out[static_cast<size_t>(b * 32 + i)] =
          d * static_cast<float>(static_cast<int8_t>(block[2 + i]));
    }
  }
  return out;
}

// x rounded through Q8_K blocks of 256: d = max|x| / 127 (f32),
// q = round(x * 127 / max|x|).
std::vector<float> RoundThroughQ8K(const float* x, int64_t n) {
  std::vector<float> out(static_cast<size_t>(n));
  for (int64_t b = 0; b < n / 256; ++b) {
    const float* v = x + 256 * b;
    float amax = 0.0f;
    for (int64_t i = 0; i < 256; ++i) amax = std::max(amax, std::fabs(v[i]));
    const float d = amax / 127.0f, id = amax > 0.0f ? 127.0f / amax : 0.0f;
    for (int64_t i = 0; i < 256; ++i) {
      out[static_cast<size_t>(256 * b + i)] = d * std::round(v[i] * id);
    }
  }
  return out;
}

}  // namespace

ReferenceModel::Matrix ReferenceModel::MatrixOf(const devices::TensorView& t) {
  Matrix m;
  m.w = DequantizeTensor(t);
  m.quantized = t.type == devices::TensorType::kQ8_0 || t.type == devices::TensorType::kQ4_0 ||
                t.type == devices::TensorType::kQ4_K || t.type == devices::TensorType::kQ5_K ||
                t.type == devices::TensorType::kQ6_K;
  m.k_quant = t.type == devices::TensorType::kQ4_K || t.type == devices::TensorType::kQ5_K ||
              t.type == devices::TensorType::kQ6_K;
  return m;
}

void ReferenceModel::Linear(const Matrix& m, const std::vector<float>& bias, int64_t rows,
                            int64_t cols, const float* x, float* y) const {
  if (options_.q8_activations && m.quantized) {
    const std::vector<float> rounded =
        m.k_quant ? RoundThroughQ8K(x, cols) : RoundThroughQ8_0(x, cols);
    MatVecNaive(m.w.data(), rows, cols, rounded.data(), y);
  } else {
    MatVecNaive(m.w.data(), rows, cols, x, y);
  }
  if (!bias.empty()) {
    for (int64_t r = 0; r < rows; ++r) y[r] += bias[static_cast<size_t>(r)];
  }
}

ReferenceModel::ReferenceModel(const devices::ModelSpec& spec, ReferenceOptions options)
    : arch_(spec.arch), hp_(spec.hp), options_(options) {
  embedding_ = DequantizeTensor(spec.token_embedding);
  output_norm_ = DequantizeTensor(spec.output_norm);
  output_ = MatrixOf(spec.output);
  freq_factors_ = Dequantized(spec.rope_freq_factors);
  layers_.reserve(spec.layers.size());
  for (const devices::LayerWeights& w : spec.layers) {
    Layer& l = layers_.emplace_back();
    l.attn_norm = DequantizeTensor(w.attn_norm);
    l.wq = MatrixOf(w.wq);
    l.wk = MatrixOf(w.wk);
    l.wv = MatrixOf(w.wv);
    l.bq = Dequantized(w.bq);
    l.bk = Dequantized(w.bk);
    l.bv = Dequantized(w.bv);
    l.q_norm = Dequantized(w.q_norm);
    l.k_norm = Dequantized(w.k_norm);
    l.wo = MatrixOf(w.wo);
    l.attn_post_norm = Dequantized(w.attn_post_norm);
    l.ffn_norm = DequantizeTensor(w.ffn_norm);
    l.ffn_post_norm = Dequantized(w.ffn_post_norm);
    l.w_gate = MatrixOf(w.w_gate);
    l.w_up = MatrixOf(w.w_up);
    if (spec.hp.n_experts > 0) {
      l.router = MatrixOf(w.router);
      for (int64_t e = 0; e < spec.hp.n_experts; ++e) {
        l.e_gate.push_back(MatrixOf(devices::ExpertSlice(w.gate_exps, e)));
        l.e_up.push_back(MatrixOf(devices::ExpertSlice(w.up_exps, e)));
        l.e_down.push_back(MatrixOf(devices::ExpertSlice(w.down_exps, e)));
      }
    } else {
      l.w_gate = MatrixOf(w.w_gate);
      l.w_up = MatrixOf(w.w_up);
      l.w_down = MatrixOf(w.w_down);
    }
  }
}

float ReferenceModel::Ffn(const Layer& l, const float* h, float* out) const {
  const int64_t dim = hp_.dim, ffn = hp_.ffn_dim;
  std::vector<float> gate(ffn), up(ffn);
  if (hp_.n_experts == 0) {
    Linear(l.w_gate, {}, ffn, dim, h, gate.data());
    Linear(l.w_up, {}, ffn, dim, h, up.data());
    if (arch_ == devices::Architecture::kGemma3) {
      GeluTanhMulNaive(gate.data(), up.data(), ffn);
    } else {
      SiluMulNaive(gate.data(), up.data(), ffn);
    }
    Linear(l.w_down, {}, dim, ffn, gate.data(), out);
    return std::numeric_limits<float>::infinity();
  }
  // Router: softmax over every expert (f64), the n_experts_used most probable
  // (lower index first on ties), weights renormalised when the model says so;
  // the output is the weighted sum of those experts' SwiGLU outputs.
  const int64_t n_exp = hp_.n_experts;
  std::vector<float> logits(static_cast<size_t>(n_exp));
  Linear(l.router, {}, n_exp, dim, h, logits.data());
  const double max = *std::max_element(logits.begin(), logits.end());
  std::vector<double> prob(static_cast<size_t>(n_exp));
  double sum = 0.0;
  for (int64_t e = 0; e < n_exp; ++e) sum += prob[e] = std::exp(logits[e] - max);
  for (double& p : prob) p /= sum;
  std::vector<int64_t> order(static_cast<size_t>(n_exp));
  for (int64_t e = 0; e < n_exp; ++e) order[e] = e;
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return prob[a] > prob[b]; });
  const size_t used = static_cast<size_t>(hp_.n_experts_used);
  const float margin = used < order.size() ? logits[order[used - 1]] - logits[order[used]]
                                           : std::numeric_limits<float>::infinity();
  order.resize(used);
  double chosen = 0.0;
  for (int64_t e : order) chosen += prob[e];
  std::vector<double> acc(static_cast<size_t>(dim), 0.0);
  std::vector<float> y(static_cast<size_t>(dim));
  for (int64_t e : order) {
    const double weight = hp_.expert_weights_norm ? prob[e] / chosen : prob[e];
    Linear(l.e_gate[e], {}, ffn, dim, h, gate.data());
    Linear(l.e_up[e], {}, ffn, dim, h, up.data());
    SiluMulNaive(gate.data(), up.data(), ffn);
    Linear(l.e_down[e], {}, dim, ffn, gate.data(), y.data());
    for (int64_t i = 0; i < dim; ++i) acc[i] += weight * y[i];
  }
  for (int64_t i = 0; i < dim; ++i) out[i] = static_cast<float>(acc[i]);
  return margin;
}

float ReferenceModel::RouterMargin(int32_t position) const {
  return position >= 0 && position < static_cast<int32_t>(router_margins_.size())
             ? router_margins_[static_cast<size_t>(position)]
             : std::numeric_limits<float>::infinity();
}

std::vector<float> ReferenceModel::Forward(std::span<const int32_t> tokens, int32_t start) {
  start = std::clamp(start, 0, positions_);
  positions_ = start;
  const size_t kv_row = static_cast<size_t>(hp_.n_kv_heads) * hp_.head_dim;
  for (Layer& l : layers_) {
    l.k_cache.resize(static_cast<size_t>(start) * kv_row);
    l.v_cache.resize(static_cast<size_t>(start) * kv_row);
  }
  std::vector<float> logits(tokens.size() * static_cast<size_t>(hp_.vocab_size));
  for (size_t i = 0; i < tokens.size(); ++i) {
    ForwardToken(tokens[i], logits.data() + i * static_cast<size_t>(hp_.vocab_size));
  }
  return logits;
}

void ReferenceModel::ForwardToken(int32_t token, float* logits) {
  const int64_t dim = hp_.dim, hd = hp_.head_dim, heads = hp_.n_heads, kv_heads = hp_.n_kv_heads;
  const int64_t q_dim = heads * hd, kv_dim = kv_heads * hd;
  const int32_t pos = positions_;
  const float* freq_factors = freq_factors_.empty() ? nullptr : freq_factors_.data();

  const bool gemma3 = arch_ == devices::Architecture::kGemma3;
  std::vector<float> x(embedding_.begin() + token * dim, embedding_.begin() + (token + 1) * dim);
  if (gemma3) {
    // Gemma: the embedding times sqrt(dim).
    const float normalizer = std::sqrt(static_cast<float>(dim));
    for (float& e : x) e *= normalizer;
  }
  std::vector<float> h(dim), q(q_dim), k(kv_dim), v(kv_dim), attn(q_dim), o(dim);
  std::vector<float> down(dim);
  float margin = std::numeric_limits<float>::infinity();
  // Gemma 3's local layers: all but the last of every sliding_window_pattern
  // layers see the last sliding_window positions and rotate with their own
  // RoPE base.
  devices::ModelHyperparams local_hp = hp_;
  local_hp.rope_theta = hp_.rope_theta_local;
  local_hp.rope_linear_factor = 1.0f;  // local layers are not scaled
  for (size_t il = 0; il < layers_.size(); ++il) {
    Layer& l = layers_[il];
    const int32_t pattern = hp_.sliding_window_pattern;
    // Pattern 0 (Mistral): every layer local, with the one RoPE base.
    const bool local = hp_.sliding_window > 0 &&
                       (pattern == 0 || static_cast<int32_t>(il) % pattern < pattern - 1);
    const devices::ModelHyperparams& rope_hp = local ? local_hp : hp_;
    RmsNormNaive(x.data(), l.attn_norm.data(), dim, hp_.rms_norm_eps, h.data());
    Linear(l.wq, l.bq, q_dim, dim, h.data(), q.data());
    Linear(l.wk, l.bk, kv_dim, dim, h.data(), k.data());
    Linear(l.wv, l.bv, kv_dim, dim, h.data(), v.data());
    // Qwen3: RMSNorm over each head of q and k, one weight vector per kind.
    if (!l.q_norm.empty()) {
      for (int64_t i = 0; i < q_dim; i += hd) {
        RmsNormNaive(q.data() + i, l.q_norm.data(), hd, hp_.rms_norm_eps, q.data() + i);
      }
    }
    if (!l.k_norm.empty()) {
      for (int64_t i = 0; i < kv_dim; i += hd) {
        RmsNormNaive(k.data() + i, l.k_norm.data(), hd, hp_.rms_norm_eps, k.data() + i);
      }
    }
    RopeNaive(q.data(), hp_.n_heads, hp_.head_dim, pos, rope_hp, freq_factors, hp_.rope_style);
    RopeNaive(k.data(), hp_.n_kv_heads, hp_.head_dim, pos, rope_hp, freq_factors, hp_.rope_style);
    if (options_.round_kv_to_f16) {
      for (float& e : k) e = HalfToFloatNaive(FloatToHalfNaive(e));
      for (float& e : v) e = HalfToFloatNaive(FloatToHalfNaive(e));
    }
    l.k_cache.insert(l.k_cache.end(), k.begin(), k.end());
    l.v_cache.insert(l.v_cache.end(), v.begin(), v.end());

    // Causal attention over positions [0, pos] (local layers: the last
    // sliding_window of them); query head qh reads kv head qh / (heads /
    // kv_heads). Scores scaled by 1/sqrt(query_pre_attn_scalar or head_dim).
    const int64_t n = pos + 1, group = heads / kv_heads;
    const int64_t first = local ? std::max<int64_t>(0, n - hp_.sliding_window) : 0;
    const double scalar =
        hp_.query_pre_attn_scalar > 0.0f ? hp_.query_pre_attn_scalar : static_cast<double>(hd);
    const double scale = 1.0 / std::sqrt(scalar);
    std::vector<double> scores(static_cast<size_t>(n));
    for (int64_t qh = 0; qh < heads; ++qh) {
      const float* qv = q.data() + qh * hd;
      const int64_t kvh = qh / group;
      double max = -INFINITY;
      for (int64_t p = 0; p < first; ++p) scores[static_cast<size_t>(p)] = -INFINITY;
      for (int64_t p = first; p < n; ++p) {
        const float* kp = l.k_cache.data() + p * kv_dim + kvh * hd;
        double dot = 0.0;
        for (int64_t d = 0; d < hd; ++d) dot += static_cast<double>(qv[d]) * kp[d];
        scores[static_cast<size_t>(p)] = dot * scale;
        max = std::max(max, dot * scale);
      }
      double sum = 0.0;
      for (double& s : scores) sum += (s = std::exp(s - max));
      for (int64_t d = 0; d < hd; ++d) {
        double acc = 0.0;
        for (int64_t p = 0; p < n; ++p) {
          acc += scores[static_cast<size_t>(p)] * l.v_cache[p * kv_dim + kvh * hd + d];
        }
        attn[qh * hd + d] = static_cast<float>(acc / sum);
      }
    }
    Linear(l.wo, {}, dim, q_dim, attn.data(), o.data());
    if (!l.attn_post_norm.empty()) {
      RmsNormNaive(o.data(), l.attn_post_norm.data(), dim, hp_.rms_norm_eps, o.data());
    }
    for (int64_t i = 0; i < dim; ++i) x[i] += o[i];

    RmsNormNaive(x.data(), l.ffn_norm.data(), dim, hp_.rms_norm_eps, h.data());
    margin = std::min(margin, Ffn(l, h.data(), down.data()));
    if (!l.ffn_post_norm.empty()) {
      RmsNormNaive(down.data(), l.ffn_post_norm.data(), dim, hp_.rms_norm_eps, down.data());
    }
    for (int64_t i = 0; i < dim; ++i) x[i] += down[i];
  }
  RmsNormNaive(x.data(), output_norm_.data(), dim, hp_.rms_norm_eps, h.data());
  Linear(output_, {}, hp_.vocab_size, dim, h.data(), logits);
  router_margins_.resize(static_cast<size_t>(pos) + 1);
  router_margins_[static_cast<size_t>(pos)] = margin;
  ++positions_;
}

std::vector<int32_t> ReferenceModel::GreedyGenerate(std::span<const int32_t> prompt, int32_t n) {
  std::vector<int32_t> generated;
  if (prompt.empty() || n <= 0) return generated;
  std::vector<float> logits = Forward(prompt, 0);
  const size_t vocab = static_cast<size_t>(hp_.vocab_size);
  int32_t next = ArgMax(std::span<const float>(logits).last(vocab));
  generated.push_back(next);
  while (static_cast<int32_t>(generated.size()) < n) {
    const int32_t token = next;
    logits = Forward(std::span<const int32_t>(&token, 1), positions_);
    next = ArgMax(logits);
    generated.push_back(next);
  }
  return generated;
}

int32_t ArgMax(std::span<const float> logits) {
  int32_t best = 0;
  for (size_t i = 1; i < logits.size(); ++i) {
    if (logits[i] > logits[static_cast<size_t>(best)]) best = static_cast<int32_t>(i);
  }
  return best;
}

}  // namespace tokenmill::reference
