// FakeClock: a runtime::Clock that stands still until a test moves it.
//
// Header-only. Thread-safe: engine threads read it while the test advances
// it. Time never runs backwards (Advance takes a non-negative step).
#pragma once

#include <chrono>

#include "absl/synchronization/mutex.h"
#include "runtime/support/clock.h"

namespace tokenmill::fakes {

class FakeClock : public runtime::Clock {
 public:
  // Starts far from the steady clock's epoch, so that "now minus a margin"
  // stays a valid time point.
  explicit FakeClock(time_point start = time_point(std::chrono::hours(100000))) : now_(start) {}

  time_point Now() const override {
    absl::MutexLock lock(&mu_);
    return now_;
  }

  // Moves time forward by `step` (negative steps are ignored).
  void Advance(std::chrono::nanoseconds step) {
    absl::MutexLock lock(&mu_);
    if (step.count() > 0) now_ += step;
  }

 private:
  mutable absl::Mutex mu_;
  time_point now_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tokenmill::fakes
