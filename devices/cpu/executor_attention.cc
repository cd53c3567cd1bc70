#include "devices/cpu/executor_attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace tokenmill::devices::cpu {
namespace {

uint8_t* Slab(const PagedKv& kv, int32_t layer, int32_t which, int32_t head, int32_t block_index) {
  return kv.blocks[block_index] + kv.layout->SlabOffset(layer, which, head);
}

}  // namespace

void WriteTokenKv(Isa isa, const PagedKv& kv, int32_t layer, int32_t pos, const float* k,
                  const float* v) {
  const KvLayout& l = *kv.layout;
  const int32_t block_index = pos / l.block_tokens;
  const size_t slot_offset = static_cast<size_t>(pos % l.block_tokens) * l.head_dim;
  for (int32_t head = 0; head < l.n_kv_heads; ++head) {
    const float* src[2] = {k + static_cast<size_t>(head) * l.head_dim,
                           v + static_cast<size_t>(head) * l.head_dim};
    for (int32_t which = 0; which < 2; ++which) {
      uint8_t* slab = Slab(kv, layer, which, head, block_index);
      if (l.type == KvType::kF16) {
        StoreF16(isa, src[which], reinterpret_cast<uint16_t*>(slab) + slot_offset, l.head_dim);
      } else {
        std::memcpy(reinterpret_cast<float*>(slab) + slot_offset, src[which],
                    static_cast<size_t>(l.head_dim) * sizeof(float));
      }
    }
  }
}

void AttendHead(Isa isa, const PagedKv& kv, int32_t layer, int32_t kv_head, int32_t pos,
                int32_t window, const float* q, float scale, float* scores, float* out) {
  const KvLayout& l = *kv.layout;
  const int32_t hd = l.head_dim;
  const bool f16 = l.type == KvType::kF16;
  std::fill(out, out + hd, 0.0f);
  float max = -INFINITY;  // running max of the scores seen so far
  float sum = 0.0f;       // running sum of exp(score - max)
  // Positions [first, pos]: all of them, or the last `window`.
  const int32_t first = window > 0 ? std::max(0, pos - window + 1) : 0;
  const int32_t blocks = pos / l.block_tokens + 1;
  for (int32_t b = first / l.block_tokens; b < blocks; ++b) {
    const int32_t base = b * l.block_tokens;
    const int32_t start = std::max(0, first - base);  // first slot of this block attended
    const int32_t count = std::min(l.block_tokens, pos + 1 - base);
    const uint8_t* k_slab = Slab(kv, layer, 0, kv_head, b);
    const uint8_t* v_slab = Slab(kv, layer, 1, kv_head, b);
    float block_max = -INFINITY;
    for (int32_t j = start; j < count; ++j) {
      const size_t offset = static_cast<size_t>(j) * hd;
      const float dot = f16 ? DotF16(isa, reinterpret_cast<const uint16_t*>(k_slab) + offset, q, hd)
                            : DotF32(isa, reinterpret_cast<const float*>(k_slab) + offset, q, hd);
      scores[j] = dot * scale;
      block_max = std::max(block_max, scores[j]);
    }
    if (block_max > max) {
      // Rescale what was accumulated under the old max once per block, not
      // once per position.
      const float factor = std::exp(max - block_max);
      if (sum > 0.0f) {
        for (int32_t d = 0; d < hd; ++d) out[d] *= factor;
      }
      sum *= factor;
      max = block_max;
    }
    for (int32_t j = start; j < count; ++j) {
      const float w = std::exp(scores[j] - max);
      sum += w;
      const size_t offset = static_cast<size_t>(j) * hd;
      if (f16) {
        AxpyF16(isa, w, reinterpret_cast<const uint16_t*>(v_slab) + offset, out, hd);
      } else {
        AxpyF32(isa, w, reinterpret_cast<const float*>(v_slab) + offset, out, hd);
      }
    }
  }
  const float inv = 1.0f / sum;
  for (int32_t d = 0; d < hd; ++d) out[d] *= inv;
}

}  // namespace tokenmill::devices::cpu
