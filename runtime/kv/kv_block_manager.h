// Bookkeeping of one executor's KV block ids: which sequence holds which
// block, the prefix cache of full blocks, per-tenant quotas, and which pages
// of blocks are present when the executor's KV lives in a device KvArena. No
// KV bytes live here; the executor (or the arena) holds those
// (devices/executor.h).
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/kv/prefix_hash.h"

namespace tokenmill::kv {

// Whether StartSequence serves the prompt's leading blocks from the cache.
enum class PrefixLookup { kMatch, kSkip };

// What StartSequence hands back: the blocks of the cached prefix (the start
// of the sequence's block table) and how many prompt tokens they cover.
struct SeqAlloc {
  std::vector<uint32_t> block_table;
  int32_t cached_tokens = 0;
};

// Counters for metrics. Every present block is exactly one of used / free /
// cached; absent blocks (pages not added) count nowhere.
struct KvStats {
  uint32_t blocks_total = 0;         // present blocks
  uint32_t pages = 0;                // present pages (0 for a manager without pages)
  uint32_t blocks_used = 0;          // referenced by at least one sequence
  uint32_t blocks_free = 0;          // no content worth keeping
  uint32_t blocks_cached = 0;        // unreferenced, still findable, evictable (LRU)
  uint64_t prefix_query_blocks = 0;  // full prompt blocks that could have hit
  uint64_t prefix_hit_blocks = 0;
  uint64_t prefix_query_tokens = 0;  // prompt tokens looked up
  uint64_t prefix_hit_tokens = 0;    // prompt tokens served from the cache
  uint64_t evictions = 0;            // cached blocks reused for new content
};

// Blocks charged to one tenant and its quota.
struct TenantKvUsage {
  std::string tenant;
  uint32_t used_blocks = 0;
  uint32_t reserved_blocks = 0;
  uint32_t max_blocks = 0;
};

// Paged KV block accounting for ONE executor's block id space
// (0..num_blocks-1). Not thread-safe: the model instance's engine thread owns
// it and is the only caller.
//
// Pages: a manager made by Paged() mirrors an executor on a KvArena. Its id
// space is cut into page slots of blocks_per_page blocks; a slot's blocks are
// present (allocatable) only between AddPage and RemovePage, i.e. while the
// instance holds an arena page mapped in that slot. Free blocks are handed out
// lowest id first, so use gathers in the low slots and the high ones empty
// out for RemovePage. A manager made by the constructor has every block
// present and no pages.
//
// Prefix cache: a full block is named by h_i = H(h_{i-1}, tokens, salt). The
// hash only finds candidates; a candidate matches when its salt and token ids
// are equal and its parent is the very cache entry matched for the previous
// block (entries carry unique ids), so a 64-bit collision never hands back
// wrong KV. Consequence of that exact parent link: when a cached block is
// evicted only its own entry goes; its cached children stay in the LRU but
// can no longer be reached (a lookup walks from the first block), and they
// age out of the LRU like any other block. Freeing a sequence queues its
// later blocks as older than its earlier ones, so children usually go first.
//
// Quotas: each referenced block is charged to the tenant of the sequence that
// took it (from the free list, by eviction, or by reviving an unreferenced
// cached block); shared blocks stay charged to that tenant while referenced;
// unreferenced cached blocks are charged to nobody.
class KvBlockManager {
 public:
  // block_tokens > 0 tokens per block; every block present. `hash` is a seam
  // for tests.
  KvBlockManager(uint32_t num_blocks, int32_t block_tokens, PrefixHashFn hash = &DefaultPrefixHash);

  // A manager whose id space is `id_space` blocks rounded up to whole pages
  // of blocks_per_page (0 is taken as 1), with NO block present: AddPage
  // brings them in. Matches an executor on a KvArena (its kv_blocks() and
  // kv_blocks_per_page()).
  static std::unique_ptr<KvBlockManager> Paged(uint32_t id_space, int32_t block_tokens,
                                               uint32_t blocks_per_page,
                                               PrefixHashFn hash = &DefaultPrefixHash);

  KvBlockManager(const KvBlockManager&) = delete;
  KvBlockManager& operator=(const KvBlockManager&) = delete;

