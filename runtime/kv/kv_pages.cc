// Pages of KvBlockManager: block presence following the arena pages the
// instance holds.
#include <algorithm>
#include <functional>

#include "absl/strings/str_cat.h"
#include "runtime/kv/kv_block_manager.h"

namespace tokenmill::kv {

std::unique_ptr<KvBlockManager> KvBlockManager::Paged(uint32_t id_space, int32_t block_tokens,
                                                      uint32_t blocks_per_page, PrefixHashFn hash) {
  const uint32_t per_page = std::max<uint32_t>(blocks_per_page, 1);
  const uint64_t rounded = (uint64_t{id_space} + per_page - 1) / per_page * per_page;
  // The id space is 32-bit: a last partial page past it is dropped instead.
  const auto space =
      static_cast<uint32_t>(rounded <= UINT32_MAX ? rounded : id_space / per_page * per_page);
  return std::unique_ptr<KvBlockManager>(new KvBlockManager(space, block_tokens, per_page, hash));
}

KvBlockManager::KvBlockManager(uint32_t num_blocks, int32_t block_tokens, uint32_t blocks_per_page,
                               PrefixHashFn hash)
    : block_tokens_(block_tokens > 0 ? block_tokens : 1),
      hash_(hash),
      blocks_(num_blocks),
      blocks_per_page_(blocks_per_page),
      page_present_(num_blocks / blocks_per_page, 0),
      present_blocks_(0),
      quota_base_(num_blocks) {
  for (Block& b : blocks_) b.present = false;
}

absl::Status KvBlockManager::AddPage(uint32_t slot) {
  if (blocks_per_page_ == 0) {
    return absl::FailedPreconditionError("the KV block manager has no pages");
  }
  if (slot >= page_present_.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV page slot ", slot, " past the ", page_present_.size(), " slots"));
  }
  if (page_present_[slot] != 0) {
    return absl::FailedPreconditionError(absl::StrCat("KV page slot ", slot, " is present"));
  }
  page_present_[slot] = 1;
  const uint32_t first = slot * blocks_per_page_;
  for (uint32_t b = first; b < first + blocks_per_page_; ++b) {
    blocks_[b].present = true;
    PushFree(b);
  }
  present_blocks_ += blocks_per_page_;
  return absl::OkStatus();
}

bool KvBlockManager::RemovePage(uint32_t slot, bool evict_cached) {
  if (!page_present(slot)) return false;
  const uint32_t first = slot * blocks_per_page_, end = first + blocks_per_page_;
  for (uint32_t b = first; b < end; ++b) {
    const Block& blk = blocks_[b];
    if (blk.refcount > 0 || (blk.in_lru && !evict_cached)) return false;
  }
  for (uint32_t b = first; b < end; ++b) {
    Block& blk = blocks_[b];
    if (blk.in_lru) {
      lru_.erase(blk.lru_pos);
      blk.in_lru = false;
      DropEntry(b);  // children keep their entries, as on an eviction
    }
    blk.present = false;
  }
  // Free blocks of the slot leave the heap; rare enough for a rebuild.
  std::erase_if(free_, [&](uint32_t b) { return b >= first && b < end; });
  std::make_heap(free_.begin(), free_.end(), std::greater<>());
  page_present_[slot] = 0;
  present_blocks_ -= blocks_per_page_;
  return true;
}

std::vector<uint32_t> KvBlockManager::ReleasablePages(bool include_cached) const {
  std::vector<uint32_t> out;
  for (uint32_t slot = 0; slot < page_present_.size(); ++slot) {
    if (page_present_[slot] == 0) continue;
    const uint32_t first = slot * blocks_per_page_;
    bool releasable = true;
    for (uint32_t b = first; b < first + blocks_per_page_ && releasable; ++b) {
      releasable = blocks_[b].refcount == 0 && (include_cached || !blocks_[b].in_lru);
    }
    if (releasable) out.push_back(slot);
  }
  return out;
}

}  // namespace tokenmill::kv
