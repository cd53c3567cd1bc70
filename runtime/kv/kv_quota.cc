// Tenant quotas, preemption choice, stats and the invariant check of
// KvBlockManager.
#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "runtime/kv/kv_block_manager.h"

namespace tokenmill::kv {

int32_t KvBlockManager::TenantIndex(const std::string& name) {
  auto [it, inserted] = tenant_index_.try_emplace(name, static_cast<int32_t>(tenants_.size()));
  if (inserted) {
    Tenant t;
    t.name = name;
    t.max_blocks = MaxBlocks(t.max_fraction);
    tenants_.push_back(std::move(t));
  }
  return it->second;
}

absl::Status KvBlockManager::SetTenantQuota(const std::string& tenant, uint32_t reserved_blocks,
                                            double max_fraction) {
  if (!(max_fraction > 0.0 && max_fraction <= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("kv_max_fraction of tenant ", tenant, " must be in (0, 1]"));
  }
  if (reserved_blocks > num_blocks()) {
    return absl::InvalidArgumentError(absl::StrCat("tenant ", tenant, " reserves ", reserved_blocks,
                                                   " KV blocks of ", num_blocks()));
  }
  Tenant& t = tenants_[TenantIndex(tenant)];
  t.reserved = reserved_blocks;
  t.max_fraction = max_fraction;
  t.max_blocks = MaxBlocks(max_fraction);
  return absl::OkStatus();
}

uint32_t KvBlockManager::MaxBlocks(double fraction) const {
  // A tiny epsilon so that e.g. 0.3 * 10 is 3, not 2.
  return static_cast<uint32_t>(std::floor(fraction * quota_base_ + 1e-9));
}

void KvBlockManager::SetQuotaBase(uint32_t blocks) {
  quota_base_ = blocks;
  for (Tenant& t : tenants_) t.max_blocks = MaxBlocks(t.max_fraction);
}

absl::Status KvBlockManager::CheckQuota(int32_t tenant, uint32_t n) const {
  const Tenant& t = tenants_[tenant];
  if (static_cast<uint64_t>(t.used) + n > t.max_blocks) {
    return absl::ResourceExhaustedError(absl::StrCat("tenant ", t.name, " would hold ", t.used + n,
                                                     " KV blocks; its cap is ", t.max_blocks));
  }
  uint64_t others_unused_reserve = 0;
  for (size_t i = 0; i < tenants_.size(); ++i) {
    if (static_cast<int32_t>(i) == tenant) continue;
    if (tenants_[i].reserved > tenants_[i].used) {
      others_unused_reserve += tenants_[i].reserved - tenants_[i].used;
    }
  }
  const uint64_t available = free_.size() + lru_.size();
  if (available < n + others_unused_reserve) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "tenant ", t.name, " needs ", n, " KV blocks; ", available, " are free or evictable and ",
        others_unused_reserve, " of them are reserved for other tenants"));
  }
  return absl::OkStatus();
}

std::optional<uint64_t> KvBlockManager::PreemptionVictim(const std::string&) const {
  // needing_tenant is not special: it competes with the others on overage
  // (see the header), so its own sequences may be the answer.
  std::optional<uint64_t> victim;
  int64_t best_over = 0;
  uint64_t best_order = 0;
  for (const auto& [id, seq] : seqs_) {
    if (seq.table.empty()) continue;  // freeing it would free nothing
    const Tenant& t = tenants_[seq.tenant];
    const int64_t over = static_cast<int64_t>(t.used) - static_cast<int64_t>(t.reserved);
    if (over <= 0) continue;  // within its reservation: never preempted
    if (!victim || over > best_over || (over == best_over && seq.start_order > best_order)) {
      victim = id;
      best_over = over;
      best_order = seq.start_order;
    }
  }
  return victim;
}

KvStats KvBlockManager::Stats() const {
  KvStats s = stats_;
  s.blocks_total = present_blocks_;
  s.pages = blocks_per_page_ == 0 ? 0 : present_blocks_ / blocks_per_page_;
  s.blocks_free = static_cast<uint32_t>(free_.size());
  s.blocks_cached = static_cast<uint32_t>(lru_.size());
  s.blocks_used = s.blocks_total - s.blocks_free - s.blocks_cached;
  return s;
}

std::vector<TenantKvUsage> KvBlockManager::TenantUsage() const {
  std::vector<TenantKvUsage> out;
  out.reserve(tenants_.size());
  for (const Tenant& t : tenants_) {
    out.push_back(TenantKvUsage{.tenant = t.name,
                                .used_blocks = t.used,
                                .reserved_blocks = t.reserved,
                                .max_blocks = t.max_blocks});
  }
  return out;
}

