// Paged KV cache access for the CPU executor: writing one token's K/V into
// its sequence's block, and causal attention of one query head over the
// blocks of its sequence (KvLayout: [layer][k|v][kv_head][slot][head_dim]).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "devices/cpu/kernels.h"
#include "devices/executor.h"

namespace tokenmill::devices::cpu {

// Where the executor's KV blocks live: page slots of blocks_per_page blocks
// each, block b at page_base[b / blocks_per_page] + (b % blocks_per_page) x
// block_bytes. An executor owning its KV has one slot over its own buffer; one
// on an arena has a slot per arena page it may map. Looked up once per block
// per step (StepPlan), never per token.
struct KvPageTable {
  std::vector<uint8_t*> page_base;  // per slot; nullptr = no page mapped
  uint32_t blocks_per_page = 1;
  size_t block_bytes = 0;

  // The block's address; nullptr when it is past the slots or its slot has
  // no page.
  uint8_t* BlockAddress(uint32_t block) const {
    const size_t slot = block / blocks_per_page;
    if (slot >= page_base.size() || page_base[slot] == nullptr) return nullptr;
    return page_base[slot] + static_cast<size_t>(block % blocks_per_page) * block_bytes;
  }
};

// Where a sequence's KV lives: the address of each block of its block table.
struct PagedKv {
  const KvLayout* layout = nullptr;
  uint8_t* const* blocks = nullptr;  // block_table[i]'s address; covers every position used
};

// Stores K and V of one token (n_kv_heads x head_dim floats each) at `pos` of
// layer `layer`, converting to the cache's element type.
void WriteTokenKv(Isa isa, const PagedKv& kv, int32_t layer, int32_t pos, const float* k,
                  const float* v);

// out = softmax(q . K[first..pos] * scale) . V[first..pos] for one query head
// reading kv head `kv_head`, first = 0, or pos - window + 1 when window > 0
// (a sliding-window layer: older positions get no weight, and their blocks
// are not read). Online softmax one block at a time: `scores` holds
// block_tokens floats of per-thread scratch. out has head_dim floats.
void AttendHead(Isa isa, const PagedKv& kv, int32_t layer, int32_t kv_head, int32_t pos,
                int32_t window, const float* q, float scale, float* scores, float* out);

}  // namespace tokenmill::devices::cpu
