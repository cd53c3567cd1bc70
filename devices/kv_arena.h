// KvArena: one device's KV-cache memory, cut into equal pages that the model
// instances on the device borrow on demand and give back when idle, so models
// on one device share KV memory elastically.
//
// The arena grows: device memory is taken in chunks (64 MiB by default, whole
// pages) when a page is wanted and none is free, up to a cap (KvArenaBudget:
// a share of what the device has free plus what the arena holds, i.e. of
// what the weights leave, or an exact size). Chunks whose pages are all free
// go back to the device when a model load needs the memory (TrimFreeChunks).
// A page keeps its address while it is taken.
//
// A page holds whole blocks of one instance (blocks_per_page = page_bytes /
// that instance's KvLayout::BlockBytes()). Executors address a block through
// the pages mapped into them (Executor::MapKvPage), so the block ids the
// runtime hands to Forward() stay small integers per instance.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tokenmill::devices {

struct KvArenaStats {
  size_t page_bytes = 0;
  // The most pages the arena could hold now: its cap (KvArenaBudget, read
  // now) in whole pages, never below the pages taken. Changes as the device's
  // free memory changes.
  uint32_t pages_total = 0;
  // pages_total minus the pages taken: pages an instance could still get
  // (backed ones at once, the rest by growing, while the device has room).
  uint32_t pages_free = 0;
  // Pages backed by device memory now (taken or not), and those of them in
  // chunks with no page taken, whose memory TrimFreeChunks() would give back
  // (0 on the host: a free host page holds no memory already).
  uint32_t pages_backed = 0;
  uint32_t pages_reclaimable = 0;
  // TakePage calls that found no free page since creation; instances holding
  // pages they could give back (cached-only) release them when this grows.
  uint64_t page_misses = 0;
  // ReturnPage calls naming a page that was not taken (twice returned, never
  // taken, out of range): runtime bugs, ignored; the caller logs when it grows.
  uint64_t bad_returns = 0;
};

// Thread-safe: engine threads of several instances take and return pages.
class KvArena {
 public:
  virtual ~KvArena() = default;

  // A free page, or nullopt (and page_misses + 1) when none is left and the
  // arena cannot grow (at its cap, or the device refused a chunk). The
  // lowest free backed index goes first, so a lightly used arena stays
  // compact and its other chunks can be trimmed.
  virtual std::optional<uint32_t> TakePage() = 0;
  // Gives a page back; its content is dropped (the CPU arena madvises it
  // away so the memory returns to the system). Returning a page twice or one
  // never taken is a bug: checked, ignored and counted in
  // KvArenaStats::bad_returns (devices/ has no logger; the runtime logs it).
  virtual void ReturnPage(uint32_t page) = 0;
  // Device address of a page (host pointer on the CPU, device pointer on a
  // GPU); nullptr for a page not backed now. Stable while the page is taken
  // (a page's chunk is never given back while one of its pages is taken).
  virtual void* PageAddress(uint32_t page) const = 0;
  // Gives every chunk with no page taken back to the device; returns the
  // bytes given back. The model loader calls it before a model's weights
  // take device memory; the arena grows again on demand.
  virtual uint64_t TrimFreeChunks() = 0;

  // Reads the device's free memory for a fraction budget: not for every step.
  virtual KvArenaStats Stats() const = 0;
  // Stats().page_misses without reading the device: cheap enough per step.
  virtual uint64_t page_misses() const = 0;
  size_t page_bytes() const { return Stats().page_bytes; }
};

using KvArenaPtr = std::unique_ptr<KvArena>;

// Default page size: 2 MiB holds a 16-token block of an 8B-shape model
// (32 layers x 2 x 8 kv heads x 128 x f16 = 2 MiB) and 4 of a 1B shape.
inline constexpr size_t kDefaultKvPageBytes = size_t{2} << 20;
// Default growth step: 32 pages of 2 MiB, one device allocation each.
inline constexpr size_t kDefaultKvChunkBytes = size_t{64} << 20;

// How much memory an arena may hold: `bytes` when set, else `fraction` of
// (the device's free memory now + what the arena already holds), which is
// the share of the memory the loaded weights leave ([[device]] kv_memory).
struct KvArenaBudget {
  std::optional<uint64_t> bytes;
  double fraction = 0.8;  // (0, 1]; used when bytes is unset
};

