#include "devices/cpu/executor_plan.h"

#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"

namespace tokenmill::devices::cpu {
namespace {

std::string SeqName(const SequenceStep& seq) { return absl::StrCat("sequence ", seq.seq_id); }

// Blocks covering a (checked) sequence's positions [0, start_pos + tokens).
size_t BlocksNeeded(const SequenceStep& seq, int32_t block_tokens) {
  const size_t end = static_cast<size_t>(seq.start_pos) + seq.tokens.size();
  return (end + static_cast<size_t>(block_tokens) - 1) / static_cast<size_t>(block_tokens);
}

}  // namespace

StepPlan::StepPlan(const StepLimits& limits) : limits_(limits) {
  const size_t max_tokens = static_cast<size_t>(std::max(limits.max_batch_tokens, 1));
  token_.resize(max_tokens);
  position_.resize(max_tokens);
  table_.resize(max_tokens);
  logits_token_.resize(max_tokens);
  seq_ids_.reserve(max_tokens);
  block_written_.assign(limits.kv_blocks, 0);
}

absl::Status StepPlan::CheckSequence(const SequenceStep& seq, const KvPageTable& pages) const {
  if (seq.tokens.empty()) return absl::InvalidArgumentError(SeqName(seq) + " has no tokens");
  if (seq.start_pos < 0) {
    return absl::InvalidArgumentError(absl::StrCat(SeqName(seq), ": negative start position"));
  }
  const int64_t end = static_cast<int64_t>(seq.start_pos) + static_cast<int64_t>(seq.tokens.size());
  if (end > limits_.context_length) {
    return absl::InvalidArgumentError(absl::StrCat(SeqName(seq), ": positions up to ", end - 1,
                                                   " exceed the context of ",
                                                   limits_.context_length));
  }
  for (int32_t token : seq.tokens) {
    if (token < 0 || token >= limits_.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          SeqName(seq), ": token id ", token, " outside the vocabulary of ", limits_.vocab_size));
    }
  }
  const int64_t blocks_needed = (end + limits_.block_tokens - 1) / limits_.block_tokens;
  if (static_cast<int64_t>(seq.block_table.size()) < blocks_needed) {
    return absl::InvalidArgumentError(absl::StrCat(SeqName(seq), ": ", seq.block_table.size(),
                                                   " KV blocks for ", end, " positions (",
                                                   blocks_needed, " needed)"));
  }
  for (int64_t i = 0; i < blocks_needed; ++i) {
    const uint32_t block = seq.block_table[static_cast<size_t>(i)];
    if (block >= limits_.kv_blocks) {
      return absl::InvalidArgumentError(absl::StrCat(
          SeqName(seq), ": KV block id ", block, " outside the ", limits_.kv_blocks, " blocks"));
    }
    if (pages.BlockAddress(block) == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(SeqName(seq), ": KV block ", block, " is in page slot ",
                       block / pages.blocks_per_page, ", which has no page mapped"));
    }
  }
  switch (seq.logits) {
    case LogitsWanted::kNone:
    case LogitsWanted::kLast:
    case LogitsWanted::kAll:
    case LogitsWanted::kArgmax:
      return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(SeqName(seq), ": unknown logits request"));
}

