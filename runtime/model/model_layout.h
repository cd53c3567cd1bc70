// The tensors of a Llama-family model: for each one its GGUF and Hugging Face
// names, the shape the hyperparameters imply, and the ModelSpec slot it
// fills. Both loaders check files against this list and the synthesizer
// generates from it, so the three agree on names and shapes by construction.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "devices/model_spec.h"

namespace tokenmill::model {

enum class TensorRole {
  kEmbedding,    // token_embd: {vocab, dim}
  kMatrix,       // a linear layer's weight {out, in}: any weight type
  kNorm,         // f32 in the spec (loaders convert f16/bf16); also qwen3's q/k norms
  kBias,         // f32 in the spec
  kRopeFactors,  // GGUF rope_freqs.weight: f32 {head_dim / 2}
  // Experts' matrices stacked {n_experts, out, in}: one GGUF tensor; in
  // Hugging Face checkpoints one {out, in} tensor per expert, named by
  // hf_name with '*' replaced by the expert's index.
  kExperts,
};

struct TensorSlot {
  std::string gguf_name;
  std::string hf_name;         // "" when Hugging Face checkpoints have no such tensor
  std::vector<int64_t> shape;  // outermost first
  TensorRole role = TensorRole::kMatrix;
  bool required = true;
  devices::TensorView* view = nullptr;  // where it goes in the spec
};

// Which optional tensors the list includes.
struct LayoutOptions {
  bool output = true;         // output.weight / lm_head.weight (false: tied)
  bool rope_factors = false;  // rope_freqs.weight
  bool qkv_bias = false;      // attention q/k/v biases
  bool qk_norm = false;       // per-head q/k RMSNorm weights (qwen3, gemma3)
  bool post_norms = false;    // attention and FFN output RMSNorm weights (gemma3)
  // Mixture of experts (hp.n_experts > 0): a router and stacked experts in
  // place of the dense FFN, with Mixtral's or Qwen3-MoE's Hugging Face names.
  enum class Experts { kNone, kMixtral, kQwen3Moe };
  Experts experts = Experts::kNone;
};

// The slots in GGUF file order: token_embd, output_norm, output, rope_freqs,
// then blk.N.*. spec->hp must be filled; spec->layers is resized to
// hp.n_layers and the slots point into spec.
std::vector<TensorSlot> ModelTensorSlots(const LayoutOptions& options, devices::ModelSpec* spec);

// "{a, b}" for messages.
std::string ShapeText(const std::vector<int64_t>& shape);

// Checks hyperparameters a loader read (positive sizes, heads divide, ...).
// `source` names the file for messages.
absl::Status ValidateHyperparams(const devices::ModelHyperparams& hp, const std::string& source);

}  // namespace tokenmill::model
