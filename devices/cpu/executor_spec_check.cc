#include "devices/cpu/executor_spec_check.h"

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace tokenmill::devices::cpu {
namespace {

bool KnownType(TensorType type) {
  switch (type) {
    case TensorType::kF32:
    case TensorType::kF16:
    case TensorType::kBF16:
    case TensorType::kQ8_0:
    case TensorType::kQ4_0:
      return true;
  }
  return false;
}

std::string Name(const TensorView& t, const std::string& role) {
  return t.name.empty() ? role : absl::StrCat(role, " (", t.name, ")");
}

// A matrix {rows, cols} of any supported type, or a vector {rows} in f32.
absl::Status CheckTensor(const TensorView& t, const std::string& role,
                         const std::vector<int64_t>& shape, bool f32_only) {
  if (t.empty()) return absl::InvalidArgumentError(absl::StrCat(role, " is missing"));
  const std::string name = Name(t, role);
  if (!KnownType(t.type)) {
    return absl::UnimplementedError(
        absl::StrCat(name, ": weight type ", static_cast<uint32_t>(t.type), " not supported"));
  }
  if (f32_only && t.type != TensorType::kF32) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, " is ", TensorTypeName(t.type), ", expected f32"));
  }
  if (t.shape != shape) {
    return absl::InvalidArgumentError(absl::StrCat(name, " has shape {",
                                                   absl::StrJoin(t.shape, ", "), "}, expected {",
                                                   absl::StrJoin(shape, ", "), "}"));
  }
  const int64_t cols = shape.back();
  if (cols % static_cast<int64_t>(TensorTypeBlockElements(t.type)) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": ", cols, " columns do not fill ", TensorTypeName(t.type), " blocks"));
  }
  const uint64_t need = TensorBytes(t.type, static_cast<uint64_t>(t.elements()));
  if (t.bytes < need) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": ", t.bytes, " bytes, ", need, " needed"));
  }
  return absl::OkStatus();
}

absl::Status CheckLayer(const ModelSpec& spec, size_t index) {
  const ModelHyperparams& hp = spec.hp;
  const LayerWeights& w = spec.layers[index];
  const std::string p = absl::StrCat("layer ", index, " ");
  const int64_t dim = hp.dim, q_dim = int64_t{hp.n_heads} * hp.head_dim;
  const int64_t kv_dim = int64_t{hp.n_kv_heads} * hp.head_dim, ffn = hp.ffn_dim;
  struct Expected {
    const TensorView* t;
    const char* role;
    std::vector<int64_t> shape;
    bool f32_only;
  };
  const Expected expected[] = {
      {&w.attn_norm, "attn_norm", {dim}, true}, {&w.wq, "wq", {q_dim, dim}, false},
      {&w.wk, "wk", {kv_dim, dim}, false},      {&w.wv, "wv", {kv_dim, dim}, false},
      {&w.wo, "wo", {dim, q_dim}, false},       {&w.ffn_norm, "ffn_norm", {dim}, true},
      {&w.w_gate, "w_gate", {ffn, dim}, false}, {&w.w_up, "w_up", {ffn, dim}, false},
      {&w.w_down, "w_down", {dim, ffn}, false},
  };
  for (const Expected& e : expected) {
    if (absl::Status s = CheckTensor(*e.t, p + e.role, e.shape, e.f32_only); !s.ok()) return s;
  }
  const Expected biases[] = {
      {&w.bq, "bq", {q_dim}, true}, {&w.bk, "bk", {kv_dim}, true}, {&w.bv, "bv", {kv_dim}, true}};
  for (const Expected& e : biases) {
    if (e.t->empty()) continue;  // llama has none; qwen2 has all three
    if (absl::Status s = CheckTensor(*e.t, p + e.role, e.shape, e.f32_only); !s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckModelSpecForCpu(const ModelSpec& spec) {
  const ModelHyperparams& hp = spec.hp;
  if (hp.dim <= 0 || hp.n_layers <= 0 || hp.n_heads <= 0 || hp.n_kv_heads <= 0 ||
      hp.head_dim <= 0 || hp.ffn_dim <= 0 || hp.vocab_size <= 0 || hp.context_length <= 0) {
    return absl::InvalidArgumentError(
        "model hyperparameters must be positive (dim, layers, heads, kv heads, head_dim, ffn, "
        "vocab, context)");
  }
  if (hp.n_heads % hp.n_kv_heads != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(hp.n_heads, " heads are not a multiple of ", hp.n_kv_heads, " kv heads"));
  }
  if (hp.head_dim % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("head_dim ", hp.head_dim, " is odd (RoPE)"));
  }
  const int64_t q_dim = int64_t{hp.n_heads} * hp.head_dim;
  if (hp.dim % 32 != 0 || hp.ffn_dim % 32 != 0 || q_dim % 32 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("dim ", hp.dim, ", ffn_dim ", hp.ffn_dim,
                                                   " and heads x head_dim ", q_dim,
                                                   " must be multiples of 32"));
  }
  if (!(hp.rms_norm_eps > 0.0f) || !(hp.rope_theta > 0.0f)) {
    return absl::InvalidArgumentError("rms_norm_eps and rope_theta must be positive");
  }
  if (spec.layers.size() != static_cast<size_t>(hp.n_layers)) {
    return absl::InvalidArgumentError(
        absl::StrCat(spec.layers.size(), " layers of weights for ", hp.n_layers, " layers"));
  }
  if (absl::Status s =
          CheckTensor(spec.token_embedding, "token_embedding", {hp.vocab_size, hp.dim}, false);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckTensor(spec.output_norm, "output_norm", {hp.dim}, true); !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckTensor(spec.output, "output", {hp.vocab_size, hp.dim}, false);
      !s.ok()) {
    return s;
  }
  if (!spec.rope_freq_factors.empty()) {
    if (absl::Status s =
            CheckTensor(spec.rope_freq_factors, "rope_freq_factors", {hp.head_dim / 2}, true);
        !s.ok()) {
      return s;
    }
  }
  for (size_t i = 0; i < spec.layers.size(); ++i) {
    if (absl::Status s = CheckLayer(spec, i); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status CheckExecutorOptions(const ExecutorOptions& options) {
  if (options.block_tokens <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("block_tokens must be positive, got ", options.block_tokens));
  }
  if (options.kv_blocks == 0) return absl::InvalidArgumentError("kv_blocks must be positive");
  if (options.max_batch_tokens <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_batch_tokens must be positive, got ", options.max_batch_tokens));
  }
  if (options.threads < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("threads must be 0 (one per core) or positive, got ", options.threads));
  }
  if (options.kv_type != KvType::kF16 && options.kv_type != KvType::kF32) {
    return absl::InvalidArgumentError("unknown KV type");
  }
  return absl::OkStatus();
}

}  // namespace tokenmill::devices::cpu
