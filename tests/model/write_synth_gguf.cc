// Test tool: writes a synthetic GGUF and, beside it, what any GGUF reader
// must find in it (JSON), derived from the in-memory model rather than from
// the file. Used by gguf_compat_test.sh with another GGUF implementation.
//
//   model_write_synth_gguf OUT.gguf EXPECT.json llama|qwen2|qwen3|gemma3 f32|f16|bf16|q8_0|q4_0
//   tied|untied
#include <cstdio>
#include <fstream>
#include <string>

#include "nlohmann/json.hpp"
#include "runtime/model/synth.h"

namespace {

using tokenmill::devices::Architecture;
using tokenmill::devices::TensorType;

int Usage() {
  std::fprintf(stderr,
               "usage: model_write_synth_gguf OUT.gguf EXPECT.json llama|qwen2|qwen3|gemma3 "
               "f32|f16|bf16|q8_0|q4_0 tied|untied\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 6) return Usage();
  tokenmill::model::SynthOptions o;
  o.dim = 64;
  o.n_layers = 2;
  o.n_heads = 4;
  o.n_kv_heads = 2;
  o.ffn_dim = 128;
  o.vocab_size = 300;
  o.context_length = 1024;
  o.name = "compat-check";
  const std::string arch = argv[3];
  const std::string type = argv[4];
  const std::string tied = argv[5];
  if (arch != "llama" && arch != "qwen2" && arch != "qwen3" && arch != "gemma3") return Usage();
  o.arch = arch == "gemma3"  ? Architecture::kGemma3
           : arch == "qwen3" ? Architecture::kQwen3
           : arch == "qwen2" ? Architecture::kQwen2
                             : Architecture::kLlama;
  // heads x head_dim != dim
  if (o.arch == Architecture::kQwen3 || o.arch == Architecture::kGemma3) o.head_dim = 32;
  if (o.arch == Architecture::kGemma3) {
    o.sliding_window = 4;  // writes gemma3.attention.sliding_window and _pattern
    o.sliding_window_pattern = 2;
  }
  bool known = false;
  for (TensorType t : {TensorType::kF32, TensorType::kF16, TensorType::kBF16, TensorType::kQ8_0,
                       TensorType::kQ4_0}) {
    if (type == tokenmill::devices::TensorTypeName(t)) {
      o.weight_type = t;
      known = true;
    }
  }
  if (!known || (tied != "tied" && tied != "untied")) return Usage();
  o.tied_embeddings = tied == "tied";

  auto model = tokenmill::model::SynthesizeModel(o);
  if (!model.ok()) {
    std::fprintf(stderr, "%s\n", std::string(model.status().message()).c_str());
    return 1;
  }
  absl::Status written = tokenmill::model::WriteSynthGguf(o, argv[1]);
  if (!written.ok()) {
    std::fprintf(stderr, "%s\n", std::string(written.message()).c_str());
    return 1;
  }

  const tokenmill::devices::ModelSpec& spec = model->spec;
  nlohmann::json tensors = nlohmann::json::array();
  auto add = [&](const tokenmill::devices::TensorView& v) {
    if (v.empty()) return;
    std::vector<int64_t> ne(v.shape.rbegin(), v.shape.rend());
    tensors.push_back({{"name", v.name}, {"ne", ne}, {"ggml_type", static_cast<uint32_t>(v.type)}});
  };
  add(spec.token_embedding);
  add(spec.output_norm);
  if (!spec.tied_embeddings) add(spec.output);
  for (const auto& l : spec.layers) {
    for (const auto* v :
         {&l.attn_norm, &l.wq, &l.wk, &l.wv, &l.bq, &l.bk, &l.bv, &l.q_norm, &l.k_norm, &l.wo,
          &l.attn_post_norm, &l.ffn_norm, &l.w_gate, &l.w_up, &l.w_down, &l.ffn_post_norm}) {
      add(*v);
    }
  }
  const auto& hp = spec.hp;
  const auto& tok = model->tokenizer;
  std::vector<int32_t> token_types;
  for (auto t : tok.token_types) token_types.push_back(static_cast<int32_t>(t));
  // value + GGUF value type (4 u32, 5 i32, 6 f32, 7 bool, 8 string, 9 array).
  nlohmann::json metadata = {
      {"general.architecture", {{"value", arch}, {"type", 8}}},
      {"general.name", {{"value", o.name}, {"type", 8}}},
      {"general.alignment", {{"value", 32}, {"type", 4}}},
      {arch + ".context_length", {{"value", hp.context_length}, {"type", 4}}},
      {arch + ".embedding_length", {{"value", hp.dim}, {"type", 4}}},
      {arch + ".block_count", {{"value", hp.n_layers}, {"type", 4}}},
      {arch + ".feed_forward_length", {{"value", hp.ffn_dim}, {"type", 4}}},
      {arch + ".attention.head_count", {{"value", hp.n_heads}, {"type", 4}}},
      {arch + ".attention.head_count_kv", {{"value", hp.n_kv_heads}, {"type", 4}}},
      {arch + ".attention.layer_norm_rms_epsilon", {{"value", hp.rms_norm_eps}, {"type", 6}}},
      {arch + ".rope.freq_base", {{"value", hp.rope_theta}, {"type", 6}}},
      {arch + ".rope.dimension_count", {{"value", hp.head_dim}, {"type", 4}}},
      {arch + ".vocab_size", {{"value", hp.vocab_size}, {"type", 4}}},
      {"tokenizer.ggml.model", {{"value", "gpt2"}, {"type", 8}}},
      {"tokenizer.ggml.pre", {{"value", arch == "llama" ? "llama-bpe" : "qwen2"}, {"type", 8}}},
      {"tokenizer.ggml.tokens", {{"value", tok.tokens}, {"type", 9}, {"subType", 8}}},
      {"tokenizer.ggml.token_type", {{"value", token_types}, {"type", 9}, {"subType", 5}}},
      {"tokenizer.ggml.merges", {{"value", tok.merges}, {"type", 9}, {"subType", 8}}},
      {"tokenizer.ggml.bos_token_id", {{"value", *tok.bos_id}, {"type", 4}}},
      {"tokenizer.ggml.eos_token_id", {{"value", *tok.eos_id}, {"type", 4}}},
      {"tokenizer.ggml.add_bos_token", {{"value", true}, {"type", 7}}},
      {"tokenizer.chat_template", {{"value", tok.chat_template}, {"type", 8}}},
  };
  if (hp.sliding_window > 0) {
    metadata[arch + ".attention.sliding_window"] = {{"value", hp.sliding_window}, {"type", 4}};
    metadata[arch + ".attention.sliding_window_pattern"] = {{"value", hp.sliding_window_pattern},
                                                            {"type", 4}};
  }
  nlohmann::json expect = {{"version", 3},
                           {"architecture", arch},
                           {"tensors", tensors},
                           {"metadata", metadata},
                           {"weight_bytes", spec.WeightBytes()}};
  std::ofstream(argv[2]) << expect.dump(1);
  return 0;
}
