// KV arenas: chunks of device memory (ranges of one reservation on the host,
// a cudaMalloc each on a GPU) cut into pages, a min-heap of free backed page
// indices under a mutex. Page p lives in chunk slot p / chunk_pages.
#include "devices/kv_arena.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <functional>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "devices/cpu/cpu_info.h"

namespace tokenmill::devices {
namespace {

class ChunkedKvArena final : public KvArena {
 public:
  ChunkedKvArena(KvChunkSource source, KvArenaBudget budget, size_t page_bytes,
                 uint32_t chunk_pages)
      : source_(std::move(source)),
        budget_(budget),
        page_bytes_(page_bytes),
        chunk_pages_(chunk_pages),
        max_slots_(UINT32_MAX / chunk_pages) {}
  ~ChunkedKvArena() override {
    for (const Chunk& c : chunks_) {
      if (c.base != nullptr) source_.release(c.base, c.pages * page_bytes_);
    }
  }

  std::optional<uint32_t> TakePage() override {
    absl::MutexLock lock(&mu_);
    if (free_.empty() && !Grow()) {
      ++page_misses_;
      return std::nullopt;
    }
    std::pop_heap(free_.begin(), free_.end(), std::greater<>());
    const uint32_t page = free_.back();
    free_.pop_back();
    taken_[page] = 1;
    ++chunks_[page / chunk_pages_].taken;
    ++pages_taken_;
    return page;
  }

  void ReturnPage(uint32_t page) override {
    absl::MutexLock lock(&mu_);
    if (page >= taken_.size() || taken_[page] == 0) {
      ++bad_returns_;
      return;
    }
    // Dropped before the page is free again, so the next taker never sees
    // this instance's KV.
    if (source_.drop_page) source_.drop_page(AddressOf(page), page_bytes_);
    taken_[page] = 0;
    --chunks_[page / chunk_pages_].taken;
    --pages_taken_;
    free_.push_back(page);
    std::push_heap(free_.begin(), free_.end(), std::greater<>());
  }

  void* PageAddress(uint32_t page) const override {
    absl::MutexLock lock(&mu_);
    const uint32_t slot = page / chunk_pages_;
    if (slot >= chunks_.size() || chunks_[slot].base == nullptr ||
        page % chunk_pages_ >= chunks_[slot].pages) {
      return nullptr;
    }
    return AddressOf(page);
  }

  uint64_t TrimFreeChunks() override {
    absl::MutexLock lock(&mu_);
    uint64_t released = 0;
    for (uint32_t slot = 0; slot < chunks_.size(); ++slot) {
      Chunk& c = chunks_[slot];
      if (c.base == nullptr || c.taken > 0) continue;
      const size_t bytes = c.pages * page_bytes_;
      source_.release(c.base, bytes);
      released += bytes;
      pages_backed_ -= c.pages;
      c = Chunk{};
    }
    if (released > 0) {
      // Keep only the pages of chunks still backed.
      std::erase_if(free_, [&](uint32_t p) { return chunks_[p / chunk_pages_].base == nullptr; });
      std::make_heap(free_.begin(), free_.end(), std::greater<>());
      while (!chunks_.empty() && chunks_.back().base == nullptr) chunks_.pop_back();
      taken_.resize(chunks_.size() * size_t{chunk_pages_});
    }
    return released;
  }

  KvArenaStats Stats() const override {
    absl::MutexLock lock(&mu_);
    KvArenaStats s;
    s.page_bytes = page_bytes_;
    const uint64_t cap_pages =
        std::min<uint64_t>(CapBytes() / page_bytes_, uint64_t{max_slots_} * chunk_pages_);
    s.pages_total = static_cast<uint32_t>(std::max<uint64_t>(cap_pages, pages_taken_));
    s.pages_free = s.pages_total - pages_taken_;
    s.pages_backed = pages_backed_;
    for (const Chunk& c : chunks_) {
      if (source_.free_pages_hold_memory && c.base != nullptr && c.taken == 0) {
        s.pages_reclaimable += c.pages;
      }
    }
    s.page_misses = page_misses_;
    s.bad_returns = bad_returns_;
    return s;
  }

  uint64_t page_misses() const override {
    absl::MutexLock lock(&mu_);
    return page_misses_;
  }

 private:
  struct Chunk {
    void* base = nullptr;  // nullptr: slot not backed
    uint32_t pages = 0;    // backed pages (the last chunk under a cap may be short)
    uint32_t taken = 0;
  };

