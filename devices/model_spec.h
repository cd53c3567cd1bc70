// ModelSpec: a Llama-family model as the device layer sees it: architecture,
// hyperparameters and named weight tensors (type, shape, bytes). Loaders in
// runtime/model fill it from GGUF or safetensors; executors read it. It does
// not own weight memory: `backing` keeps whatever does (an mmap) alive.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace tokenmill::devices {

// Weight element types, in GGUF block layouts. Values are GGML type ids.
enum class TensorType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,  // blocks of 32: f16 scale d, 16 bytes of 4-bit q; x = d * (q - 8)
  kQ8_0 = 8,  // blocks of 32: f16 scale d, 32 int8 q; x = d * q
  // K-quants: super-blocks of 256 in sub-blocks with their own scales.
  // Q4_K (144 bytes): f16 d, f16 dmin, 12 bytes of eight 6-bit scales and
  // mins, 128 bytes of 4-bit q; sub-block s of 32: x = d*sc[s]*q - dmin*m[s].
  kQ4_K = 12,
  // Q5_K (176 bytes): as Q4_K, plus 32 bytes holding the fifth bit of q.
  kQ5_K = 13,
  // Q6_K (210 bytes): 128 bytes of q's low 4 bits, 64 of its high 2 bits,
  // sixteen int8 scales, f16 d; sub-block s of 16: x = d*sc[s]*(q - 32).
  kQ6_K = 14,
  kBF16 = 30,
};

// "f32", "f16", "q4_0", "q8_0", "q4_k", "q5_k", "q6_k", "bf16"
const char* TensorTypeName(TensorType type);
// Elements per block (1 for plain types, 32 for Q8_0/Q4_0, 256 for K-quants)
// and bytes per block.
size_t TensorTypeBlockElements(TensorType type);
size_t TensorTypeBlockBytes(TensorType type);
// Bytes of `elements` elements; elements must be a multiple of the block size.
size_t TensorBytes(TensorType type, uint64_t elements);

// A weight tensor. shape is outermost first (PyTorch order): a linear layer
// y = W x with W of shape {out, in} stores `out` rows of `in` contiguous
// elements (GGUF's ne[] is the reverse of this). data points into memory the
// ModelSpec's backing keeps alive; rows are contiguous and blocks never span
// two rows.
struct TensorView {
  std::string name;
  TensorType type = TensorType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  size_t bytes = 0;

  bool empty() const { return data == nullptr; }
  int64_t rows() const { return shape.size() < 2 ? 1 : shape[0]; }
  int64_t cols() const { return shape.empty() ? 0 : shape.back(); }
  int64_t elements() const;
  size_t row_bytes() const { return TensorBytes(type, static_cast<uint64_t>(cols())); }
  const uint8_t* row(int64_t r) const {
    return static_cast<const uint8_t*>(data) + static_cast<size_t>(r) * row_bytes();
  }
};

// kQwen3 is Qwen3 dense: no attention biases, and an RMSNorm over each head
// of q and k (weights of head_dim, shared by all heads) after the projection
// and before RoPE; its head_dim is usually not dim / n_heads.
// kGemma3 is Gemma 3 (text): q/k per-head norms as qwen3, RMSNorms after
// attention and after the FFN too (attn_post_norm, ffn_post_norm), GeGLU with
// tanh GELU, the embedding scaled by sqrt(dim), attention scaled by
// 1/sqrt(query_pre_attn_scalar), and local sliding-window layers interleaved
// with global ones (ModelHyperparams::sliding_window*). Its norm weights are
// stored in a ModelSpec as the factor applied, 1 + w (as GGUF files hold
// them; the safetensors loader adds the 1).
// Mixture of experts (ModelHyperparams::n_experts > 0): Mixtral is kLlama
// with experts, Qwen3-MoE is kQwen3Moe (q/k norms as qwen3). Every layer's FFN
// is then a router and n_experts SwiGLU experts (LayerWeights::router,
// *_exps) in place of w_gate/w_up/w_down.
enum class Architecture { kLlama, kQwen2, kQwen3, kGemma3, kQwen3Moe };
// "llama", "qwen2", "qwen3", "gemma3", "qwen3moe"
const char* ArchitectureName(Architecture arch);