  // Sets a tenant's guaranteed blocks and its cap (max_fraction of the quota
  // base, in (0, 1]; max blocks = floor(max_fraction x base)). Tenants never
  // set have reserve 0 and cap 1.0. Lowering a quota below current use takes
  // effect on the next allocation. kInvalidArgument: fraction outside (0, 1],
  // reserve larger than the id space.
  absl::Status SetTenantQuota(const std::string& tenant, uint32_t reserved_blocks,
                              double max_fraction);

  // Registers sequence seq_id of `tenant` and references the longest chain of
  // cached full blocks matching the prompt's leading full blocks, never the
  // block holding the prompt's last token (that token must be computed to
  // give logits). A cached block that nobody references is charged to the
  // tenant; when the quota refuses that, the match stops there.
  // With PrefixLookup::kSkip nothing is matched (the sequence computes every
  // prompt token, e.g. to score each one) and the prefix statistics do not
  // count it as a query; its blocks still enter the cache when committed.
  // kInvalidArgument: empty prompt; kAlreadyExists: seq_id is running.
  absl::StatusOr<SeqAlloc> StartSequence(uint64_t seq_id, const std::string& tenant,
                                         const std::string& salt, std::span<const int32_t> prompt,
                                         PrefixLookup lookup = PrefixLookup::kMatch);

  // Appends blocks so the sequence's table covers total_tokens positions.
  // All or nothing: kResourceExhausted when the tenant's quota or the free +
  // evictable blocks do not allow it (see PreemptionVictim); kNotFound for an
  // unknown sequence.
  absl::Status EnsureCapacity(uint64_t seq_id, int64_t total_tokens);

  // The sequence's block table (valid until its next EnsureCapacity or
  // FreeSequence); empty for an unknown sequence.
  std::span<const uint32_t> BlockTable(uint64_t seq_id) const;

  // Registers the sequence's newly completed full blocks in the prefix cache;
  // call after the step that wrote them. all_tokens_so_far are the sequence's
  // tokens from position 0; blocks already registered are skipped, and a
  // block equal to an existing entry is not registered twice.
  void CommitFullBlocks(uint64_t seq_id, std::span<const int32_t> all_tokens_so_far);

  // Drops the sequence: each of its blocks loses a reference; at zero a block
  // with a cache entry joins the LRU (still findable), any other is free.
  // Unknown ids are ignored.
  void FreeSequence(uint64_t seq_id);

  // A running sequence to preempt when `needing_tenant` cannot allocate: one
  // of the tenant furthest over its reservation (used - reserved, largest;
  // ties: the newest sequence). Tenants within their reservation are never
  // chosen. The needing tenant's own sequences count too: when it is the one
  // furthest over, it gives up its own newest sequence rather than take from
  // a tenant less over. nullopt when nobody is over. The caller frees it and
  // recomputes it later.
  std::optional<uint64_t> PreemptionVictim(const std::string& needing_tenant) const;

  // Makes blocks [slot x blocks_per_page, (slot + 1) x blocks_per_page)
  // present and free (call after the executor mapped a page in the slot).
  // kFailedPrecondition: not a paged manager, or the slot is present;
  // kInvalidArgument: slot past the id space.
  absl::Status AddPage(uint32_t slot);
  // Makes the slot's blocks absent when none is referenced by a sequence
  // and, unless evict_cached, none holds a prefix cache entry; cached ones
  // lose their entries (their cached children become unreachable, as on an
  // eviction). true when done (the caller then unmaps the page and returns
  // it to the arena); false, nothing changed, when the slot is busy, absent
  // or out of range.
  bool RemovePage(uint32_t slot, bool evict_cached);
  // Present slots RemovePage(slot, include_cached) would accept, ascending
  // (highest last: the ones lowest-first allocation leaves empty first).
  std::vector<uint32_t> ReleasablePages(bool include_cached) const;
  // The block count tenant fractions apply to (default: the id space, i.e.
  // num_blocks()); every tenant's max_blocks is recomputed. An instance on an
  // arena sets what it may hold at most, not what it holds now.
  void SetQuotaBase(uint32_t blocks);
  uint32_t quota_base() const { return quota_base_; }

  KvStats Stats() const;
  // Every tenant seen so far, in first-seen order.
  std::vector<TenantKvUsage> TenantUsage() const;
  uint32_t TenantUsedBlocks(const std::string& tenant) const;