  uint8_t* AddressOf(uint32_t page) const ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    return static_cast<uint8_t*>(chunks_[page / chunk_pages_].base) +
           size_t{page % chunk_pages_} * page_bytes_;
  }

  // Device memory the arena holds (what free_bytes does not count as free).
  uint64_t HeldBytes() const ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    return uint64_t{source_.free_pages_hold_memory ? pages_backed_ : pages_taken_} * page_bytes_;
  }

  uint64_t CapBytes() const ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    if (budget_.bytes) return *budget_.bytes;
    // What the weights leave is what is free now plus what this arena holds.
    const double base =
        static_cast<double>(source_.free_bytes()) + static_cast<double>(HeldBytes());
    return static_cast<uint64_t>(base * budget_.fraction);
  }

  // Backs one more chunk (shorter when the cap leaves less) and adds its
  // pages to the free heap; false at the cap or when the device refuses.
  bool Grow() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const uint64_t cap = CapBytes();
    const uint64_t held = uint64_t{pages_backed_} * page_bytes_;
    const uint64_t room_pages = cap > held ? (cap - held) / page_bytes_ : 0;
    const uint32_t pages = static_cast<uint32_t>(std::min<uint64_t>(chunk_pages_, room_pages));
    if (pages == 0) return false;
    // The lowest empty slot, so page indices stay small.
    uint32_t slot = 0;
    while (slot < chunks_.size() && chunks_[slot].base != nullptr) ++slot;
    if (slot >= max_slots_) return false;
    void* base = source_.allocate(size_t{pages} * page_bytes_);
    if (base == nullptr) return false;
    if (slot == chunks_.size()) {
      chunks_.emplace_back();
      taken_.resize(chunks_.size() * size_t{chunk_pages_});
    }
    chunks_[slot] = Chunk{base, pages, 0};
    pages_backed_ += pages;
    for (uint32_t i = 0; i < pages; ++i) {
      free_.push_back(slot * chunk_pages_ + i);
      std::push_heap(free_.begin(), free_.end(), std::greater<>());
    }
    return true;
  }

  const KvChunkSource source_;
  const KvArenaBudget budget_;
  const size_t page_bytes_;
  const uint32_t chunk_pages_;
  const uint32_t max_slots_;  // page indices stay below 2^32
  mutable absl::Mutex mu_;
  std::vector<Chunk> chunks_ ABSL_GUARDED_BY(mu_);   // per slot
  std::vector<uint32_t> free_ ABSL_GUARDED_BY(mu_);  // min-heap of free backed pages
  std::vector<uint8_t> taken_ ABSL_GUARDED_BY(mu_);  // per page index: 1 while taken
  uint32_t pages_backed_ ABSL_GUARDED_BY(mu_) = 0;
  uint32_t pages_taken_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t page_misses_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t bad_returns_ ABSL_GUARDED_BY(mu_) = 0;
};

// /proc/meminfo, or nullopt when it cannot be read.
std::optional<MemInfo> ReadMemInfo() {
  std::ifstream in("/proc/meminfo");
  if (!in) return std::nullopt;
  std::stringstream text;
  text << in.rdbuf();
  absl::StatusOr<MemInfo> info = ParseMemInfo(text.str());
  if (!info.ok()) return std::nullopt;
  return *info;
}

// Chunk-sized ranges of one MAP_NORESERVE reservation, lowest free first.
// Shared by the arena's callbacks; only used under the arena's lock.
struct HostReservation {
  HostReservation(void* b, size_t total, size_t chunk)
      : base(static_cast<uint8_t*>(b)),
        bytes(total),
        chunk_bytes(chunk),
        in_use(total / chunk, 0) {}
  ~HostReservation() { munmap(base, bytes); }
  void* Allocate(size_t n) {
    if (n > chunk_bytes) return nullptr;
    for (size_t i = 0; i < in_use.size(); ++i) {
      if (!in_use[i]) {
        in_use[i] = 1;
        return base + i * chunk_bytes;
      }
    }
    return nullptr;
  }
  void Release(void* p, size_t n) {
    // The frames go back to the system; the range stays reserved.
    madvise(p, n, MADV_DONTNEED);
    in_use[static_cast<size_t>(static_cast<uint8_t*>(p) - base) / chunk_bytes] = 0;
  }
  uint8_t* const base;
  const size_t bytes;
  const size_t chunk_bytes;
  std::vector<uint8_t> in_use;  // per chunk range
};

