// Helpers shared by the model loader tests: file bytes, locating GGUF header
// fields to corrupt, and comparing two loaded models field by field.
#pragma once

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/model/model_loader.h"

namespace tokenmill::model::testing {

inline std::string ReadBytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

inline void WriteBytes(const std::filesystem::path& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

// Position just after the GGUF string `text` (u64 length + bytes) in the
// header, i.e. at a key's value type or a tensor info's n_dims. npos if absent.
inline size_t AfterGgufString(const std::string& bytes, const std::string& text) {
  std::string encoded(8, '\0');
  const uint64_t n = text.size();
  std::memcpy(encoded.data(), &n, 8);
  encoded += text;
  const size_t at = bytes.find(encoded);
  return at == std::string::npos ? at : at + encoded.size();
}

template <typename T>
void Poke(std::string& bytes, size_t pos, T value) {
  ASSERT_LE(pos + sizeof(T), bytes.size());
  std::memcpy(bytes.data() + pos, &value, sizeof(T));
}

template <typename T>
T Peek(const std::string& bytes, size_t pos) {
  T value{};
  std::memcpy(&value, bytes.data() + pos, sizeof(T));
  return value;
}

// Field positions of a tensor info in a GGUF header.
struct TensorInfoAt {
  size_t n_dims = 0;
  size_t ne = 0;  // first ne entry
  size_t type = 0;
  size_t offset = 0;
};

inline TensorInfoAt FindTensorInfo(const std::string& bytes, const std::string& name) {
  TensorInfoAt at;
  at.n_dims = AfterGgufString(bytes, name);
  EXPECT_NE(at.n_dims, std::string::npos) << name;
  if (at.n_dims == std::string::npos) return at;
  const uint32_t n_dims = Peek<uint32_t>(bytes, at.n_dims);
  at.ne = at.n_dims + 4;
  at.type = at.ne + 8 * n_dims;
  at.offset = at.type + 4;
  return at;
}

// Every tensor of a spec with a label (layer index included).
inline std::vector<std::pair<std::string, const devices::TensorView*>> Views(
    const devices::ModelSpec& spec) {
  std::vector<std::pair<std::string, const devices::TensorView*>> views = {
      {"token_embedding", &spec.token_embedding},
      {"output_norm", &spec.output_norm},
      {"output", &spec.output},
      {"rope_freq_factors", &spec.rope_freq_factors}};
  for (size_t n = 0; n < spec.layers.size(); ++n) {
    const devices::LayerWeights& l = spec.layers[n];
    const std::string p = "layer" + std::to_string(n) + ".";
    for (const auto& [label, view] :
         std::vector<std::pair<std::string, const devices::TensorView*>>{
             {"attn_norm", &l.attn_norm},
             {"wq", &l.wq},
             {"wk", &l.wk},
             {"wv", &l.wv},
             {"bq", &l.bq},
             {"bk", &l.bk},
             {"bv", &l.bv},
             {"q_norm", &l.q_norm},
             {"k_norm", &l.k_norm},
             {"wo", &l.wo},
             {"attn_post_norm", &l.attn_post_norm},
             {"ffn_norm", &l.ffn_norm},
             {"w_gate", &l.w_gate},
             {"w_up", &l.w_up},
             {"w_down", &l.w_down},
             {"ffn_post_norm", &l.ffn_post_norm},
             {"router", &l.router},
             {"gate_exps", &l.gate_exps},
             {"up_exps", &l.up_exps},
             {"down_exps", &l.down_exps}}) {
      views.emplace_back(p + label, view);
    }
  }
  return views;
}

inline void ExpectSameHyperparams(const devices::ModelHyperparams& a,
                                  const devices::ModelHyperparams& b) {
  EXPECT_EQ(a.dim, b.dim);
  EXPECT_EQ(a.n_layers, b.n_layers);
  EXPECT_EQ(a.n_heads, b.n_heads);
  EXPECT_EQ(a.n_kv_heads, b.n_kv_heads);
  EXPECT_EQ(a.head_dim, b.head_dim);
  EXPECT_EQ(a.ffn_dim, b.ffn_dim);
  EXPECT_EQ(a.vocab_size, b.vocab_size);
  EXPECT_EQ(a.context_length, b.context_length);
  EXPECT_EQ(a.rms_norm_eps, b.rms_norm_eps);
  EXPECT_EQ(a.rope_theta, b.rope_theta);
  EXPECT_EQ(a.rope_style, b.rope_style);
  EXPECT_EQ(a.rope_scaling.factor, b.rope_scaling.factor);
  EXPECT_EQ(a.rope_scaling.low_freq_factor, b.rope_scaling.low_freq_factor);
  EXPECT_EQ(a.rope_scaling.high_freq_factor, b.rope_scaling.high_freq_factor);
  EXPECT_EQ(a.rope_scaling.original_context, b.rope_scaling.original_context);
  EXPECT_EQ(a.rope_linear_factor, b.rope_linear_factor);
  EXPECT_EQ(a.sliding_window, b.sliding_window);
  EXPECT_EQ(a.sliding_window_pattern, b.sliding_window_pattern);
  EXPECT_EQ(a.n_experts, b.n_experts);
  EXPECT_EQ(a.n_experts_used, b.n_experts_used);
  EXPECT_EQ(a.expert_weights_norm, b.expert_weights_norm);
}

inline void ExpectSameTokenizer(const tokenizer::TokenizerSpec& a,
                                const tokenizer::TokenizerSpec& b) {
  EXPECT_EQ(a.kind, b.kind);
  EXPECT_EQ(a.pre, b.pre);
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_EQ(a.token_types, b.token_types);
  EXPECT_EQ(a.scores, b.scores);
  EXPECT_EQ(a.merges, b.merges);
  EXPECT_EQ(a.bos_id, b.bos_id);
  EXPECT_EQ(a.eos_id, b.eos_id);
  EXPECT_EQ(a.extra_eos_ids, b.extra_eos_ids);
  EXPECT_EQ(a.unk_id, b.unk_id);
  EXPECT_EQ(a.pad_id, b.pad_id);
  EXPECT_EQ(a.add_bos, b.add_bos);
  EXPECT_EQ(a.add_eos, b.add_eos);
  EXPECT_EQ(a.add_space_prefix, b.add_space_prefix);
  EXPECT_EQ(a.chat_template, b.chat_template);
}

// Same architecture, hyperparameters, tensors (names, types, shapes, bytes)
// and tokenizer.
inline void ExpectSameModel(const LoadedModel& a, const LoadedModel& b) {
  EXPECT_EQ(a.spec.name, b.spec.name);
  EXPECT_EQ(a.spec.arch, b.spec.arch);
  EXPECT_EQ(a.spec.tied_embeddings, b.spec.tied_embeddings);
  ExpectSameHyperparams(a.spec.hp, b.spec.hp);
  ASSERT_EQ(a.spec.layers.size(), b.spec.layers.size());
  const auto va = Views(a.spec);
  const auto vb = Views(b.spec);
  for (size_t k = 0; k < va.size(); ++k) {
    SCOPED_TRACE(va[k].first);
    const devices::TensorView& x = *va[k].second;
    const devices::TensorView& y = *vb[k].second;
    EXPECT_EQ(x.empty(), y.empty());
    EXPECT_EQ(x.name, y.name);
    EXPECT_EQ(x.type, y.type);
    EXPECT_EQ(x.shape, y.shape);
    ASSERT_EQ(x.bytes, y.bytes);
    if (!x.empty() && !y.empty()) {
      EXPECT_EQ(std::memcmp(x.data, y.data, x.bytes), 0) << "tensor bytes differ";
    }
  }
  ExpectSameTokenizer(a.tokenizer, b.tokenizer);
  EXPECT_EQ(a.metadata, b.metadata);
}

}  // namespace tokenmill::model::testing
