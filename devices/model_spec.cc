#include "devices/model_spec.h"

#include <cmath>
#include <numbers>

#include "devices/kv_layout.h"

namespace tokenmill::devices {

const char* TensorTypeName(TensorType type) {
  switch (type) {
    case TensorType::kF32:
      return "f32";
    case TensorType::kF16:
      return "f16";
    case TensorType::kQ4_0:
      return "q4_0";
    case TensorType::kQ8_0:
      return "q8_0";
    case TensorType::kBF16:
      return "bf16";
  }
  return "unknown";
}

size_t TensorTypeBlockElements(TensorType type) {
  return type == TensorType::kQ8_0 || type == TensorType::kQ4_0 ? 32 : 1;
}

size_t TensorTypeBlockBytes(TensorType type) {
  switch (type) {
    case TensorType::kF32:
      return 4;
    case TensorType::kF16:
      return 2;
    case TensorType::kBF16:
      return 2;
    case TensorType::kQ8_0:
      return 2 + 32;
    case TensorType::kQ4_0:
      return 2 + 16;
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

void RopeInvFrequencies(const ModelHyperparams& hp, const float* freq_factors, float* inv_freq) {
  const int32_t half = hp.head_dim / 2;
  const RopeScaling& s = hp.rope_scaling;
  // Wavelengths (in positions) above which a frequency is fully scaled, and
  // below which it is kept as trained; in between the two are blended.
  const double scaled_above = s.original_context / static_cast<double>(s.low_freq_factor);
  const double kept_below = s.original_context / static_cast<double>(s.high_freq_factor);
  for (int32_t i = 0; i < half; ++i) {
    double inv = std::exp(-2.0 * i / hp.head_dim * std::log(static_cast<double>(hp.rope_theta)));
    if (freq_factors != nullptr) {
      inv /= freq_factors[i];
    } else if (s.enabled()) {
      const double wavelen = 2.0 * std::numbers::pi / inv;
      if (wavelen > scaled_above) {
        inv /= s.factor;
      } else if (wavelen >= kept_below) {
        const double smooth = (s.original_context / wavelen - s.low_freq_factor) /
                              (static_cast<double>(s.high_freq_factor) - s.low_freq_factor);
        inv = (1.0 - smooth) * inv / s.factor + smooth * inv;
      }
    }
    inv_freq[i] = static_cast<float>(inv);
  }
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

}  // namespace tokenmill::devices