uint32_t KvBlockManager::TenantUsedBlocks(const std::string& tenant) const {
  auto it = tenant_index_.find(tenant);
  return it == tenant_index_.end() ? 0 : tenants_[it->second].used;
}

absl::Status KvBlockManager::CheckInvariants() const {
  const uint32_t n = num_blocks();
  std::vector<uint32_t> refs(n, 0);
  for (const auto& [id, seq] : seqs_) {
    if (seq.chain_ids.size() != seq.chain_hashes.size() || seq.chain_ids.size() > seq.table.size())
      return absl::InternalError(absl::StrCat("sequence ", id, ": chain longer than table"));
    for (uint32_t b : seq.table) {
      if (b >= n) return absl::InternalError(absl::StrCat("sequence ", id, ": bad block ", b));
      ++refs[b];
    }
  }
  std::vector<uint8_t> state(n, 0);  // 1 free, 2 lru
  for (uint32_t b : free_) {
    if (b >= n || state[b] != 0) return absl::InternalError(absl::StrCat("free list: ", b));
    state[b] = 1;
  }
  for (uint32_t b : lru_) {
    if (b >= n || state[b] != 0) return absl::InternalError(absl::StrCat("lru: ", b));
    state[b] = 2;
  }
  std::vector<uint32_t> charged(tenants_.size(), 0);
  size_t indexed = 0;
  uint32_t present = 0;
  for (uint32_t b = 0; b < n; ++b) {
    const Block& blk = blocks_[b];
    if (blocks_per_page_ != 0 && blk.present != page_present(b / blocks_per_page_))
      return absl::InternalError(absl::StrCat("block ", b, ": presence differs from its page's"));
    if (!blk.present) {
      if (refs[b] != 0 || blk.refcount != 0 || state[b] != 0 || blk.in_lru ||
          blk.owner != kNoTenant || blk.entry.id != 0) {
        return absl::InternalError(absl::StrCat("absent block ", b, " is in use"));
      }
      continue;
    }
    ++present;
    if (blk.refcount != refs[b]) {
      return absl::InternalError(absl::StrCat("block ", b, ": refcount ", blk.refcount, " but ",
                                              refs[b], " table references"));
    }
    const bool referenced = blk.refcount > 0;
    // Exactly one of free / referenced / cached-LRU.
    if (static_cast<int>(referenced) + (state[b] == 1) + (state[b] == 2) != 1)
      return absl::InternalError(absl::StrCat("block ", b, " is not in exactly one state"));
    if (blk.in_lru != (state[b] == 2))
      return absl::InternalError(absl::StrCat("block ", b, ": in_lru flag wrong"));
    if (state[b] == 1 && blk.entry.id != 0)
      return absl::InternalError(absl::StrCat("free block ", b, " has a cache entry"));
    if (state[b] == 2 && blk.entry.id == 0)
      return absl::InternalError(absl::StrCat("lru block ", b, " has no cache entry"));
    if (referenced != (blk.owner != kNoTenant))
      return absl::InternalError(absl::StrCat("block ", b, ": charge does not match refcount"));
    if (referenced) ++charged[blk.owner];
    if (blk.entry.id != 0) {
      ++indexed;
      auto it = index_.find(blk.entry.hash);
      if (it == index_.end() ||
          std::find(it->second.begin(), it->second.end(), b) == it->second.end()) {
        return absl::InternalError(absl::StrCat("block ", b, " missing from the hash index"));
      }
      if (blk.entry.tokens.size() != static_cast<size_t>(block_tokens_))
        return absl::InternalError(absl::StrCat("block ", b, ": entry is not a full block"));
    }
  }
  if (present != present_blocks_) {
    return absl::InternalError(
        absl::StrCat(present, " blocks present but ", present_blocks_, " counted"));
  }
  if (blocks_per_page_ != 0 &&
      present_blocks_ != blocks_per_page_ * static_cast<uint32_t>(std::count(
                                                page_present_.begin(), page_present_.end(), 1))) {
    return absl::InternalError("present blocks do not fill the present pages");
  }
  size_t index_size = 0;
  for (const auto& [h, bs] : index_) index_size += bs.size();
  if (index_size != indexed) return absl::InternalError("hash index has stale blocks");
  for (size_t i = 0; i < tenants_.size(); ++i) {
    if (charged[i] != tenants_[i].used) {
      return absl::InternalError(absl::StrCat("tenant ", tenants_[i].name, ": used ",
                                              tenants_[i].used, " but ", charged[i], " charged"));
    }
  }
  return absl::OkStatus();
}

}  // namespace tokenmill::kv
