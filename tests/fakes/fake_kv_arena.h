// FakeKvArena: a devices::KvArena of a fixed number of pages that hold no
// memory, for runtime tests that need an arena's bookkeeping (take, return,
// misses, bad returns) but no device. A test may shrink or grow it while
// instances run, as another model's weights would.
//
// Header-only. Thread-safe, as the interface requires.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "devices/kv_arena.h"

namespace tokenmill::fakes {

class FakeKvArena : public devices::KvArena {
 public:
  FakeKvArena(uint32_t pages, size_t page_bytes)
      : page_bytes_(page_bytes), cap_(pages), taken_(pages, false), addresses_(pages) {}

  std::optional<uint32_t> TakePage() override {
    absl::MutexLock lock(&mu_);
    if (TakenLocked() < cap_) {
      for (uint32_t p = 0; p < taken_.size(); ++p) {
        if (!taken_[p]) {
          taken_[p] = true;
          return p;
        }
      }
    }
    ++misses_;
    return std::nullopt;
  }

  void ReturnPage(uint32_t page) override {
    absl::MutexLock lock(&mu_);
    if (page >= taken_.size() || !taken_[page]) {
      ++bad_returns_;
      return;
    }
    taken_[page] = false;
  }

  // A distinct non-null address per taken page; nothing may be written there.
  void* PageAddress(uint32_t page) const override {
    absl::MutexLock lock(&mu_);
    if (page >= taken_.size() || !taken_[page]) return nullptr;
    return const_cast<char*>(&addresses_[page]);
  }

  uint64_t TrimFreeChunks() override { return 0; }

  devices::KvArenaStats Stats() const override {
    absl::MutexLock lock(&mu_);
    devices::KvArenaStats s;
    s.page_bytes = page_bytes_;
    const uint32_t taken = TakenLocked();
    s.pages_total = std::max(cap_, taken);
    s.pages_free = s.pages_total - taken;
    s.pages_backed = static_cast<uint32_t>(taken_.size());
    s.page_misses = misses_;
    s.bad_returns = bad_returns_;
    return s;
  }

  uint64_t page_misses() const override {
    absl::MutexLock lock(&mu_);
    return misses_;
  }

  // How many pages may be taken at once from now on (at most the pages the
  // arena was made with); pages already taken stay taken.
  void SetCapacity(uint32_t pages) {
    absl::MutexLock lock(&mu_);
    cap_ = std::min<uint32_t>(pages, static_cast<uint32_t>(taken_.size()));
  }

  uint32_t taken() const {
    absl::MutexLock lock(&mu_);
    return TakenLocked();
  }

 private:
  uint32_t TakenLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    uint32_t n = 0;
    for (bool t : taken_) n += t;
    return n;
  }

  const size_t page_bytes_;
  mutable absl::Mutex mu_;
  uint32_t cap_ ABSL_GUARDED_BY(mu_);
  std::vector<bool> taken_ ABSL_GUARDED_BY(mu_);
  std::vector<char> addresses_;  // one byte per page, for PageAddress
  uint64_t misses_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t bad_returns_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace tokenmill::fakes
