// WorkerPool: every index exactly once, in contiguous per-thread chunks, and
// cheap enough to call ~10 times per layer.
#include "devices/cpu/worker_pool.h"

#include <sched.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <vector>

#include "devices/cpu/cpu_info.h"
#include "gtest/gtest.h"

namespace tokenmill::devices::cpu {
namespace {

TEST(WorkerPoolTest, CoversEveryIndexOnceInContiguousChunks) {
  WorkerPool pool(3);
  ASSERT_EQ(pool.threads(), 3);
  for (int64_t n : {0, 1, 2, 3, 7, 100, 1001}) {
    std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
    std::vector<int64_t> chunk_begin(3, -1), chunk_end(3, -1);
    pool.ParallelFor(n, [&](int64_t begin, int64_t end, int32_t thread) {
      ASSERT_GE(thread, 0);
      ASSERT_LT(thread, 3);
      ASSERT_LT(begin, end);
      chunk_begin[static_cast<size_t>(thread)] = begin;
      chunk_end[static_cast<size_t>(thread)] = end;
      for (int64_t i = begin; i < end; ++i) hits[static_cast<size_t>(i)]++;
    });
    for (int64_t i = 0; i < n; ++i) EXPECT_EQ(hits[static_cast<size_t>(i)].load(), 1) << n;
    // Chunks are ordered by thread and differ in size by at most one.
    int64_t next = 0, smallest = n, largest = 0;
    for (int t = 0; t < 3; ++t) {
      if (chunk_begin[static_cast<size_t>(t)] < 0) continue;
      EXPECT_EQ(chunk_begin[static_cast<size_t>(t)], next) << n;
      next = chunk_end[static_cast<size_t>(t)];
      smallest = std::min(smallest, next - chunk_begin[static_cast<size_t>(t)]);
      largest = std::max(largest, next - chunk_begin[static_cast<size_t>(t)]);
    }
    EXPECT_EQ(next, n);
    if (n >= 3) {
      EXPECT_LE(largest - smallest, 1) << n;
    }
  }
}

TEST(WorkerPoolTest, ManyBackToBackLoopsSeeEachOthersWrites) {
  WorkerPool pool(2);
  constexpr int kRounds = 5000;
  std::vector<int64_t> a(64, 0), b(64, 0);
  std::vector<int64_t>*src = &a, *dst = &b;
  for (int round = 0; round < kRounds; ++round) {
    // Each loop reads, reversed, what the previous loop wrote, so every
    // element crosses threads: a missed or stale write would show.
    pool.ParallelFor(64, [&](int64_t begin, int64_t end, int32_t) {
      for (int64_t i = begin; i < end; ++i) {
        (*dst)[static_cast<size_t>(i)] = (*src)[static_cast<size_t>(63 - i)] + 1;
      }
    });
    std::swap(src, dst);
  }
  for (int64_t v : *src) EXPECT_EQ(v, kRounds);
}

// With no thread count, a pool takes one thread per CPU the creating thread
// may run on (systemd's CPUAffinity=, taskset), not every CPU of the machine.
TEST(WorkerPoolTest, DefaultThreadsFollowTheAffinityMask) {
  cpu_set_t saved;
  CPU_ZERO(&saved);
  ASSERT_EQ(sched_getaffinity(0, sizeof(saved), &saved), 0);
  EXPECT_EQ(devices::UsableCpuCount(), CPU_COUNT(&saved));
  int first = 0;
  while (!CPU_ISSET(first, &saved)) ++first;
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(first, &one);
  ASSERT_EQ(sched_setaffinity(0, sizeof(one), &one), 0);  // this thread only
  const int32_t usable = devices::UsableCpuCount();
  const int32_t threads = WorkerPool(0).threads();
  ASSERT_EQ(sched_setaffinity(0, sizeof(saved), &saved), 0);
  EXPECT_EQ(usable, 1);
  EXPECT_EQ(threads, 1);
}

TEST(WorkerPoolTest, SingleThreadRunsInline) {
  WorkerPool pool(1);
  int calls = 0;
  pool.ParallelFor(10, [&](int64_t begin, int64_t end, int32_t thread) {
    ++calls;
    EXPECT_EQ(begin, 0);
    EXPECT_EQ(end, 10);
    EXPECT_EQ(thread, 0);
  });
  EXPECT_EQ(calls, 1);
  WorkerPool automatic(0);
  EXPECT_GE(automatic.threads(), 1);
}

TEST(WorkerPoolTest, IdleWorkersSleepAndWakeUp) {
  WorkerPool pool(2);
  std::atomic<int64_t> total{0};
  for (int i = 0; i < 3; ++i) {
    // Long enough for the workers to stop spinning and wait on the futex.
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    pool.ParallelFor(10, [&](int64_t begin, int64_t end, int32_t) { total += end - begin; });
  }
  EXPECT_EQ(total.load(), 30);
}

}  // namespace
}  // namespace tokenmill::devices::cpu
