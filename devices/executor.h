// Executor: runs the Llama-family forward for one model on one device.
//
// The runtime (issue 4) is written once against this interface; each device
// implements it with its own kernels. One engine thread calls Forward() at a
// time per executor; executors are not thread-safe otherwise.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "devices/kv_layout.h"
#include "devices/model_spec.h"

namespace tokenmill::devices {

class KvArena;  // devices/kv_arena.h

enum class LogitsWanted {
  kNone,  // a prefill chunk that is not the prompt's last
  kLast,  // logits of the step's last token (sampling)
  kAll,   // logits of every token of the step (tests, prompt logprobs)
  // Only the greedy next token after the step's last token: the index of its
  // largest logit (lowest index on ties, NaN ignored, 0 when every logit is
  // NaN) in StepOutput::argmax, and no logits row. A GPU computes it on the
  // device, so 4 bytes cross the bus instead of a vocabulary of floats.
  kArgmax,
};

// One sequence's share of a step: a prefill chunk or one decode token.
struct SequenceStep {
  uint64_t seq_id = 0;
  std::span<const int32_t> tokens;  // this step's token ids, >= 1
  int32_t start_pos = 0;            // position of tokens[0]
  // KV block ids covering positions [0, start_pos + tokens.size()): block i
  // holds positions [i * block_tokens, (i + 1) * block_tokens). Positions
  // before start_pos are already in the cache (earlier steps or a shared
  // prefix); this step writes the rest.
  std::span<const uint32_t> block_table;
  LogitsWanted logits = LogitsWanted::kLast;
};

// Logits rows a step computes for the sequence: kAll one per token, kLast
// and kArgmax one, kNone none.
inline size_t LogitsRows(const SequenceStep& s) {
  return s.logits == LogitsWanted::kAll ? s.tokens.size() : s.logits == LogitsWanted::kNone ? 0 : 1;
}

struct Batch {
  std::vector<SequenceStep> seqs;
  size_t TokenCount() const {
    size_t n = 0;
    for (const SequenceStep& s : seqs) n += s.tokens.size();
    return n;
  }
};

struct StepOutput {
  // Rows of vocab_size floats: for each sequence in batch order, one row if
  // it wanted kLast, tokens.size() rows if kAll, none if kNone or kArgmax.
  std::vector<float> logits;
  // One token id per sequence that wanted kArgmax, in batch order.
  std::vector<int32_t> argmax;
  int32_t vocab_size = 0;
  // Wall time of the step on the device (exclusive use), for cost attribution.
  std::chrono::nanoseconds device_time{0};
};

// The kArgmax token of one logits row: the largest logit's index, lowest on
// ties, NaN ignored, 0 when every logit is NaN. (Executors that compute it on
// the host use this; a GPU's kernel follows the same rule.)
inline int32_t GreedyToken(std::span<const float> logits) {
  int32_t best = -1;
  for (size_t i = 0; i < logits.size(); ++i) {
    if (logits[i] != logits[i]) continue;  // NaN
    if (best < 0 || logits[i] > logits[static_cast<size_t>(best)]) best = static_cast<int32_t>(i);
  }
  return best < 0 ? 0 : best;
}

struct ExecutorOptions {
  int32_t block_tokens = 16;
  KvType kv_type = KvType::kF16;
  // KV capacity in blocks (block ids 0..kv_blocks-1). With kv_arena it is the
  // block id space, rounded up to a multiple of the blocks per page (see
  // Executor::kv_blocks()).
  uint32_t kv_blocks = 0;
  int32_t threads = 0;              // CPU worker threads; 0 = one per core
  int32_t max_batch_tokens = 2048;  // largest Batch::TokenCount() (scratch sizing)
  // The device's KV arena (outlives the executor). When set the executor
  // allocates no KV memory of its own: block b lives in page slot
  // b / kv_blocks_per_page(), at offset (b % kv_blocks_per_page()) x
  // KvLayout::BlockBytes() of the arena page mapped there (MapKvPage). Null:
  // the executor owns all kv_blocks blocks, every one addressable.
  KvArena* kv_arena = nullptr;
};

class Executor {
 public:
  virtual ~Executor() = default;

  // Runs one step. Invalid batches (unknown block ids, blocks in an unmapped
  // page slot, too few blocks for the positions, tokens outside the
  // vocabulary, positions past the context, more tokens than
  // max_batch_tokens) are kInvalidArgument and change nothing.
  virtual absl::StatusOr<StepOutput> Forward(const Batch& batch) = 0;

  virtual const KvLayout& kv_layout() const = 0;
  // The block id space: with an arena, options.kv_blocks rounded up to whole
  // pages; without one, options.kv_blocks.
  virtual uint32_t kv_blocks() const = 0;
  virtual const ModelSpec& spec() const = 0;

  // KV pages. The defaults describe an executor that owns its KV memory, so
  // fakes and executors without arena support need not override them.

  // Blocks in one arena page (page_bytes / KvLayout::BlockBytes(), >= 1); 0
  // when the executor owns its KV memory (no arena).
  virtual uint32_t kv_blocks_per_page() const { return 0; }
  // Puts arena page `arena_page` behind page slot `slot` (blocks [slot x
  // kv_blocks_per_page(), (slot + 1) x kv_blocks_per_page())). The caller took
  // the page from the executor's arena. kInvalidArgument: no arena, slot past
  // kv_blocks() / kv_blocks_per_page(), slot already mapped, arena page
  // unknown or already mapped in another slot. Called by the engine thread
  // between steps, like Forward().
  virtual absl::Status MapKvPage(uint32_t /*slot*/, uint32_t /*arena_page*/) {
    return absl::InvalidArgumentError("the executor owns its KV memory: no arena pages to map");
  }
  // Leaves `slot` without a page; Forward() then refuses batches naming its
  // blocks. The caller gives the page back to the arena afterwards.
  // kInvalidArgument when the slot is not mapped (or out of range).
  virtual absl::Status UnmapKvPage(uint32_t /*slot*/) {
    return absl::InvalidArgumentError("the executor owns its KV memory: no arena pages to unmap");
  }
};

using ExecutorPtr = std::unique_ptr<Executor>;

}  // namespace tokenmill::devices
