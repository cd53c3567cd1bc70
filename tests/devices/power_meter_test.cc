#include "devices/power_meter.h"

#include <chrono>

#include "gtest/gtest.h"
#include "tests/devices/fixture_tree.h"

namespace tokenmill::devices {
namespace {

using std::chrono::milliseconds;
using testing::FakeClock;

TEST(WrappingCounterTest, CountsIncreasesAndOneWrap) {
  WrappingCounter counter(900, 1000);
  EXPECT_EQ(counter.Advance(950), 50u);
  EXPECT_EQ(counter.Advance(950), 0u);
  EXPECT_EQ(counter.Advance(30), 80u);  // 50 to the range, 30 after it
}

TEST(WrappingCounterTest, UnknownRangeNeverInventsEnergy) {
  WrappingCounter counter(900, 0);
  EXPECT_EQ(counter.Advance(100), 0u);
  EXPECT_EQ(counter.Advance(150), 50u);
}

TEST(ConfiguredPowerMeterTest, IntegratesWattsOverInjectedTime) {
  FakeClock clock;
  ConfiguredPowerMeter meter(250.0, clock.AsClock());
  EXPECT_DOUBLE_EQ(*meter.Read().joules, 0.0);
  clock.Advance(milliseconds(2000));
  const PowerReading reading = meter.Read();
  EXPECT_DOUBLE_EQ(*reading.watts, 250.0);
  EXPECT_DOUBLE_EQ(*reading.joules, 500.0);
}

TEST(EnergyRateTest, MeanPowerBetweenUpdates) {
  EnergyRate rate;
  const auto t0 = std::chrono::steady_clock::time_point{};
  EXPECT_FALSE(rate.Update(10.0, t0).has_value());
  EXPECT_DOUBLE_EQ(*rate.Update(30.0, t0 + milliseconds(500)), 40.0);
  // No time passed: the last figure stands rather than a division by zero.
  EXPECT_DOUBLE_EQ(*rate.Update(99.0, t0 + milliseconds(500)), 40.0);
  EXPECT_DOUBLE_EQ(*rate.Update(40.0, t0 + milliseconds(1500)), 10.0);
}

TEST(PowerIntegratorTest, EachReadingHoldsSinceThePrevious) {
  PowerIntegrator integrator;
  const auto t0 = std::chrono::steady_clock::time_point{};
  EXPECT_DOUBLE_EQ(integrator.Add(100.0, t0), 0.0);
  EXPECT_DOUBLE_EQ(integrator.Add(100.0, t0 + milliseconds(1000)), 100.0);
  EXPECT_DOUBLE_EQ(integrator.Add(300.0, t0 + milliseconds(1500)), 250.0);
}

}  // namespace
}  // namespace tokenmill::devices
