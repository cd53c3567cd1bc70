// Turning power probes into the power and energy figures of a DeviceSample.
//
// Probes come in three shapes: a cumulative energy counter that may wrap
// (RAPL energy_uj), an instantaneous power reading (NVML power), or nothing,
// in which case the operator's configured wattage stands in. The helpers here
// are plain value types, not thread safe; each Device owns its own.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>

namespace tokenmill::devices {

// Source of steady time, injected so tests control elapsed time.
using SteadyClock = std::function<std::chrono::steady_clock::time_point()>;

// `clock` itself, or std::chrono::steady_clock::now when it is empty.
SteadyClock ClockOrSteady(SteadyClock clock);

// Power and energy as a probe sees them; nullopt where it cannot tell.
struct PowerReading {
  std::optional<double> watts;
  std::optional<double> joules;  // monotonic since the meter was made
};

// Stands in for a missing probe: the configured wattage, drawn constantly
// since construction, so energy = watts x elapsed steady time.
class ConfiguredPowerMeter {
 public:
  ConfiguredPowerMeter(double watts, SteadyClock clock);

  PowerReading Read() const;

 private:
  double watts_;
  SteadyClock clock_;
  std::chrono::steady_clock::time_point start_;
};

// A hardware counter of `range` units that restarts at 0 when it passes
// range (RAPL's max_energy_range_uj). Advance() returns the increase since
// the previous reading, counting a decrease as exactly one wrap; with an
// unknown range (0) a decrease counts as no increase, since guessing could
// add energy that was never drawn.
class WrappingCounter {
 public:
  WrappingCounter(uint64_t first_reading, uint64_t range);

  uint64_t Advance(uint64_t reading);

 private:
  uint64_t last_;
  uint64_t range_;
};

// Mean power between successive energy totals: delta joules / delta seconds.
class EnergyRate {
 public:
  // Records `joules` at `now`. Returns the mean power since the previous
  // record, or the last computed figure when no time has passed, or nullopt
  // on the first record.
  std::optional<double> Update(double joules, std::chrono::steady_clock::time_point now);

 private:
  std::optional<double> last_joules_;
  std::chrono::steady_clock::time_point last_time_{};
  std::optional<double> last_watts_;
};

// Energy from power readings alone (a GPU whose driver reports power but no
// energy counter): each reading is taken to hold since the previous one.
class PowerIntegrator {
 public:
  // Adds the interval since the previous call at `watts`; returns the total.
  double Add(double watts, std::chrono::steady_clock::time_point now);

 private:
  std::optional<std::chrono::steady_clock::time_point> last_time_;
  double joules_ = 0.0;
};

}  // namespace tokenmill::devices