  // The block id space (present or not).
  uint32_t num_blocks() const { return static_cast<uint32_t>(blocks_.size()); }
  int32_t block_tokens() const { return block_tokens_; }
  // Blocks per page; 0 for a manager made by the constructor (no pages).
  uint32_t blocks_per_page() const { return blocks_per_page_; }
  // Blocks that may be allocated now (all of them without pages).
  uint32_t present_blocks() const { return present_blocks_; }
  bool page_present(uint32_t slot) const {
    return slot < page_present_.size() && page_present_[slot] != 0;
  }

  // Full consistency check (O(blocks + table entries)), for tests and debug:
  // every present block is exactly one of free / referenced / cached-LRU,
  // absent blocks are in none of them (and hold no entry), refcounts equal
  // table references, charges add up, the hash index matches entries, page
  // and block presence agree.
  absl::Status CheckInvariants() const;

 private:
  static constexpr int32_t kNoTenant = -1;

  // Paged(): blocks_per_page >= 1, num_blocks a multiple of it, none present.
  KvBlockManager(uint32_t num_blocks, int32_t block_tokens, uint32_t blocks_per_page,
                 PrefixHashFn hash);

  // A cached block's name, kept in full so lookups never trust the hash.
  struct CacheEntry {
    uint64_t id = 0;  // 0 = no entry; unique, never reused
    uint64_t hash = 0;
    uint64_t parent_id = 0;  // entry id of the previous block; 0 for the first
    std::string salt;
    std::vector<int32_t> tokens;
  };

  struct Block {
    bool present = true;  // false: its page slot has no page
    uint32_t refcount = 0;
    int32_t owner = kNoTenant;  // tenant charged while referenced
    bool in_lru = false;
    std::list<uint32_t>::iterator lru_pos;
    CacheEntry entry;
  };

  struct Tenant {
    std::string name;
    uint32_t reserved = 0;
    double max_fraction = 1.0;  // of quota_base_
    uint32_t max_blocks = 0;    // floor(max_fraction x quota_base_)
    uint32_t used = 0;
  };

  struct Sequence {
    int32_t tenant = kNoTenant;
    std::string salt;
    uint64_t start_order = 0;  // larger = newer
    std::vector<uint32_t> table;
    // Per committed full block: its chain hash and the id of the cache entry
    // holding that content (this sequence's block or an equal one).
    std::vector<uint64_t> chain_hashes;
    std::vector<uint64_t> chain_ids;
  };

  int32_t TenantIndex(const std::string& name);
  uint32_t MaxBlocks(double fraction) const;
  void PushFree(uint32_t block);
  // OK when `tenant` may take n more blocks out of free + evictable.
  absl::Status CheckQuota(int32_t tenant, uint32_t n) const;
  // Takes a block off the free list, else evicts the LRU head. Caller checked
  // the quota, so one exists.
  uint32_t TakeBlock();
  void Charge(uint32_t block, int32_t tenant);
  void DropEntry(uint32_t block);
  // The cached block whose entry is exactly (parent_id, salt, tokens); -1 if none.
  int64_t FindEntry(uint64_t hash, uint64_t parent_id, const std::string& salt,
                    std::span<const int32_t> tokens) const;

  int32_t block_tokens_;
  PrefixHashFn hash_;
  std::vector<Block> blocks_;
  std::vector<uint32_t> free_;  // free block ids, a min-heap: lowest id first
  std::list<uint32_t> lru_;     // unreferenced cached blocks, oldest first
  absl::flat_hash_map<uint64_t, std::vector<uint32_t>> index_;  // hash -> blocks
  std::vector<Tenant> tenants_;
  absl::flat_hash_map<std::string, int32_t> tenant_index_;
  absl::flat_hash_map<uint64_t, Sequence> seqs_;
  uint32_t blocks_per_page_ = 0;       // 0: no pages, all blocks present
  std::vector<uint8_t> page_present_;  // per slot: 1 when present
  uint32_t present_blocks_ = 0;
  uint32_t quota_base_ = 0;
  uint64_t next_entry_id_ = 1;
  uint64_t next_start_order_ = 0;
  KvStats stats_;
};

}  // namespace tokenmill::kv
