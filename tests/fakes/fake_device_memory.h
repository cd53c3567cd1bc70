// FakeDeviceMemory: a device's memory as a KV arena's chunk source sees it,
// with the device's accounting (total, used, free) a test can read and spend
// (the weights of a model it pretends to load).
//
// Header-only; thread-safe. Allocations are either real host memory (a test
// may write pages; keep the totals small) or, for a simulated large device
// (80 GiB), distinct fake addresses that must never be touched.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <map>

#include "absl/synchronization/mutex.h"
#include "devices/kv_arena.h"

namespace tokenmill::fakes {

class FakeDeviceMemory {
 public:
  FakeDeviceMemory(uint64_t total_bytes, bool real_memory)
      : total_(total_bytes), real_(real_memory) {}
  ~FakeDeviceMemory() {
    for (const auto& [p, bytes] : live_) {
      if (real_) std::free(p);
    }
  }
  FakeDeviceMemory(const FakeDeviceMemory&) = delete;
  FakeDeviceMemory& operator=(const FakeDeviceMemory&) = delete;

  // `bytes` of the device, or nullptr when they do not fit in what is free.
  void* Allocate(uint64_t bytes) {
    absl::MutexLock lock(&mu_);
    if (bytes == 0 || bytes > total_ - used_) return nullptr;
    void* p = nullptr;
    if (real_) {
      p = std::malloc(bytes);
      if (p == nullptr) return nullptr;
    } else {
      p = reinterpret_cast<void*>(next_fake_);
      next_fake_ += (bytes + 4095) / 4096 * 4096;
    }
    live_[p] = bytes;
    used_ += bytes;
    ++allocations_;
    return p;
  }
  void Release(void* p) {
    absl::MutexLock lock(&mu_);
    auto it = live_.find(p);
    if (it == live_.end()) {
      ++bad_releases_;
      return;
    }
    used_ -= it->second;
    if (real_) std::free(p);
    live_.erase(it);
    ++releases_;
  }

  uint64_t total_bytes() const { return total_; }
  uint64_t used_bytes() const {
    absl::MutexLock lock(&mu_);
    return used_;
  }
  uint64_t free_bytes() const {
    absl::MutexLock lock(&mu_);
    return total_ - used_;
  }
  uint64_t allocations() const {
    absl::MutexLock lock(&mu_);
    return allocations_;
  }
  uint64_t releases() const {
    absl::MutexLock lock(&mu_);
    return releases_;
  }
  // Releases of an address that was not allocated (or twice).
  uint64_t bad_releases() const {
    absl::MutexLock lock(&mu_);
    return bad_releases_;
  }

  // A chunk source over this memory, as a device backend makes one (a
  // cudaMalloc per chunk, cudaMemGetInfo for the free memory). This object
  // must outlive the arena.
  devices::KvChunkSource ChunkSource() {
    devices::KvChunkSource s;
    s.allocate = [this](size_t bytes) { return Allocate(bytes); };
    s.release = [this](void* p, size_t) { Release(p); };
    s.free_bytes = [this] { return free_bytes(); };
    return s;
  }

 private:
  const uint64_t total_;
  const bool real_;
  mutable absl::Mutex mu_;
  std::map<void*, uint64_t> live_ ABSL_GUARDED_BY(mu_);
  uintptr_t next_fake_ ABSL_GUARDED_BY(mu_) = uintptr_t{1} << 44;
  uint64_t used_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t allocations_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t releases_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t bad_releases_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace tokenmill::fakes
