// EncodePool alone: bounds, round-robin over keys, Stop() dropping waiting
// jobs and waiting for running ones. Jobs block on a latch the test opens,
// so every check runs while the pool is in a known state.
#include "daemon/encode_pool.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace tokenmill::daemon {
namespace {

using namespace std::chrono_literals;

// Jobs record their key in run order; the first job waits at the latch.
class Recorder {
 public:
  EncodePool::Job Job(std::string key, bool wait = false) {
    return [this, key, wait](bool dropped) {
      std::unique_lock lock(mu_);
      (dropped ? dropped_ : ran_).push_back(key);
      if (!dropped) threads_.push_back(std::this_thread::get_id());
      changed_.notify_all();
      if (wait) changed_.wait(lock, [this] { return open_; });
    };
  }
  void Open() {
    std::lock_guard lock(mu_);
    open_ = true;
    changed_.notify_all();
  }
  bool WaitRan(size_t n) {
    std::unique_lock lock(mu_);
    return changed_.wait_for(lock, 30s, [&] { return ran_.size() >= n; });
  }
  std::vector<std::string> ran() {
    std::lock_guard lock(mu_);
    return ran_;
  }
  std::vector<std::string> dropped() {
    std::lock_guard lock(mu_);
    return dropped_;
  }
  std::vector<std::thread::id> threads() {
    std::lock_guard lock(mu_);
    return threads_;
  }

 private:
  std::mutex mu_;
  std::condition_variable changed_;
  bool open_ = false;
  std::vector<std::string> ran_, dropped_;
  std::vector<std::thread::id> threads_;
};

TEST(EncodePoolTest, RunsJobsOnItsThreadsRoundRobinOverKeys) {
  Recorder recorder;
  EncodePool pool({.threads = 1, .max_queued = 16, .max_queued_per_key = 8});
  ASSERT_TRUE(pool.Submit("a", recorder.Job("a0", /*wait=*/true)).ok());
  ASSERT_TRUE(recorder.WaitRan(1));
  // While a0 runs: a burst of a, then one job each of b and c.
  for (const char* key : {"a1", "a2", "a3"}) ASSERT_TRUE(pool.Submit("a", recorder.Job(key)).ok());
  ASSERT_TRUE(pool.Submit("b", recorder.Job("b0")).ok());
  ASSERT_TRUE(pool.Submit("c", recorder.Job("c0")).ok());
  EXPECT_EQ(pool.stats().queued, 5u);
  EXPECT_EQ(pool.stats().running, 1u);
  recorder.Open();
  ASSERT_TRUE(recorder.WaitRan(6));
  // b and c wait for one job of a, not for a's whole burst.
  EXPECT_EQ(recorder.ran(), (std::vector<std::string>{"a0", "b0", "c0", "a1", "a2", "a3"}));
  for (std::thread::id id : recorder.threads()) EXPECT_NE(id, std::this_thread::get_id());
}

TEST(EncodePoolTest, BoundsWaitingJobsPerKeyAndInAll) {
  Recorder recorder;
  EncodePool pool({.threads = 1, .max_queued = 3, .max_queued_per_key = 2});
  ASSERT_TRUE(pool.Submit("a", recorder.Job("a0", /*wait=*/true)).ok());
  ASSERT_TRUE(recorder.WaitRan(1));  // running jobs take no waiting place
  ASSERT_TRUE(pool.Submit("a", recorder.Job("a1")).ok());
  ASSERT_TRUE(pool.Submit("a", recorder.Job("a2")).ok());
  EXPECT_EQ(pool.Submit("a", recorder.Job("a3")).code(), absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE(pool.Submit("b", recorder.Job("b0")).ok());
  EXPECT_EQ(pool.Submit("c", recorder.Job("c0")).code(), absl::StatusCode::kUnavailable);
  recorder.Open();
  ASSERT_TRUE(recorder.WaitRan(4));
  EXPECT_EQ(recorder.ran(), (std::vector<std::string>{"a0", "b0", "a1", "a2"}));
}

TEST(EncodePoolTest, StopDropsWaitingJobsAndWaitsForRunningOnes) {
  Recorder recorder;
  EncodePool pool({.threads = 2, .max_queued = 8, .max_queued_per_key = 8});
  ASSERT_TRUE(pool.Submit("a", recorder.Job("a0", /*wait=*/true)).ok());
  ASSERT_TRUE(pool.Submit("b", recorder.Job("b0", /*wait=*/true)).ok());
  ASSERT_TRUE(recorder.WaitRan(2));
  ASSERT_TRUE(pool.Submit("a", recorder.Job("a1")).ok());
  ASSERT_TRUE(pool.Submit("c", recorder.Job("c0")).ok());
  std::atomic<bool> stopped{false};
  std::thread stopper([&] {
    pool.Stop();
    stopped.store(true);
  });
  // The waiting jobs are called dropped before Stop() waits for a0 and b0.
  for (auto deadline = std::chrono::steady_clock::now() + 30s;
       recorder.dropped().size() < 2 && std::chrono::steady_clock::now() < deadline;) {
    std::this_thread::sleep_for(1ms);
  }
  EXPECT_EQ(recorder.dropped().size(), 2u);
  EXPECT_FALSE(stopped.load());
  recorder.Open();
  stopper.join();
  EXPECT_EQ(recorder.ran().size(), 2u);
  EXPECT_EQ(pool.Submit("a", recorder.Job("late")).code(), absl::StatusCode::kUnavailable);
  pool.Stop();  // idempotent
}

}  // namespace
}  // namespace tokenmill::daemon
