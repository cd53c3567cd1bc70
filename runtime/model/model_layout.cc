#include "runtime/model/model_layout.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace tokenmill::model {

std::vector<TensorSlot> ModelTensorSlots(const LayoutOptions& options, devices::ModelSpec* spec) {
  const devices::ModelHyperparams& hp = spec->hp;
  const int64_t dim = hp.dim;
  const int64_t q_dim = int64_t{hp.n_heads} * hp.head_dim;
  const int64_t kv_dim = int64_t{hp.n_kv_heads} * hp.head_dim;
  const int64_t ffn = hp.ffn_dim;
  spec->layers.assign(static_cast<size_t>(hp.n_layers), devices::LayerWeights{});

  std::vector<TensorSlot> slots;
  auto add = [&](std::string gguf, std::string hf, std::vector<int64_t> shape, TensorRole role,
                 devices::TensorView* view) {
    TensorSlot slot;
    slot.gguf_name = std::move(gguf);
    slot.hf_name = std::move(hf);
    slot.shape = std::move(shape);
    slot.role = role;
    slot.view = view;
    slots.push_back(std::move(slot));
  };
  add("token_embd.weight", "model.embed_tokens.weight", {hp.vocab_size, dim},
      TensorRole::kEmbedding, &spec->token_embedding);
  add("output_norm.weight", "model.norm.weight", {dim}, TensorRole::kNorm, &spec->output_norm);
  if (options.output) {
    add("output.weight", "lm_head.weight", {hp.vocab_size, dim}, TensorRole::kMatrix,
        &spec->output);
  }
  if (options.rope_factors) {
    add("rope_freqs.weight", "", {hp.head_dim / 2}, TensorRole::kRopeFactors,
        &spec->rope_freq_factors);
  }
  for (int32_t n = 0; n < hp.n_layers; ++n) {
    devices::LayerWeights& l = spec->layers[static_cast<size_t>(n)];
    const std::string blk = absl::StrCat("blk.", n, ".");
    const std::string hf = absl::StrCat("model.layers.", n, ".");
    add(blk + "attn_norm.weight", hf + "input_layernorm.weight", {dim}, TensorRole::kNorm,
        &l.attn_norm);
    add(blk + "attn_q.weight", hf + "self_attn.q_proj.weight", {q_dim, dim}, TensorRole::kMatrix,
        &l.wq);
    add(blk + "attn_k.weight", hf + "self_attn.k_proj.weight", {kv_dim, dim}, TensorRole::kMatrix,
        &l.wk);
    add(blk + "attn_v.weight", hf + "self_attn.v_proj.weight", {kv_dim, dim}, TensorRole::kMatrix,
        &l.wv);
    if (options.qkv_bias) {
      add(blk + "attn_q.bias", hf + "self_attn.q_proj.bias", {q_dim}, TensorRole::kBias, &l.bq);
      add(blk + "attn_k.bias", hf + "self_attn.k_proj.bias", {kv_dim}, TensorRole::kBias, &l.bk);
      add(blk + "attn_v.bias", hf + "self_attn.v_proj.bias", {kv_dim}, TensorRole::kBias, &l.bv);
    }
    if (options.qk_norm) {
      add(blk + "attn_q_norm.weight", hf + "self_attn.q_norm.weight", {hp.head_dim},
          TensorRole::kNorm, &l.q_norm);
      add(blk + "attn_k_norm.weight", hf + "self_attn.k_norm.weight", {hp.head_dim},
          TensorRole::kNorm, &l.k_norm);
    }
    add(blk + "attn_output.weight", hf + "self_attn.o_proj.weight", {dim, q_dim},
        TensorRole::kMatrix, &l.wo);
    if (options.post_norms) {
      // Gemma 3 names its four norms apart from Llama's: post_attention_layernorm
      // is the attention output's norm there, pre_feedforward_layernorm the FFN's.
      add(blk + "post_attention_norm.weight", hf + "post_attention_layernorm.weight", {dim},
          TensorRole::kNorm, &l.attn_post_norm);
      add(blk + "ffn_norm.weight", hf + "pre_feedforward_layernorm.weight", {dim},
          TensorRole::kNorm, &l.ffn_norm);
    } else {
      add(blk + "ffn_norm.weight", hf + "post_attention_layernorm.weight", {dim}, TensorRole::kNorm,
          &l.ffn_norm);
    }
    const int64_t n_exp = hp.n_experts;
    switch (options.experts) {
      case LayoutOptions::Experts::kNone:
        add(blk + "ffn_gate.weight", hf + "mlp.gate_proj.weight", {ffn, dim}, TensorRole::kMatrix,
            &l.w_gate);
        add(blk + "ffn_up.weight", hf + "mlp.up_proj.weight", {ffn, dim}, TensorRole::kMatrix,
            &l.w_up);
        add(blk + "ffn_down.weight", hf + "mlp.down_proj.weight", {dim, ffn}, TensorRole::kMatrix,
            &l.w_down);
        break;
      case LayoutOptions::Experts::kMixtral:
        // Mixtral's w1 is the gate, w3 the up and w2 the down projection.
        add(blk + "ffn_gate_inp.weight", hf + "block_sparse_moe.gate.weight", {n_exp, dim},
            TensorRole::kMatrix, &l.router);
        add(blk + "ffn_gate_exps.weight", hf + "block_sparse_moe.experts.*.w1.weight",
            {n_exp, ffn, dim}, TensorRole::kExperts, &l.gate_exps);
        add(blk + "ffn_down_exps.weight", hf + "block_sparse_moe.experts.*.w2.weight",
            {n_exp, dim, ffn}, TensorRole::kExperts, &l.down_exps);
        add(blk + "ffn_up_exps.weight", hf + "block_sparse_moe.experts.*.w3.weight",
            {n_exp, ffn, dim}, TensorRole::kExperts, &l.up_exps);
        break;
      case LayoutOptions::Experts::kQwen3Moe:
        add(blk + "ffn_gate_inp.weight", hf + "mlp.gate.weight", {n_exp, dim}, TensorRole::kMatrix,
            &l.router);
        add(blk + "ffn_gate_exps.weight", hf + "mlp.experts.*.gate_proj.weight", {n_exp, ffn, dim},
            TensorRole::kExperts, &l.gate_exps);
        add(blk + "ffn_down_exps.weight", hf + "mlp.experts.*.down_proj.weight", {n_exp, dim, ffn},
            TensorRole::kExperts, &l.down_exps);
        add(blk + "ffn_up_exps.weight", hf + "mlp.experts.*.up_proj.weight", {n_exp, ffn, dim},
            TensorRole::kExperts, &l.up_exps);
        break;
    }
    if (options.post_norms) {
      add(blk + "post_ffw_norm.weight", hf + "post_feedforward_layernorm.weight", {dim},
          TensorRole::kNorm, &l.ffn_post_norm);
    }
  }
  return slots;
}