// How RoPE pairs dimensions of a head: GGUF `llama` rotates adjacent pairs
// (2i, 2i+1); Hugging Face checkpoints and GGUF `qwen2`/`qwen3` rotate halves
// (i, i + head_dim/2).
enum class RopeStyle { kAdjacentPairs, kHalves };

// Llama 3 frequency scaling ("rope_type": "llama3" in config.json); none
// when factor == 0. Norm weights and attention biases are always f32 in a
// ModelSpec (loaders convert).
struct RopeScaling {
  float factor = 0.0f;
  float low_freq_factor = 1.0f;
  float high_freq_factor = 4.0f;
  int32_t original_context = 8192;
  bool enabled() const { return factor > 0.0f; }
};

struct ModelHyperparams {
  int32_t dim = 0;  // hidden size
  int32_t n_layers = 0;
  int32_t n_heads = 0;
  int32_t n_kv_heads = 0;  // grouped-query attention: n_heads % n_kv_heads == 0
  int32_t head_dim = 0;    // usually dim / n_heads
  int32_t ffn_dim = 0;     // SwiGLU inner size (each expert's, with experts)
  int32_t vocab_size = 0;
  int32_t context_length = 0;  // trained context
  float rms_norm_eps = 1e-5f;
  float rope_theta = 10000.0f;
  RopeStyle rope_style = RopeStyle::kAdjacentPairs;
  RopeScaling rope_scaling;
  // Linear RoPE scaling (GGUF rope.scaling.type "linear", config.json
  // rope_scaling type "linear"; Gemma 3 4B and larger: 8): a global layer's
  // positions are divided by this factor; local (sliding-window) layers keep
  // theirs, as llama.cpp and transformers apply it. 1: none.
  float rope_linear_factor = 1.0f;
  // Sliding-window attention (gemma3, Mistral): on a local layer, the query
  // at position p attends to positions (p - sliding_window, p] only, and RoPE
  // uses rope_theta_local. Layer l is local when sliding_window > 0 and
  // either sliding_window_pattern is 0 (every layer local: Mistral, whose
  // rope_theta_local is rope_theta) or l % sliding_window_pattern !=
  // sliding_window_pattern - 1 (Gemma 3: five local layers, then a global
  // one). sliding_window 0: every layer global.
  int32_t sliding_window = 0;
  int32_t sliding_window_pattern = 0;
  float rope_theta_local = 0.0f;
  // Attention scores are scaled by 1/sqrt(query_pre_attn_scalar); 0 means
  // head_dim.
  float query_pre_attn_scalar = 0.0f;
  // Mixture of experts: n_experts > 0 makes every layer's FFN a router over
  // n_experts experts, of which each token uses the n_experts_used with the
  // highest softmax probability (over all experts), weighted by those
  // probabilities, renormalised to sum 1 when expert_weights_norm (Mixtral,
  // and Qwen3-MoE's norm_topk_prob; llama.cpp renormalises both). 0: dense.
  int32_t n_experts = 0;
  int32_t n_experts_used = 0;
  bool expert_weights_norm = true;
};

// Whether `layer` attends within the sliding window only (see above).
bool IsLocalLayer(const ModelHyperparams& hp, int32_t layer);
// The window of `layer`'s attention in positions; 0: unlimited.
int32_t LayerWindow(const ModelHyperparams& hp, int32_t layer);
// 1/sqrt(query_pre_attn_scalar, or head_dim when that is 0).
float AttentionScale(const ModelHyperparams& hp);

// Inverse RoPE frequencies of a head (head_dim / 2 of them), computed in f64:
// theta^(-2i/d), then Llama 3 scaling (hp.rope_scaling) or, when freq_factors
// is not null, divided by freq_factors[i] (GGUF's rope_freqs.weight). Shared
// by every executor so their rotations agree to the bit. Global layers' are
// then divided by rope_linear_factor. local: with rope_theta_local
// (sliding-window layers) in place of rope_theta, and no linear factor.
void RopeInvFrequencies(const ModelHyperparams& hp, const float* freq_factors, float* inv_freq,
                        bool local = false);

