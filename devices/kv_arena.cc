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

KvArenaPtr CreateKvArenaOver(KvRegion region, size_t page_bytes, uint32_t pages) {
  return KvArenaPtr(new RegionKvArena(std::move(region), page_bytes, pages));
}

}  // namespace tokenmill::devices