std::string ShapeText(const std::vector<int64_t>& shape) {
  return absl::StrCat("{", absl::StrJoin(shape, ", "), "}");
}

absl::Status ValidateHyperparams(const devices::ModelHyperparams& hp, const std::string& source) {
  auto bad = [&](auto&&... what) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", what...));
  };
  if (hp.dim <= 0) return bad("hidden size ", hp.dim, " must be positive");
  if (hp.n_layers <= 0) return bad("layer count ", hp.n_layers, " must be positive");
  if (hp.n_heads <= 0) return bad("head count ", hp.n_heads, " must be positive");
  if (hp.n_kv_heads <= 0 || hp.n_heads % hp.n_kv_heads != 0) {
    return bad("kv head count ", hp.n_kv_heads, " must divide the head count ", hp.n_heads);
  }
  if (hp.head_dim <= 0 || hp.head_dim % 2 != 0) {
    return bad("head dim ", hp.head_dim, " must be positive and even");
  }
  if (hp.ffn_dim <= 0) return bad("feed-forward size ", hp.ffn_dim, " must be positive");
  if (hp.vocab_size <= 0) return bad("vocabulary size ", hp.vocab_size, " must be positive");
  if (hp.context_length <= 0) return bad("context length ", hp.context_length, " must be positive");
  if (!(hp.rms_norm_eps > 0.0f) || !(hp.rms_norm_eps < 1.0f)) {
    return bad("rms norm epsilon ", hp.rms_norm_eps, " must be in (0, 1)");
  }
  if (!(hp.rope_theta > 0.0f)) return bad("rope theta ", hp.rope_theta, " must be positive");
  if (hp.n_experts < 0 || hp.n_experts > 1024) {
    return bad("expert count ", hp.n_experts, " must be 0 (dense) to 1024");
  }
  if (hp.n_experts > 0 && (hp.n_experts_used < 1 || hp.n_experts_used > hp.n_experts)) {
    return bad("experts used per token ", hp.n_experts_used, " must be 1 to the expert count ",
               hp.n_experts);
  }
  return absl::OkStatus();
}

}  // namespace tokenmill::model
