#include "devices/cpu/worker_pool.h"

#include "devices/cpu/cpu_info.h"

#include <algorithm>

namespace tokenmill::devices::cpu {
namespace {

// Spin iterations before sleeping. With a pause of ~20-60 ns this keeps a
// worker awake for ~50-100 us: longer than the gap between two loops of one
// forward, far shorter than the gap between steps, so idle pools sleep.
constexpr int kSpinIterations = 2000;

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

}  // namespace

WorkerPool::WorkerPool(int32_t threads) : threads_(threads > 0 ? threads : UsableCpuCount()) {
  workers_.reserve(static_cast<size_t>(threads_ - 1));
  for (int32_t t = 1; t < threads_; ++t) {
    workers_.emplace_back([this, t] { WorkerLoop(t); });
  }
}

WorkerPool::~WorkerPool() {
  stop_.store(true, std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_release);
  generation_.notify_all();
  for (auto& w : workers_) w.join();
}

void WorkerPool::RunChunk(int32_t thread) {
  // Chunk t covers [t * n / T, (t + 1) * n / T): contiguous, sizes within one.
  const int64_t begin = job_n_ * thread / threads_;
  const int64_t end = job_n_ * (thread + 1) / threads_;
  if (begin < end) job_call_(job_ctx_, begin, end, thread);
}

void WorkerPool::Run(int64_t n, void* ctx, Trampoline call) {
  if (n <= 0) return;
  if (threads_ == 1 || n == 1) {
    call(ctx, 0, n, 0);
    return;
  }
  job_ctx_ = ctx;
  job_call_ = call;
  job_n_ = n;
  pending_.store(static_cast<uint32_t>(threads_ - 1), std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_release);
  generation_.notify_all();  // cheap when no worker sleeps
  RunChunk(0);

  for (int i = 0; i < kSpinIterations; ++i) {
    if (pending_.load(std::memory_order_acquire) == 0) return;
    CpuRelax();
  }
  for (uint32_t left = pending_.load(std::memory_order_acquire); left != 0;
       left = pending_.load(std::memory_order_acquire)) {
    pending_.wait(left, std::memory_order_acquire);
  }
}

void WorkerPool::WorkerLoop(int32_t thread) {
  // Generation 0 is the state at construction; reading generation_ here
  // instead could skip a job that was posted before this thread got going.
  uint32_t seen = 0;
  while (true) {
    uint32_t now = generation_.load(std::memory_order_acquire);
    for (int i = 0; i < kSpinIterations && now == seen; ++i) {
      CpuRelax();
      now = generation_.load(std::memory_order_acquire);
    }
    while (now == seen) {
      generation_.wait(seen, std::memory_order_acquire);
      now = generation_.load(std::memory_order_acquire);
    }
    seen = now;
    if (stop_.load(std::memory_order_relaxed)) return;
    RunChunk(thread);
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) pending_.notify_one();
  }
}

}  // namespace tokenmill::devices::cpu