// A block that one sequence writes in this step must not be written or read
// by any other: the step runs all sequences at once, so sharing it would be a
// race (the prefix cache shares only full, already written blocks).
absl::Status StepPlan::CheckBlockSharing(const Batch& batch) {
  const int32_t bt = limits_.block_tokens;
  absl::Status status;
  size_t marked = 0;  // sequences whose written blocks are marked
  for (; marked < batch.seqs.size() && status.ok(); ++marked) {
    const SequenceStep& seq = batch.seqs[marked];
    const int32_t end = seq.start_pos + static_cast<int32_t>(seq.tokens.size());
    for (int32_t b = seq.start_pos / bt; b <= (end - 1) / bt; ++b) {
      uint8_t& flag = block_written_[seq.block_table[static_cast<size_t>(b)]];
      if (flag != 0) {
        status = absl::InvalidArgumentError(absl::StrCat(SeqName(seq), ": KV block ",
                                                         seq.block_table[static_cast<size_t>(b)],
                                                         " is written twice in one step"));
        break;
      }
      flag = 1;
    }
  }
  for (size_t s = 0; s < batch.seqs.size() && status.ok(); ++s) {
    const SequenceStep& seq = batch.seqs[s];
    for (int32_t b = 0; b < seq.start_pos / bt; ++b) {
      if (block_written_[seq.block_table[static_cast<size_t>(b)]] != 0) {
        status = absl::InvalidArgumentError(absl::StrCat(SeqName(seq), ": reads KV block ",
                                                         seq.block_table[static_cast<size_t>(b)],
                                                         " that this step writes"));
        break;
      }
    }
  }
  // Clear every flag set above (also the blocks of a partly marked sequence).
  for (size_t s = 0; s < marked; ++s) {
    const SequenceStep& seq = batch.seqs[s];
    const int32_t end = seq.start_pos + static_cast<int32_t>(seq.tokens.size());
    for (int32_t b = seq.start_pos / bt; b <= (end - 1) / bt; ++b) {
      block_written_[seq.block_table[static_cast<size_t>(b)]] = 0;
    }
  }
  return status;
}

absl::Status StepPlan::Build(const Batch& batch, const KvPageTable& pages) {
  tokens_ = 0;
  logits_rows_ = 0;
  const size_t total = batch.TokenCount();
  if (total > static_cast<size_t>(limits_.max_batch_tokens)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "batch of ", total, " tokens exceeds max_batch_tokens ", limits_.max_batch_tokens));
  }
  for (const SequenceStep& seq : batch.seqs) {
    if (absl::Status s = CheckSequence(seq, pages); !s.ok()) return s;
  }
  seq_ids_.clear();
  for (const SequenceStep& seq : batch.seqs) seq_ids_.push_back(seq.seq_id);
  std::sort(seq_ids_.begin(), seq_ids_.end());
  if (auto dup = std::adjacent_find(seq_ids_.begin(), seq_ids_.end()); dup != seq_ids_.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("sequence ", *dup, " appears twice in one batch"));
  }
  if (absl::Status s = CheckBlockSharing(batch); !s.ok()) return s;

  // Block addresses once per block and step, so the attention loops add an
  // offset and never divide by the page size.
  size_t addresses = 0;
  for (const SequenceStep& seq : batch.seqs) addresses += BlocksNeeded(seq, limits_.block_tokens);
  if (block_address_.size() < addresses) block_address_.resize(addresses);
  int64_t t = 0;
  size_t first_address = 0;
  for (const SequenceStep& seq : batch.seqs) {
    const size_t blocks = BlocksNeeded(seq, limits_.block_tokens);
    uint8_t** table = block_address_.data() + first_address;
    for (size_t b = 0; b < blocks; ++b) table[b] = pages.BlockAddress(seq.block_table[b]);
    first_address += blocks;
    const int64_t n = static_cast<int64_t>(seq.tokens.size());
    for (int64_t i = 0; i < n; ++i, ++t) {
      token_[static_cast<size_t>(t)] = seq.tokens[static_cast<size_t>(i)];
      position_[static_cast<size_t>(t)] = seq.start_pos + static_cast<int32_t>(i);
      table_[static_cast<size_t>(t)] = table;
      const bool last_wanted =
          seq.logits == LogitsWanted::kLast || seq.logits == LogitsWanted::kArgmax;
      const bool wanted = seq.logits == LogitsWanted::kAll || (last_wanted && i == n - 1);
      if (wanted) logits_token_[static_cast<size_t>(logits_rows_++)] = t;
    }
  }
  tokens_ = t;
  return absl::OkStatus();
}

}  // namespace tokenmill::devices::cpu
