// KvArena: one device's KV-cache memory, cut into equal pages that the model
// instances on the device borrow on demand and give back when idle, so models
// on one device share KV memory elastically.
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
  uint32_t pages_total = 0;
  uint32_t pages_free = 0;
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

  // A free page, or nullopt (and page_misses + 1) when none is left. The
  // lowest free index goes first, so a lightly used arena stays compact.
  virtual std::optional<uint32_t> TakePage() = 0;
  // Gives a page back; its content is dropped (the CPU arena madvises it
  // away so the memory returns to the system). Returning a page twice or one
  // never taken is a bug: checked, ignored and counted in
  // KvArenaStats::bad_returns (devices/ has no logger; the runtime logs it).
  virtual void ReturnPage(uint32_t page) = 0;
  // Device address of a page (host pointer on the CPU, device pointer on a
  // GPU); nullptr for an index past pages_total. Stable for the arena's life.
  virtual void* PageAddress(uint32_t page) const = 0;

  virtual KvArenaStats Stats() const = 0;
  size_t page_bytes() const { return Stats().page_bytes; }
};

using KvArenaPtr = std::unique_ptr<KvArena>;

// Default page size: 2 MiB holds a 16-token block of an 8B-shape model
// (32 layers x 2 x 8 kv heads x 128 x f16 = 2 MiB) and 4 of a 1B shape.
inline constexpr size_t kDefaultKvPageBytes = size_t{2} << 20;

// Host memory arena for the CPU device: `bytes` rounded down to whole pages,
// reserved with mmap (MAP_NORESERVE) so untouched pages cost nothing; the
// mapping lives as long as the arena. kInvalidArgument when bytes <
// page_bytes or page_bytes is not a multiple of the OS page size (a returned
// page is dropped with madvise, which works on whole OS pages);
// kResourceExhausted when the reservation fails.
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

// Memory an arena is cut from, allocated by the device's code (a cudaMalloc
// region for a GPU): `base` spans pages x page_bytes; `drop_page` (may be
// empty) runs on each returned page, `release` (may be empty) frees the
// region when the arena is destroyed.
struct KvRegion {
  void* base = nullptr;
  std::function<void(void* page, size_t bytes)> drop_page;
  std::function<void(void* base)> release;
};

// An arena of `pages` pages over `region` (the same page bookkeeping as the
// host arena's).
KvArenaPtr CreateKvArenaOver(KvRegion region, size_t page_bytes, uint32_t pages);

}  // namespace tokenmill::devices
