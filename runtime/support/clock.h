// Clock: where the model instances and metering read monotonic time
// (request deadlines, queue and first-token times, a step's measured time,
// which the device arbiter is charged, and the cost ledger's intervals). The composition root
// (daemon/) owns one SteadyClock and passes it by reference; tests pass tests/fakes/fake_clock.h
// and move time by hand instead of waiting on it.
#pragma once

#include <chrono>

namespace tokenmill::runtime {

class Clock {
 public:
  using time_point = std::chrono::steady_clock::time_point;
  virtual ~Clock() = default;
  // Monotonic time now. Thread-safe: every engine thread and the metering
  // ticker read the same clock.
  virtual time_point Now() const = 0;
};

// The production clock: std::chrono::steady_clock.
class SteadyClock final : public Clock {
 public:
  time_point Now() const override { return std::chrono::steady_clock::now(); }
};

}  // namespace tokenmill::runtime
