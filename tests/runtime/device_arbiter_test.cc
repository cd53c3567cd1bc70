// DeviceArbiter: exclusive grants, weighted fair shares of device time, and
// no starvation of a quiet client by a busy one.
#include "runtime/node/device_arbiter.h"

#include <algorithm>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"

namespace tokenmill::runtime {
namespace {

using std::chrono::nanoseconds;

constexpr nanoseconds kStep(1000000);  // device time charged per grant

// Clients on their own threads (as engine threads are), granted the device
// in lockstep under the test's control: the holder gives the device back
// (Next) only once every other client is blocked in the arbiter, so each
// grant is decided among all of them and the order of grants depends on the
// arbiter's rule alone, not on thread timing. No sleeps, no time windows.
class Lockstep {
 public:
  struct Client {
    uint32_t id;
    char tag;
    double weight;
  };

  Lockstep(DeviceArbiter& arbiter, std::vector<Client> clients)
      : arbiter_(arbiter), clients_(std::move(clients)) {}

  ~Lockstep() {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
    }
    for (auto& t : threads_) t.join();
  }

  // Starts the clients one by one, each only once the ones before it hold
  // the device or wait for it, so the first grants are deterministic too.
  void Start() {
    for (size_t i = 0; i < clients_.size(); ++i) {
      threads_.emplace_back([this, c = clients_[i]] { Run(c); });
      if (i == 0) {
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(
            +[](std::vector<char>* o) { return !o->empty(); }, &order_));
      } else {
        AwaitWaiting(i);
      }
    }
  }

  // Lets `grants` more grants happen and returns every grant so far, in order.
  std::vector<char> Grant(int grants) {
    for (int g = 0; g < grants; ++g) {
      size_t seen;
      {
        absl::MutexLock lock(&mu_);
        seen = order_.size();
      }
      // Everyone but the holder is blocked in the arbiter: now the holder goes.
      AwaitWaiting(clients_.size() - 1);
      {
        absl::MutexLock lock(&mu_);
        go_ = true;
        auto next_grant = [this, seen]()
                              ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return order_.size() > seen; };
        mu_.Await(absl::Condition(&next_grant));
      }
    }
    absl::MutexLock lock(&mu_);
    return order_;
  }

 private:
  void Run(Client c) {
    arbiter_.Acquire(c.id, c.weight);
    while (true) {
      {
        absl::MutexLock lock(&mu_);
        if (holders_++ != 0) overlap_ = true;
        order_.push_back(c.tag);
        auto released = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return go_ || stop_; };
        mu_.Await(absl::Condition(&released));
        --holders_;
        go_ = false;
        if (stop_) break;
      }
      arbiter_.Next(c.id, kStep, c.weight);
    }
    arbiter_.Release(c.id, kStep);
  }

  // Until `n` clients are blocked in the arbiter (a condition on the
  // arbiter's state, polled; the deadline only turns a hang into a failure).
  void AwaitWaiting(size_t n) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (true) {
      size_t waiting = 0;
      for (const auto& s : arbiter_.Stats()) waiting += s.waiting;
      if (waiting >= n) return;
      if (std::chrono::steady_clock::now() > deadline) {
        ADD_FAILURE() << "clients never reached the arbiter";
        return;
      }
      std::this_thread::yield();
    }
  }

 public:
  bool overlap() {
    absl::MutexLock lock(&mu_);
    return overlap_;
  }

 private:
  DeviceArbiter& arbiter_;
  const std::vector<Client> clients_;
  std::vector<std::thread> threads_;
  absl::Mutex mu_;
  std::vector<char> order_ ABSL_GUARDED_BY(mu_);
  int holders_ ABSL_GUARDED_BY(mu_) = 0;
  bool overlap_ ABSL_GUARDED_BY(mu_) = false;
  bool go_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
};

int Count(const std::vector<char>& order, char tag) {
  return static_cast<int>(std::count(order.begin(), order.end(), tag));
}

int LongestRun(const std::vector<char>& order, char tag) {
  int longest = 0, run = 0;
  for (char c : order) {
    run = c == tag ? run + 1 : 0;
    longest = std::max(longest, run);
  }
  return longest;
}

// Two clients always wanting the device, each step charged the same device
// time: grants follow the weights, exactly.
TEST(DeviceArbiterTest, BackloggedClientsShareByWeight) {
  DeviceArbiter arbiter("cpu");
  const uint32_t a = arbiter.Register("a");
  const uint32_t b = arbiter.Register("b");
  std::vector<char> order;
  {
    Lockstep run(arbiter, {{a, 'a', 3.0}, {b, 'b', 1.0}});
    run.Start();
    order = run.Grant(399);
    EXPECT_FALSE(run.overlap()) << "two clients held the device at once";
    uint64_t grants = 0;
    for (const auto& s : arbiter.Stats()) grants += s.grants;
    EXPECT_EQ(grants, 400u);
    EXPECT_EQ(arbiter.busy_time(), kStep * 399);  // the holder is not charged yet
  }
  ASSERT_EQ(order.size(), 400u);
  // Weighted fair queuing on equal steps: a gets 3 of every 4 grants.
  EXPECT_NEAR(Count(order, 'a'), 300, 2) << std::string(order.begin(), order.end());
  EXPECT_LE(LongestRun(order, 'a'), 4);
  EXPECT_LE(LongestRun(order, 'b'), 1);
}

// A client that was idle while another ran a long time is not made to wait
// for that other one's banked usage, and does not get a burst either: it is
// lifted to the busy one's virtual time and they alternate.
TEST(DeviceArbiterTest, ReturningClientIsLiftedNotStarved) {
  DeviceArbiter arbiter("cpu");
  const uint32_t busy = arbiter.Register("busy");
  const uint32_t quiet = arbiter.Register("quiet");
  for (int i = 0; i < 100; ++i) {
    arbiter.Acquire(busy, 1.0);
    arbiter.Release(busy, kStep);
  }
  arbiter.Idle(quiet);
  // Now both want it; grants must alternate, not give quiet 100 in a row.
  std::vector<char> order;
  {
    Lockstep run(arbiter, {{busy, 'b', 1.0}, {quiet, 'q', 1.0}});
    run.Start();
    order = run.Grant(59);
  }
  ASSERT_EQ(order.size(), 60u);
  EXPECT_NEAR(Count(order, 'q'), 30, 1) << std::string(order.begin(), order.end());
  EXPECT_LE(LongestRun(order, 'q'), 2) << "the quiet client got a burst from banked idle time";
  EXPECT_LE(LongestRun(order, 'b'), 2)
      << "the busy client kept the device while the quiet one waited";
}

TEST(DeviceArbiterTest, UnregisteredClientDoesNotBlock) {
  DeviceArbiter arbiter("cpu");
  const uint32_t a = arbiter.Register("a");
  arbiter.Acquire(a, 1.0);
  arbiter.Unregister(a);  // releases what it held
  const uint32_t b = arbiter.Register("b");
  arbiter.Acquire(b, 1.0);  // must not block
  arbiter.Release(b, nanoseconds(5));
  arbiter.Acquire(12345, 1.0);  // unknown: returns at once
  // Only b is left, with its one grant and the time it was charged.
  const auto stats = arbiter.Stats();
  ASSERT_EQ(stats.size(), 1u);
  EXPECT_EQ(stats[0].name, "b");
  EXPECT_EQ(stats[0].grants, 1u);
  EXPECT_EQ(arbiter.busy_time(), nanoseconds(5));
}

}  // namespace
}  // namespace tokenmill::runtime
