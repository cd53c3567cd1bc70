#include "devices/model_spec.h"

#include "devices/executor.h"

namespace tokenmill::devices {

const char* TensorTypeName(TensorType type) {
  switch (type) {
    case TensorType::kF32: return "f32";
    case TensorType::kF16: return "f16";
    case TensorType::kQ4_0: return "q4_0";
    case TensorType::kQ8_0: return "q8_0";
    case TensorType::kBF16: return "bf16";
  }
  return "unknown";
}

size_t TensorTypeBlockElements(TensorType type) {
  return type == TensorType::kQ8_0 || type == TensorType::kQ4_0 ? 32 : 1;
}

size_t TensorTypeBlockBytes(TensorType type) {
  switch (type) {
    case TensorType::kF32: return 4;
    case TensorType::kF16: return 2;
    case TensorType::kBF16: return 2;
    case TensorType::kQ8_0: return 2 + 32;
    case TensorType::kQ4_0: return 2 + 16;
  }
  return 0;
}

size_t TensorBytes(TensorType type, uint64_t elements) {
  return elements / TensorTypeBlockElements(type) * TensorTypeBlockBytes(type);
}

int64_t TensorView::elements() const {
  if (shape.empty()) return 0;
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

const char* ArchitectureName(Architecture arch) {
  return arch == Architecture::kQwen2 ? "qwen2" : "llama";
}

uint64_t ModelSpec::WeightBytesPerToken() const {
  uint64_t bytes = token_embedding.row_bytes() + output_norm.bytes + output.bytes;
  for (const auto& l : layers) {
    for (const TensorView* t : {&l.attn_norm, &l.wq, &l.wk, &l.wv, &l.bq, &l.bk, &l.bv, &l.wo,
                                &l.ffn_norm, &l.w_gate, &l.w_up, &l.w_down}) {
      bytes += t->bytes;
    }
  }
  return bytes;
}

uint64_t ModelSpec::WeightBytes() const {
  uint64_t bytes = token_embedding.bytes + output_norm.bytes;
  if (!tied_embeddings) bytes += output.bytes;
  for (const auto& l : layers) {
    for (const TensorView* t : {&l.attn_norm, &l.wq, &l.wk, &l.wv, &l.bq, &l.bk, &l.bv, &l.wo,
                                &l.ffn_norm, &l.w_gate, &l.w_up, &l.w_down}) {
      bytes += t->bytes;
    }
  }
  return bytes;
}

KvLayout KvLayoutFor(const ModelSpec& spec, int32_t block_tokens, KvType type) {
  KvLayout layout;
  layout.block_tokens = block_tokens;
  layout.n_layers = spec.hp.n_layers;
  layout.n_kv_heads = spec.hp.n_kv_heads;
  layout.head_dim = spec.hp.head_dim;
  layout.type = type;
  return layout;
}

size_t Batch::TokenCount() const {
  size_t n = 0;
  for (const auto& s : seqs) n += s.tokens.size();
  return n;
}

}  // namespace tokenmill::devices
