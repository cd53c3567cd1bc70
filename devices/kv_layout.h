// KvLayout: the shape of the paged KV cache, shared by every executor (CPU
// and CUDA) and by the runtime's block accounting. Plain C++ with no
// dependencies beyond ModelSpec, so the CUDA core builds without Abseil.
#pragma once

#include <cstddef>
#include <cstdint>

#include "devices/model_spec.h"

namespace tokenmill::devices {

enum class KvType { kF16, kF32 };

// Shape of the paged KV cache. A block holds `block_tokens` consecutive
// positions of one sequence for every layer, laid out as
//   [layer][k=0|v=1][kv_head][token_in_block][head_dim]
// so one head's keys of a block are contiguous.
struct KvLayout {
  int32_t block_tokens = 16;
  int32_t n_layers = 0;
  int32_t n_kv_heads = 0;
  int32_t head_dim = 0;
  KvType type = KvType::kF16;

  size_t ElementBytes() const { return type == KvType::kF16 ? 2 : 4; }
  // Bytes of one K (or V) slab: one layer, one head, one block.
  size_t HeadSlabBytes() const {
    return static_cast<size_t>(block_tokens) * head_dim * ElementBytes();
  }
  size_t BlockBytes() const {
    return static_cast<size_t>(n_layers) * 2 * n_kv_heads * HeadSlabBytes();
  }
  // Byte offset of (layer, kv, head) inside a block.
  size_t SlabOffset(int32_t layer, int32_t kv, int32_t head) const {
    return ((static_cast<size_t>(layer) * 2 + kv) * n_kv_heads + head) * HeadSlabBytes();
  }
};

// KvLayout for a model with the given block size and KV element type.
KvLayout KvLayoutFor(const ModelSpec& spec, int32_t block_tokens, KvType type);

}  // namespace tokenmill::devices