absl::Status CheckBudget(const KvArenaBudget& budget, size_t page_bytes) {
  if (budget.bytes && *budget.bytes < page_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV arena of ", *budget.bytes, " bytes holds no page of ", page_bytes));
  }
  if (!budget.bytes && !(budget.fraction > 0.0 && budget.fraction <= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV arena share ", budget.fraction, " is not in (0, 1]"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<KvArenaPtr> CreateChunkedKvArena(KvChunkSource source, KvArenaBudget budget,
                                                size_t page_bytes, size_t chunk_bytes) {
  if (page_bytes == 0) return absl::InvalidArgumentError("KV page size is 0");
  if (!source.allocate || !source.release) {
    return absl::InvalidArgumentError("a KV chunk source needs allocate and release");
  }
  if (absl::Status s = CheckBudget(budget, page_bytes); !s.ok()) return s;
  if (!budget.bytes && !source.free_bytes) {
    return absl::InvalidArgumentError("a KV arena share needs the device's free memory");
  }
  const size_t chunk_pages = std::clamp<size_t>(chunk_bytes / page_bytes, 1, UINT32_MAX);
  return KvArenaPtr(new ChunkedKvArena(std::move(source), budget, page_bytes,
                                       static_cast<uint32_t>(chunk_pages)));
}

absl::StatusOr<KvArenaPtr> CreateHostKvArena(KvArenaBudget budget, size_t page_bytes,
                                             size_t chunk_bytes) {
  const long os_page = sysconf(_SC_PAGESIZE);
  if (page_bytes == 0 || os_page <= 0 || page_bytes % static_cast<size_t>(os_page) != 0) {
    // madvise works on whole OS pages: a KV page that split one would drop
    // its neighbour's bytes too.
    return absl::InvalidArgumentError(
        absl::StrCat("KV page size ", page_bytes, " is not a multiple of the OS page ", os_page));
  }
  if (absl::Status s = CheckBudget(budget, page_bytes); !s.ok()) return s;
  // The most the cap can reach: the byte budget, or the share of all memory.
  uint64_t most = 0;
  if (budget.bytes) {
    most = *budget.bytes;
  } else {
    const std::optional<MemInfo> mem = ReadMemInfo();
    if (!mem) return absl::UnavailableError("cannot read /proc/meminfo for the KV arena share");
    most = static_cast<uint64_t>(static_cast<double>(mem->total_bytes) * budget.fraction);
  }
  const uint64_t pages = std::min<uint64_t>(most / page_bytes, UINT32_MAX);
  if (pages == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV arena of ", most, " bytes holds no page of ", page_bytes));
  }
  const size_t chunk = std::clamp<size_t>(chunk_bytes / page_bytes, 1, UINT32_MAX) * page_bytes;
  const size_t chunks = (pages * page_bytes + chunk - 1) / chunk;
  const size_t total = chunks * chunk;
  void* base = mmap(nullptr, total, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (base == MAP_FAILED) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot reserve ", total, " bytes for the KV arena"));
  }
  auto reservation = std::make_shared<HostReservation>(base, total, chunk);
  KvChunkSource source;
  source.allocate = [reservation](size_t n) { return reservation->Allocate(n); };
  source.release = [reservation](void* p, size_t n) { reservation->Release(p, n); };
  // MADV_DONTNEED on private anonymous memory gives the frames back and
  // reads zeros afterwards.
  source.drop_page = [](void* page, size_t bytes) { madvise(page, bytes, MADV_DONTNEED); };
  // Returned pages are dropped, so only taken pages can hold memory.
  source.free_pages_hold_memory = false;
  if (!budget.bytes) {
    // MemAvailable counts untouched and dropped pages as free; the cap never
    // passes the reservation.
    source.free_bytes = [] {
      const std::optional<MemInfo> mem = ReadMemInfo();
      return mem ? mem->available_bytes : uint64_t{0};
    };
  } else {
    budget.bytes = pages * page_bytes;
  }
  return CreateChunkedKvArena(std::move(source), budget, page_bytes, chunk);
}

absl::StatusOr<KvArenaPtr> CreateHostKvArena(size_t bytes, size_t page_bytes) {
  KvArenaBudget budget;
  budget.bytes = bytes;
  return CreateHostKvArena(budget, page_bytes, kDefaultKvChunkBytes);
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

}  // namespace tokenmill::devices
