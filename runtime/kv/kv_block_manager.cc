// Sequences, block allocation and the prefix cache of KvBlockManager. Quotas,
// preemption and stats are in kv_quota.cc, pages in kv_pages.cc.
#include "runtime/kv/kv_block_manager.h"

#include <algorithm>
#include <functional>

#include "absl/strings/str_cat.h"

namespace tokenmill::kv {

KvBlockManager::KvBlockManager(uint32_t num_blocks, int32_t block_tokens, PrefixHashFn hash)
    : block_tokens_(block_tokens > 0 ? block_tokens : 1),
      hash_(hash),
      blocks_(num_blocks),
      present_blocks_(num_blocks),
      quota_base_(num_blocks) {
  free_.reserve(num_blocks);
  // Ascending ids form a min-heap: block 0 is handed out first.
  for (uint32_t b = 0; b < num_blocks; ++b) free_.push_back(b);
  stats_.blocks_total = num_blocks;
}

void KvBlockManager::PushFree(uint32_t block) {
  free_.push_back(block);
  std::push_heap(free_.begin(), free_.end(), std::greater<>());
}

int64_t KvBlockManager::FindEntry(uint64_t hash, uint64_t parent_id, const std::string& salt,
                                  std::span<const int32_t> tokens) const {
  auto it = index_.find(hash);
  if (it == index_.end()) return -1;
  for (uint32_t b : it->second) {
    const CacheEntry& e = blocks_[b].entry;
    if (e.parent_id == parent_id && e.salt == salt &&
        std::equal(e.tokens.begin(), e.tokens.end(), tokens.begin(), tokens.end())) {
      return b;
    }
  }
  return -1;
}

void KvBlockManager::DropEntry(uint32_t block) {
  CacheEntry& e = blocks_[block].entry;
  if (e.id == 0) return;
  auto it = index_.find(e.hash);
  if (it != index_.end()) {
    std::erase(it->second, block);
    if (it->second.empty()) index_.erase(it);
  }
  e = CacheEntry{};
}

uint32_t KvBlockManager::TakeBlock() {
  uint32_t b;
  if (!free_.empty()) {
    std::pop_heap(free_.begin(), free_.end(), std::greater<>());
    b = free_.back();
    free_.pop_back();
  } else {
    b = lru_.front();
    lru_.pop_front();
    blocks_[b].in_lru = false;
    DropEntry(b);  // children keep their entries; see the class comment
    ++stats_.evictions;
  }
  return b;
}

void KvBlockManager::Charge(uint32_t block, int32_t tenant) {
  Block& blk = blocks_[block];
  blk.refcount = 1;
  blk.owner = tenant;
  ++tenants_[tenant].used;
}

absl::StatusOr<SeqAlloc> KvBlockManager::StartSequence(uint64_t seq_id, const std::string& tenant,
                                                       const std::string& salt,
                                                       std::span<const int32_t> prompt,
                                                       PrefixLookup lookup) {
  if (prompt.empty()) return absl::InvalidArgumentError("empty prompt");
  if (seqs_.contains(seq_id)) {
    return absl::AlreadyExistsError(absl::StrCat("sequence ", seq_id, " is already running"));
  }
  const int32_t t = TenantIndex(tenant);
  Sequence seq;
  seq.tenant = t;
  seq.salt = salt;
  seq.start_order = next_start_order_++;

  // The block holding the last prompt token is never served from the cache.
  const size_t matchable = lookup == PrefixLookup::kMatch ? (prompt.size() - 1) / block_tokens_ : 0;
  uint64_t parent_hash = kRootPrefixHash;
  uint64_t parent_id = 0;
  for (size_t i = 0; i < matchable; ++i) {
    auto tokens = prompt.subspan(i * block_tokens_, block_tokens_);
    const uint64_t h = hash_(parent_hash, tokens, salt);
    const int64_t found = FindEntry(h, parent_id, salt, tokens);
    if (found < 0) break;
    const auto b = static_cast<uint32_t>(found);
    Block& blk = blocks_[b];
    if (blk.refcount == 0) {
      // Reviving an unreferenced cached block takes it out of the evictable
      // pool, so it is an allocation for the quota.
      if (!CheckQuota(t, 1).ok()) break;
      lru_.erase(blk.lru_pos);
      blk.in_lru = false;
      Charge(b, t);
    } else {
      ++blk.refcount;
    }
    seq.table.push_back(b);
    seq.chain_hashes.push_back(h);
    seq.chain_ids.push_back(blk.entry.id);
    parent_hash = h;
    parent_id = blk.entry.id;
  }

  SeqAlloc out;
  out.block_table = seq.table;
  out.cached_tokens = static_cast<int32_t>(seq.table.size()) * block_tokens_;
  if (lookup == PrefixLookup::kMatch) {
    stats_.prefix_query_blocks += matchable;
    stats_.prefix_hit_blocks += seq.table.size();
    stats_.prefix_query_tokens += prompt.size();
    stats_.prefix_hit_tokens += static_cast<uint64_t>(out.cached_tokens);
  }
  seqs_.emplace(seq_id, std::move(seq));
  return out;
}

absl::Status KvBlockManager::EnsureCapacity(uint64_t seq_id, int64_t total_tokens) {
  auto it = seqs_.find(seq_id);
  if (it == seqs_.end()) return absl::NotFoundError(absl::StrCat("no sequence ", seq_id));
  Sequence& seq = it->second;
  const int64_t want = (std::max<int64_t>(total_tokens, 0) + block_tokens_ - 1) / block_tokens_;
  const int64_t have = static_cast<int64_t>(seq.table.size());
  if (want <= have) return absl::OkStatus();
  const int64_t more = want - have;
  if (more > static_cast<int64_t>(blocks_.size())) {
    return absl::ResourceExhaustedError(
        absl::StrCat("sequence ", seq_id, " needs more KV blocks than exist"));
  }
  if (absl::Status s = CheckQuota(seq.tenant, static_cast<uint32_t>(more)); !s.ok()) return s;
  for (int64_t i = 0; i < more; ++i) {
    const uint32_t b = TakeBlock();
    Charge(b, seq.tenant);
    seq.table.push_back(b);
  }
  return absl::OkStatus();
}

std::span<const uint32_t> KvBlockManager::BlockTable(uint64_t seq_id) const {
  auto it = seqs_.find(seq_id);
  if (it == seqs_.end()) return {};
  return it->second.table;
}

void KvBlockManager::CommitFullBlocks(uint64_t seq_id, std::span<const int32_t> all_tokens_so_far) {
  auto it = seqs_.find(seq_id);
  if (it == seqs_.end()) return;
  Sequence& seq = it->second;
  const size_t full = std::min(all_tokens_so_far.size() / block_tokens_, seq.table.size());
  for (size_t i = seq.chain_ids.size(); i < full; ++i) {
    const uint64_t parent_hash = i == 0 ? kRootPrefixHash : seq.chain_hashes[i - 1];
    const uint64_t parent_id = i == 0 ? 0 : seq.chain_ids[i - 1];
    auto tokens = all_tokens_so_far.subspan(i * block_tokens_, block_tokens_);
    const uint64_t h = hash_(parent_hash, tokens, seq.salt);
    uint64_t id;
    if (const int64_t existing = FindEntry(h, parent_id, seq.salt, tokens); existing >= 0) {
      // Another sequence cached the same content first; chain through its
      // entry and leave this block unnamed (it is freed, not cached).
      id = blocks_[existing].entry.id;
    } else {
      const uint32_t b = seq.table[i];
      CacheEntry& e = blocks_[b].entry;
      // Only a block this sequence wrote can be here: cached blocks it shares
      // are already in its chain.
      e.id = next_entry_id_++;
      e.hash = h;
      e.parent_id = parent_id;
      e.salt = seq.salt;
      e.tokens.assign(tokens.begin(), tokens.end());
      index_[h].push_back(b);
      id = e.id;
    }
    seq.chain_hashes.push_back(h);
    seq.chain_ids.push_back(id);
  }
}

void KvBlockManager::FreeSequence(uint64_t seq_id) {
  auto it = seqs_.find(seq_id);
  if (it == seqs_.end()) return;
  const std::vector<uint32_t>& table = it->second.table;
  // Last block first, so a chain's later blocks are older in the LRU than
  // its earlier ones and get evicted before them.
  for (auto b = table.rbegin(); b != table.rend(); ++b) {
    Block& blk = blocks_[*b];
    if (--blk.refcount > 0) continue;
    --tenants_[blk.owner].used;
    blk.owner = kNoTenant;
    if (blk.entry.id != 0) {
      blk.lru_pos = lru_.insert(lru_.end(), *b);
      blk.in_lru = true;
    } else {
      PushFree(*b);
    }
  }
  seqs_.erase(it);
}

}  // namespace tokenmill::kv
