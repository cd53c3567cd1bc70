// KV arenas: one region (an anonymous mapping on the host, one cudaMalloc on
// a GPU) cut into pages, a min-heap of free page indices under a mutex.
#include "devices/kv_arena.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <functional>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace tokenmill::devices {
namespace {

class RegionKvArena final : public KvArena {
 public:
  RegionKvArena(KvRegion region, size_t page_bytes, uint32_t pages)
      : region_(std::move(region)), page_bytes_(page_bytes), pages_(pages), taken_(pages) {
    free_.reserve(pages);
    for (uint32_t p = 0; p < pages; ++p) free_.push_back(p);  // ascending: already a min-heap
  }
  ~RegionKvArena() override {
    if (region_.release) region_.release(region_.base);
  }

  std::optional<uint32_t> TakePage() override {
    absl::MutexLock lock(&mu_);
    if (free_.empty()) {
      ++page_misses_;
      return std::nullopt;
    }
    std::pop_heap(free_.begin(), free_.end(), std::greater<>());
    const uint32_t page = free_.back();
    free_.pop_back();
    taken_[page] = 1;
    return page;
  }

  void ReturnPage(uint32_t page) override {
    absl::MutexLock lock(&mu_);
    if (page >= pages_ || taken_[page] == 0) {
      ++bad_returns_;
      return;
    }
    // Dropped before the page is free again, so the next taker never sees
    // this instance's KV.
    if (region_.drop_page) region_.drop_page(base() + page * page_bytes_, page_bytes_);
    taken_[page] = 0;
    free_.push_back(page);
    std::push_heap(free_.begin(), free_.end(), std::greater<>());
  }

  void* PageAddress(uint32_t page) const override {
    return page < pages_ ? base() + page * page_bytes_ : nullptr;
  }

  KvArenaStats Stats() const override {
    absl::MutexLock lock(&mu_);
    KvArenaStats s;
    s.page_bytes = page_bytes_;
    s.pages_total = pages_;
    s.pages_free = static_cast<uint32_t>(free_.size());
    s.page_misses = page_misses_;
    s.bad_returns = bad_returns_;
    return s;
  }

 private:
  uint8_t* base() const { return static_cast<uint8_t*>(region_.base); }

  const KvRegion region_;
  const size_t page_bytes_;
  const uint32_t pages_;
  mutable absl::Mutex mu_;
  std::vector<uint32_t> free_ ABSL_GUARDED_BY(mu_);  // min-heap: lowest index first
  std::vector<uint8_t> taken_ ABSL_GUARDED_BY(mu_);  // per page: 1 while taken
  uint64_t page_misses_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t bad_returns_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace

absl::StatusOr<KvArenaPtr> CreateHostKvArena(size_t bytes, size_t page_bytes) {
  const long os_page = sysconf(_SC_PAGESIZE);
  if (page_bytes == 0 || os_page <= 0 || page_bytes % static_cast<size_t>(os_page) != 0) {
    // madvise works on whole OS pages: a KV page that split one would drop
    // its neighbour's bytes too.
    return absl::InvalidArgumentError(
        absl::StrCat("KV page size ", page_bytes, " is not a multiple of the OS page ", os_page));
  }
  if (bytes < page_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV arena of ", bytes, " bytes holds no page of ", page_bytes));
  }
  const size_t pages = std::min<size_t>(bytes / page_bytes, UINT32_MAX);
  const size_t total = pages * page_bytes;
  void* base = mmap(nullptr, total, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (base == MAP_FAILED) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot reserve ", total, " bytes for the KV arena"));
  }
  KvRegion region;
  region.base = base;
  // MADV_DONTNEED on private anonymous memory gives the frames back and
  // reads zeros afterwards.
  region.drop_page = [](void* page, size_t bytes) { madvise(page, bytes, MADV_DONTNEED); };
  region.release = [total](void* p) { munmap(p, total); };
  return CreateKvArenaOver(std::move(region), page_bytes, static_cast<uint32_t>(pages));
}

absl::StatusOr<KvPaging> KvPagingFor(const KvArena& arena, size_t block_bytes, uint32_t kv_blocks) {
  const size_t page_bytes = arena.page_bytes();
  const size_t per_page = block_bytes == 0 ? 0 : page_bytes / block_bytes;
  if (per_page == 0 || per_page > UINT32_MAX) {
    return absl::InvalidArgumentError(absl::StrCat("a KV arena page of ", page_bytes,
                                                   " bytes cannot hold KV blocks of ", block_bytes,
                                                   " bytes"));
  }
  const uint64_t rounded = (uint64_t{kv_blocks} + per_page - 1) / per_page * per_page;
  if (rounded > UINT32_MAX) {
    return absl::InvalidArgumentError(
        absl::StrCat(kv_blocks, " KV blocks do not fit a 32-bit id space in whole pages"));
  }
  return KvPaging{static_cast<uint32_t>(per_page), static_cast<uint32_t>(rounded)};
}

KvPageSlots::KvPageSlots(KvArena* arena, uint32_t slots)
    : arena_(arena), page_(arena != nullptr ? slots : 0, kNoPage) {}

absl::StatusOr<void*> KvPageSlots::Map(uint32_t slot, uint32_t arena_page) {
  if (arena_ == nullptr) {
    return absl::InvalidArgumentError("the executor owns its KV memory: no arena pages to map");
  }
  if (slot >= page_.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV page slot ", slot, " past the ", page_.size(), " slots"));
  }
  if (page_[slot] != kNoPage) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV page slot ", slot, " already holds arena page ", page_[slot]));
  }
  void* address = arena_->PageAddress(arena_page);
  if (address == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("no KV arena page ", arena_page));
  }
  // Two slots on one page would let two sequences' blocks overwrite each
  // other; a scan per map is cheap next to taking the page.
  if (auto it = std::find(page_.begin(), page_.end(), arena_page); it != page_.end()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KV arena page ", arena_page, " is already mapped in slot ", it - page_.begin()));
  }
  page_[slot] = arena_page;
  return address;
}

absl::Status KvPageSlots::Unmap(uint32_t slot) {
  if (slot >= page_.size() || page_[slot] == kNoPage) {
    return absl::InvalidArgumentError(absl::StrCat("KV page slot ", slot, " has no arena page"));
  }
  page_[slot] = kNoPage;
  return absl::OkStatus();
}

KvArenaPtr CreateKvArenaOver(KvRegion region, size_t page_bytes, uint32_t pages) {
  return KvArenaPtr(new RegionKvArena(std::move(region), page_bytes, pages));
}

}  // namespace tokenmill::devices