// The device memory an arena grows over, supplied by the device's code
// (cudaMalloc per chunk on a GPU, ranges of one reservation on the host).
// The callbacks run under the arena's lock, on whichever thread takes,
// returns or trims; they must not call back into the arena.
struct KvChunkSource {
  // `bytes` (a whole number of pages, at most the chunk size) of device
  // memory, or nullptr when the device has no room.
  std::function<void*(size_t bytes)> allocate;
  // Gives back what allocate returned (same size).
  std::function<void(void* base, size_t bytes)> release;
  // Runs on each returned page (may be empty).
  std::function<void(void* page, size_t bytes)> drop_page;
  // Device memory free now, not counting the arena's chunks; used by a
  // fraction budget (may be empty with a byte budget).
  std::function<uint64_t()> free_bytes;
  // Whether a backed page holds device memory while free. False on the
  // host, where drop_page gives a returned page's frames back (and free_bytes
  // counts them as free): the budget then counts only taken pages as held,
  // and no chunk is reclaimable.
  bool free_pages_hold_memory = true;
};

// An arena growing over `source` in chunks of `chunk_bytes` (rounded down to
// whole pages, at least one) up to `budget`. kInvalidArgument when
// page_bytes is 0, allocate or release is missing, a fraction budget has no
// free_bytes or a fraction outside (0, 1], or a byte budget is under one page.
absl::StatusOr<KvArenaPtr> CreateChunkedKvArena(KvChunkSource source, KvArenaBudget budget,
                                                size_t page_bytes,
                                                size_t chunk_bytes = kDefaultKvChunkBytes);

// Host memory arena for the CPU device. Reserves address space for the most
// the budget could reach (budget.bytes, or fraction x MemTotal) with one mmap
// (MAP_NORESERVE: untouched pages cost nothing), hands chunks out of it and
// drops returned pages and trimmed chunks with madvise, so only touched
// pages hold memory; a fraction budget reads MemAvailable. kInvalidArgument
// when the budget holds no page or page_bytes is not a multiple of the OS
// page size (a returned page is dropped with madvise, which works on whole
// OS pages); kResourceExhausted when the reservation fails.
absl::StatusOr<KvArenaPtr> CreateHostKvArena(KvArenaBudget budget,
                                             size_t page_bytes = kDefaultKvPageBytes,
                                             size_t chunk_bytes = kDefaultKvChunkBytes);
// The same with a byte budget: `bytes` rounded down to whole pages.
absl::StatusOr<KvArenaPtr> CreateHostKvArena(size_t bytes, size_t page_bytes = kDefaultKvPageBytes);

// How an executor on an arena addresses KV blocks of `block_bytes`: whole
// blocks per page, and the block id space (`kv_blocks` asked for) rounded up
// to whole pages, since a slot maps a whole page.
struct KvPaging {
  uint32_t blocks_per_page = 0;
  uint32_t kv_blocks = 0;
};
// kInvalidArgument when a page cannot hold one block or the rounded id space
// passes 32 bits.
absl::StatusOr<KvPaging> KvPagingFor(const KvArena& arena, size_t block_bytes, uint32_t kv_blocks);

// Which arena page each page slot of one executor holds, and the checks
// every executor's MapKvPage/UnmapKvPage make (devices/executor.h). Not
// thread-safe: the executor's engine thread uses it.
class KvPageSlots {
 public:
  KvPageSlots() = default;
  // `arena` (may be null: no slots, every call refused) outlives this.
  KvPageSlots(KvArena* arena, uint32_t slots);

  // Records `arena_page` in `slot` and returns the page's address.
  // kInvalidArgument: no arena, slot out of range or already mapped, page
  // unknown or already mapped in another slot.
  absl::StatusOr<void*> Map(uint32_t slot, uint32_t arena_page);
  // kInvalidArgument when the slot holds no page.
  absl::Status Unmap(uint32_t slot);

 private:
  static constexpr uint32_t kNoPage = UINT32_MAX;
  KvArena* arena_ = nullptr;
  std::vector<uint32_t> page_;  // per slot
};

}  // namespace tokenmill::devices
