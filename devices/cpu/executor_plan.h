// StepPlan: one Batch checked against the executor's limits and KV page
// mapping, and flattened into per-token rows (token id, position, addresses
// of the sequence's KV blocks), so that the forward runs every matmul once
// over all T tokens of the step. Storage is sized once from max_batch_tokens
// and kv_blocks; only the block address list grows, when a step addresses
// more blocks than any step before.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "devices/cpu/executor_attention.h"
#include "devices/executor.h"

namespace tokenmill::devices::cpu {

struct StepLimits {
  int32_t block_tokens = 16;
  uint32_t kv_blocks = 0;
  int32_t vocab_size = 0;
  int32_t context_length = 0;
  int32_t max_batch_tokens = 0;
};

class StepPlan {
 public:
  explicit StepPlan(const StepLimits& limits);

  // Checks the whole batch before anything runs: token ids < vocab, positions
  // < context, enough valid block ids for every position, each in a page
  // slot that `pages` has mapped, at most max_batch_tokens tokens, distinct
  // sequence ids, and no KV block written by two sequences or written by one
  // while another reads it. Returns kInvalidArgument naming the sequence; the
  // plan is then unusable.
  absl::Status Build(const Batch& batch, const KvPageTable& pages);

  // Tokens of the step, sequences in batch order.
  int64_t tokens() const { return tokens_; }
  int32_t token(int64_t t) const { return token_[static_cast<size_t>(t)]; }
  int32_t position(int64_t t) const { return position_[static_cast<size_t>(t)]; }
  // Addresses of the KV blocks of token t's sequence, in block table order.
  uint8_t* const* block_addresses(int64_t t) const { return table_[static_cast<size_t>(t)]; }

  // Tokens whose logits are wanted, ascending: logits row r is token
  // logits_token(r).
  int64_t logits_rows() const { return logits_rows_; }
  int64_t logits_token(int64_t r) const { return logits_token_[static_cast<size_t>(r)]; }

 private:
  absl::Status CheckSequence(const SequenceStep& seq, const KvPageTable& pages) const;
  absl::Status CheckBlockSharing(const Batch& batch);

  StepLimits limits_;
  int64_t tokens_ = 0;
  int64_t logits_rows_ = 0;
  std::vector<int32_t> token_;
  std::vector<int32_t> position_;
  std::vector<uint8_t* const*> table_;   // per token: into block_address_
  std::vector<uint8_t*> block_address_;  // each sequence's block addresses, batch order
  std::vector<int64_t> logits_token_;
  std::vector<uint64_t> seq_ids_;       // sorted copy, for the duplicate check
  std::vector<uint8_t> block_written_;  // kv_blocks flags, all zero between steps
};

}  // namespace tokenmill::devices::cpu
