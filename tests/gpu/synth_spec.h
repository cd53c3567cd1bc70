// Synthetic models for the GPU tests in plain C++ (no Abseil, no model
// loader): a ModelSpec of a given shape with deterministic random weights of
// one type, encoded with the naive reference conversions. The spec's backing
// owns the weight memory.
#pragma once

#include <cstdint>

#include "devices/model_spec.h"

namespace tokenmill::gpu_test {

struct SynthSpecOptions {
  // The shape: dim, n_layers, n_heads, n_kv_heads, head_dim, ffn_dim,
  // vocab_size, context_length, rms_norm_eps, rope_theta, rope_style and
  // rope_scaling are used as they are.
  devices::ModelHyperparams hp;
  devices::Architecture arch = devices::Architecture::kLlama;
  // Type of the embedding and every matrix (F32, F16, BF16 or Q8_0); norms
  // and biases are f32.
  devices::TensorType type = devices::TensorType::kF16;
  bool qkv_bias = false;         // qwen2's attention biases
  bool tied_embeddings = false;  // output shares token_embedding's data
  // GGUF llama 3's rope_freqs.weight: per-frequency divisors in [1, 8).
  bool rope_freq_factors = false;
  uint64_t seed = 1;
  // Matrices are uniform in +-1/sqrt(cols): outputs of ~0.58x their input's
  // scale, so activations stay O(1) and the exact embedding carries much of
  // the residual stream (rounding errors of 16-bit cuBLAS inputs compound
  // less: a CPU emulation of the engine's numerics measured whole-forward
  // errors 2-3x below the tolerances, against ~1x with unit-variance
  // matrices). The output matrix is uniform in +-output_amplitude /
  // sqrt(dim), wider so that the logits spread.
  float output_amplitude = 4.0f;
};

// The model; dims must suit the type (cols multiples of 32 for Q8_0).
devices::ModelSpec MakeSynthSpec(const SynthSpecOptions& options);

// A tiny llama (or qwen2: halves RoPE, attention biases) shape for tests:
// dim 128, 2 layers, 4 heads of 32 over 2 kv heads (qwen2: 2 heads of 64
// over 1), ffn 320 (a multiple of 32, not of 256), vocab 512, context 256.
SynthSpecOptions TinyModelOptions(devices::Architecture arch, devices::TensorType type);

}  // namespace tokenmill::gpu_test
