// Paged KV cache access for the CPU executor: writing one token's K/V into
// its sequence's block, and causal attention of one query head over the
// blocks of its sequence (KvLayout: [layer][k|v][kv_head][slot][head_dim]).
#pragma once

#include <cstdint>

#include "devices/cpu/kernels.h"
#include "devices/executor.h"

namespace tokenmill::devices::cpu {

// Where a sequence's KV lives: the cache base and its block table.
struct PagedKv {
  const KvLayout* layout = nullptr;
  uint8_t* base = nullptr;                // kv_blocks x layout->BlockBytes()
  const uint32_t* block_table = nullptr;  // covers every position used
};

// Stores K and V of one token (n_kv_heads x head_dim floats each) at `pos` of
// layer `layer`, converting to the cache's element type.
void WriteTokenKv(Isa isa, const PagedKv& kv, int32_t layer, int32_t pos, const float* k,
                  const float* v);

// out = softmax(q . K[0..pos] * scale) . V[0..pos] for one query head reading
// kv head `kv_head`. Online softmax one block at a time: `scores` holds
// block_tokens floats of per-thread scratch. out has head_dim floats.
void AttendHead(Isa isa, const PagedKv& kv, int32_t layer, int32_t kv_head, int32_t pos,
                const float* q, float scale, float* scores, float* out);

}  // namespace tokenmill::devices::cpu