// What is wrong with hyperparameters for any executor, or "": all positive,
// heads a multiple of kv heads, head_dim even, dim, ffn_dim and heads x
// head_dim multiples of 32 (the kernels' blocks and vector loads), positive
// rms_norm_eps and rope_theta.
std::string HyperparamsProblem(const ModelHyperparams& hp);

struct LayerWeights {
  TensorView attn_norm;   // {dim}
  TensorView wq;          // {n_heads * head_dim, dim}
  TensorView wk;          // {n_kv_heads * head_dim, dim}
  TensorView wv;          // {n_kv_heads * head_dim, dim}
  TensorView bq, bk, bv;  // qwen2 attention biases (f32), empty for llama
  // qwen3 per-head RMSNorm weights of q and k (f32 {head_dim}), each applied
  // to every head after the projection and before RoPE; empty otherwise.
  TensorView q_norm, k_norm;
  TensorView wo;              // {dim, n_heads * head_dim}
  TensorView attn_post_norm;  // gemma3: RMSNorm of the attention output (f32 {dim})
  TensorView ffn_norm;        // {dim}
  TensorView w_gate;          // {ffn_dim, dim}
  TensorView w_up;            // {ffn_dim, dim}
  TensorView w_down;          // {dim, ffn_dim}
  TensorView ffn_post_norm;   // gemma3: RMSNorm of the FFN output (f32 {dim})
  // Mixture of experts (hp.n_experts > 0; w_gate/w_up/w_down empty then):
  // the router {n_experts, dim} (any weight type; files keep it f32) and the
  // experts' matrices stacked, expert e's {ffn_dim, dim} (down: {dim,
  // ffn_dim}) being rows [e * rows, (e + 1) * rows) (ExpertSlice).
  TensorView router;
  TensorView gate_exps;  // {n_experts, ffn_dim, dim}
  TensorView up_exps;    // {n_experts, ffn_dim, dim}
  TensorView down_exps;  // {n_experts, dim, ffn_dim}
};

// Expert e's matrix of a stacked expert tensor {n_experts, rows, cols} as a
// 2-D view {rows, cols} into the same memory.
TensorView ExpertSlice(const TensorView& stacked, int64_t e);

struct ModelSpec {
  std::string name;
  Architecture arch = Architecture::kLlama;
  ModelHyperparams hp;
  TensorView token_embedding;  // {vocab, dim}
  TensorView output_norm;      // {dim}
  TensorView output;           // {vocab, dim}; same data as token_embedding when tied
  bool tied_embeddings = false;
  // GGUF llama 3 files carry RoPE scaling as per-frequency divisors
  // ("rope_freqs.weight", f32 {head_dim/2}); empty otherwise.
  TensorView rope_freq_factors;
  std::vector<LayerWeights> layers;
  // Keeps weight memory alive (an mmap'ed file, or buffers a test made).
  std::shared_ptr<const void> backing;

  // What is wrong with the spec for any executor, or "" when nothing is:
  // HyperparamsProblem(hp); every tensor present (biases optional; q/k
  // norms required for qwen3 and gemma3 and absent otherwise, post norms
  // and a window only for gemma3) with the shape hp
  // implies, enough bytes, and norms, biases and rope_freq_factors in f32. Which weight types run
  // is each executor's call.
  std::string Problem() const;

  // Bytes of all weights an executor reads per decoded token (every tensor
  // once; the embedding counts one row; with experts, n_experts_used
  // experts' slices per layer): the bandwidth bound's numerator.
  uint64_t WeightBytesPerToken() const;
  // Bytes of one expert's three matrices in `layer` (0 without experts).
  uint64_t ExpertBytes(int32_t layer) const;
  // Sum of every distinct tensor's bytes.
  uint64_t WeightBytes() const;
};

}  // namespace tokenmill::devices
