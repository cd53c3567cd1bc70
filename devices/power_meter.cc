#include "devices/power_meter.h"

#include <utility>

namespace tokenmill::devices {
namespace {

double Seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

}  // namespace

SteadyClock ClockOrSteady(SteadyClock clock) {
  if (clock) return clock;
  return [] { return std::chrono::steady_clock::now(); };
}

ConfiguredPowerMeter::ConfiguredPowerMeter(double watts, SteadyClock clock)
    : watts_(watts), clock_(ClockOrSteady(std::move(clock))), start_(clock_()) {}

PowerReading ConfiguredPowerMeter::Read() const {
  const double elapsed = Seconds(clock_() - start_);
  // A clock that steps back (only a fake one can) must not make energy shrink.
  return PowerReading{watts_, watts_ * (elapsed > 0.0 ? elapsed : 0.0)};
}

WrappingCounter::WrappingCounter(uint64_t first_reading, uint64_t range)
    : last_(first_reading), range_(range) {}

uint64_t WrappingCounter::Advance(uint64_t reading) {
  uint64_t increase = 0;
  if (reading >= last_) {
    increase = reading - last_;
  } else if (range_ >= last_) {
    increase = (range_ - last_) + reading;
  }
  last_ = reading;
  return increase;
}

std::optional<double> EnergyRate::Update(double joules, std::chrono::steady_clock::time_point now) {
  if (last_joules_.has_value()) {
    const double elapsed = Seconds(now - last_time_);
    if (elapsed <= 0.0) return last_watts_;
    last_watts_ = (joules - *last_joules_) / elapsed;
  }
  last_joules_ = joules;
  last_time_ = now;
  return last_watts_;
}

double PowerIntegrator::Add(double watts, std::chrono::steady_clock::time_point now) {
  if (last_time_.has_value()) {
    const double elapsed = Seconds(now - *last_time_);
    if (elapsed > 0.0) joules_ += watts * elapsed;
  }
  if (!last_time_.has_value() || now > *last_time_) last_time_ = now;
  return joules_;
}

}  // namespace tokenmill::devices
