// ReferenceModel: the Llama-family forward (Llama 2/3, Mistral, Mixtral, Qwen2,
// Qwen3, Qwen3-MoE, Gemma 3) in
// plain f32 storage and f64 sums, built only on the naive ops, for checking
// every executor against one slow, obvious implementation. One sequence at a
// time; K/V of every position are kept in plain vectors. For tests only.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "devices/model_spec.h"

namespace tokenmill::reference {

struct ReferenceOptions {
  // Rounds K and V through f16 before caching them, like an executor with an
  // f16 KV cache, so that its results can be compared with tighter bounds.
  bool round_kv_to_f16 = false;
  // Rounds the input of every Q8_0/Q4_0 matmul through Q8_0 blocks (of every
  // K-quant matmul through Q8_K blocks of 256), like the CPU kernels' int8
  // dot products, so that quantized models can be compared with tight bounds
  // (and greedy decoding has no spurious near-ties).
  bool q8_activations = false;
};

class ReferenceModel {
 public:
  // Dequantizes every weight of `spec` once; spec's weights need not outlive
  // the constructor.
  explicit ReferenceModel(const devices::ModelSpec& spec, ReferenceOptions options = {});

  // Runs tokens at positions [start, start + tokens.size()) and returns their
  // logits, vocab_size floats per token, token after token. start may be at
  // most cached_positions(); positions from start on are dropped from the
  // cache first and recomputed.
  std::vector<float> Forward(std::span<const int32_t> tokens, int32_t start);

  // Feeds `prompt` from position 0, then appends `n` tokens, each the argmax
  // of the previous logits; returns the n generated tokens.
  std::vector<int32_t> GreedyGenerate(std::span<const int32_t> prompt, int32_t n);

  int32_t cached_positions() const { return positions_; }
  // With experts: the smallest gap, over the layers, between the router
  // logit of the last expert chosen for the token at `position` and the best
  // one left out; a perturbation of the router's input larger than that can
  // change the route. +inf without experts or for a position not computed.
  float RouterMargin(int32_t position) const;
  const devices::ModelHyperparams& hp() const { return hp_; }

 private:
  // A weight matrix in f32, and whether its type makes kernels quantize
  // the activations it multiplies.
  struct Matrix {
    std::vector<float> w;
    bool quantized = false;
    bool k_quant = false;  // activations in Q8_K blocks rather than Q8_0
  };
  struct Layer {
    std::vector<float> attn_norm, bq, bk, bv, q_norm, k_norm, attn_post_norm, ffn_norm,
        ffn_post_norm;
    Matrix wq, wk, wv, wo, w_gate, w_up, w_down;
    // Mixture of experts: the router and each expert's gate, up, down.
    Matrix router;
    std::vector<Matrix> e_gate, e_up, e_down;
    std::vector<float> k_cache, v_cache;  // positions x (n_kv_heads * head_dim)
  };

  static Matrix MatrixOf(const devices::TensorView& t);
  // y = W x (+ bias), W rows x cols, f64 sums.
  void Linear(const Matrix& m, const std::vector<float>& bias, int64_t rows, int64_t cols,
              const float* x, float* y) const;

  // The FFN of layer l on the normed row h (dim floats) into out: dense
  // SwiGLU/GeGLU, or the mixture of experts. Returns the router's margin
  // (see RouterMargin; +inf when dense).
  float Ffn(const Layer& l, const float* h, float* out) const;

  // Logits of one token at position positions_; appends its K/V.
  void ForwardToken(int32_t token, float* logits);

  devices::Architecture arch_;
  devices::ModelHyperparams hp_;
  ReferenceOptions options_;
  std::vector<float> embedding_, output_norm_;
  Matrix output_;
  std::vector<float> freq_factors_;  // empty when the spec has none
  std::vector<Layer> layers_;
  std::vector<float> router_margins_;  // per position computed
  int32_t positions_ = 0;
};

// Index of the largest logit; the lowest index on ties.
int32_t ArgMax(std::span<const float> logits);

}  // namespace tokenmill::reference
