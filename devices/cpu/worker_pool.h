// WorkerPool: a fixed set of threads that run one data-parallel loop at a
// time for the CPU executor. A forward calls ParallelFor about ten times per
// layer, so a call must cost microseconds, not the tens of microseconds of a
// condition-variable round trip: workers spin briefly on a generation counter
// after each job and only then sleep on it (futex via std::atomic::wait).
#pragma once

#include <atomic>
#include <cstdint>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace tokenmill::devices::cpu {

class WorkerPool {
 public:
  // `threads` threads take part in each loop, the caller included, so
  // threads - 1 workers are started; threads <= 0 means one per CPU the
  // calling thread may run on (UsableCpuCount: its affinity mask).
  explicit WorkerPool(int32_t threads);
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  int32_t threads() const { return threads_; }

  // Splits [0, n) into threads() contiguous chunks (sizes differ by at most
  // one) and calls fn(begin, end, thread_index) once per non-empty chunk, the
  // calling thread running chunk 0; returns when all chunks are done.
  // thread_index < threads() lets the callee use per-thread scratch. Never
  // allocates. Not reentrant: fn must not call ParallelFor, and only one
  // thread may call it at a time (the executor's engine thread).
  template <typename Fn>
  void ParallelFor(int64_t n, Fn&& fn) {
    using F = std::remove_reference_t<Fn>;
    Run(n, const_cast<void*>(static_cast<const void*>(&fn)),
        [](void* ctx, int64_t begin, int64_t end, int32_t thread) {
          (*static_cast<F*>(ctx))(begin, end, thread);
        });
  }

 private:
  using Trampoline = void (*)(void* ctx, int64_t begin, int64_t end, int32_t thread);

  void Run(int64_t n, void* ctx, Trampoline call);
  void RunChunk(int32_t thread);
  void WorkerLoop(int32_t thread);

  const int32_t threads_;
  std::vector<std::thread> workers_;

  // The current job; written by the caller before it bumps generation_
  // (release), read by workers after they see the bump (acquire).
  void* job_ctx_ = nullptr;
  Trampoline job_call_ = nullptr;
  int64_t job_n_ = 0;

  // Each on its own cache line: workers poll generation_ while the caller
  // polls pending_.
  alignas(64) std::atomic<uint32_t> generation_{0};
  alignas(64) std::atomic<uint32_t> pending_{0};
  alignas(64) std::atomic<bool> stop_{false};
};

}  // namespace tokenmill::devices::cpu
