// Synthetic models: deterministic random weights of a chosen shape and type
// with a real byte-level BPE vocabulary, so that tests, benchmarks and the
// demo have models without any download. `tokenmill model synth` writes them
// as standard GGUF files.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "devices/model_spec.h"
#include "runtime/model/model_loader.h"

namespace tokenmill::model {

struct SynthOptions {
  devices::Architecture arch = devices::Architecture::kLlama;
  int32_t dim = 64;
  int32_t n_layers = 2;
  int32_t n_heads = 4;
  int32_t n_kv_heads = 2;
  int32_t head_dim = 0;  // 0: dim / n_heads (qwen3 files usually set a larger one)
  int32_t ffn_dim = 128;
  int32_t vocab_size = 512;  // >= 256 bytes + special tokens
  int32_t context_length = 2048;
  devices::TensorType weight_type = devices::TensorType::kF16;  // matrices; norms stay f32
  // With weight_type Q4_K or Q5_K: attn_v, ffn_down and output in Q6_K, the
  // rest in weight_type, as llama.cpp's Q4_K_M / Q5_K_M files mix them.
  bool k_mix = false;
  bool tied_embeddings = false;
  float rope_theta = 10000.0f;
  // gemma3: local layers' attention window (0: every layer global), the
  // layer period (the last layer of each period is global) and local RoPE
  // base. Gemma 3 itself: 512 (1B; 1024 larger), 6, 10000. llama (Mistral):
  // the window of every layer; pattern and local base are not used.
  int32_t sliding_window = 0;
  int32_t sliding_window_pattern = 6;
  float rope_theta_local = 10000.0f;
  // Mixture of experts (llama as Mixtral, or qwen3moe, which needs them):
  // experts per layer (0: dense) and used per token; ffn_dim is then each
  // expert's size. The router is f32 whatever weight_type (as llama.cpp's
  // quantizer leaves it).
  int32_t n_experts = 0;
  int32_t n_experts_used = 0;
  bool llama3_rope_scaling = false;  // writes rope_freqs.weight (GGUF) / rope_scaling
  // Linear RoPE scaling of global layers (Gemma 3 4B+: 8); 1: none. Written
  // as llama.cpp's converter does: rope.scaling.type "linear" and
  // rope.scaling.factor.
  float rope_linear_factor = 1.0f;
  uint64_t seed = 1;
  std::string name = "tokenmill-synth";
  // The chat template written to the file; unset: a Llama 3 style template
  // over the synthetic vocabulary's control tokens; "": none.
  std::optional<std::string> chat_template;
  // Control tokens added after the synthetic vocabulary's own (tests: a
  // tool-call marker such as <|python_tag|>); they take the place of normal
  // tokens, so vocab_size stays the total.
  std::vector<std::string> extra_control_tokens;
};

// Checks the shape (heads divide dim unless head_dim is set, even head_dim,
// kv heads divide heads, dim, ffn and heads x head_dim multiples of 32, or of
// 256 for K-quants, so every weight row holds whole blocks, vocab large
// enough).
absl::Status ValidateSynthOptions(const SynthOptions& options);

// The model in memory: spec.backing owns the weights.
absl::StatusOr<LoadedModel> SynthesizeModel(const SynthOptions& options);

// Writes the model as a GGUF v3 file (llama.cpp conventions: tensor names,
// metadata keys, tokenizer.ggml.* vocabulary, alignment 32). LoadModel(path)
// gives back the same spec and tokenizer as SynthesizeModel(options).
absl::Status WriteSynthGguf(const SynthOptions& options, const std::filesystem::path& path);

}  // namespace tokenmill::model
