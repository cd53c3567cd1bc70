// DeviceArbiter: exclusive grants, weighted fair shares of device time, and
// no starvation of a quiet client by a busy one.
#include "runtime/node/device_arbiter.h"

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace tokenmill::runtime {
namespace {

using std::chrono::microseconds;
using std::chrono::nanoseconds;

// Two clients always wanting the device, each step charged the same device
// time: grants follow the weights.
TEST(DeviceArbiterTest, BackloggedClientsShareByWeight) {
  DeviceArbiter arbiter("cpu");
  const uint32_t a = arbiter.Register("a");
  const uint32_t b = arbiter.Register("b");
  std::atomic<bool> stop{false};
  std::atomic<int> holders{0};
  std::atomic<bool> overlap{false};
  auto run = [&](uint32_t client, double weight) {
    arbiter.Acquire(client, weight);
    while (true) {
      if (holders.fetch_add(1) != 0) overlap = true;
      std::this_thread::sleep_for(microseconds(200));
      holders.fetch_sub(1);
      if (stop.load()) break;
      arbiter.Next(client, nanoseconds(1000000), weight);  // 1 ms charged per step
    }
    arbiter.Release(client, nanoseconds(1000000));
  };
  std::thread ta(run, a, 3.0);
  std::thread tb(run, b, 1.0);
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  stop = true;
  ta.join();
  tb.join();
  EXPECT_FALSE(overlap.load()) << "two clients held the device at once";
  uint64_t grants_a = 0, grants_b = 0;
  for (const auto& s : arbiter.Stats()) (s.name == "a" ? grants_a : grants_b) = s.grants;
  ASSERT_GT(grants_b, 20u);
  const double ratio = static_cast<double>(grants_a) / static_cast<double>(grants_b);
  EXPECT_NEAR(ratio, 3.0, 0.45) << grants_a << " vs " << grants_b;
  EXPECT_EQ(arbiter.busy_time(), nanoseconds(1000000) * static_cast<int64_t>(grants_a + grants_b));
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
    arbiter.Release(busy, nanoseconds(1000000));
  }
  arbiter.Idle(quiet);
  // Now both want it; grants must alternate, not give quiet 100 in a row.
  // The busy thread may run alone for a while before the quiet one reaches
  // Acquire (thread start on a loaded machine), so the grants are judged
  // from the quiet client's first one, when both are contending.
  std::vector<char> order;
  std::atomic<bool> stop{false};
  absl::Mutex mu;
  int quiet_grants = 0;
  auto run = [&](uint32_t client, char tag) {
    arbiter.Acquire(client, 1.0);
    while (true) {
      {
        absl::MutexLock lock(&mu);
        order.push_back(tag);
        if (tag == 'q') ++quiet_grants;
        if (quiet_grants >= 20 || order.size() >= 5000) stop = true;
      }
      std::this_thread::sleep_for(microseconds(100));
      if (stop.load()) break;
      arbiter.Next(client, nanoseconds(1000000), 1.0);
    }
    arbiter.Release(client, nanoseconds(1000000));
  };
  std::thread t1(run, busy, 'b');
  std::thread t2(run, quiet, 'q');
  t1.join();
  t2.join();
  const auto first_quiet = std::find(order.begin(), order.end(), 'q');
  ASSERT_NE(first_quiet, order.end()) << "the quiet client never got the device";
  int quiet_count = 0, contended = 0;
  int longest_quiet_run = 0, longest_busy_run = 0, quiet_run = 0, busy_run = 0;
  for (auto it = first_quiet; it != order.end(); ++it, ++contended) {
    if (*it == 'q') {
      ++quiet_count;
      busy_run = 0;
      longest_quiet_run = std::max(longest_quiet_run, ++quiet_run);
    } else {
      quiet_run = 0;
      longest_busy_run = std::max(longest_busy_run, ++busy_run);
    }
  }
  EXPECT_GE(quiet_count * 10, contended * 4)
      << quiet_count << " of " << contended << " contended grants: the quiet client was starved";
  EXPECT_LE(longest_quiet_run, 3) << "the quiet client got a burst from banked idle time";
  EXPECT_LE(longest_busy_run, 3) << "the busy client kept the device while the quiet one waited";
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
