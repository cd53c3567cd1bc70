#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"
#include "telemetry/metrics.h"
#include "tests/fakes/fake_device.h"
#include "tests/telemetry/exposition.h"

namespace tokenmill::telemetry {
namespace {

using exposition::SeriesValue;
using ::testing::HasSubstr;
using ::testing::Not;

std::string Scrape(prometheus::Registry& registry) {
  return prometheus::TextSerializer().Serialize(registry.Collect());
}

devices::DeviceSample FullSample(double energy_joules) {
  devices::DeviceSample sample;
  sample.memory_total_bytes = 80ull << 30;
  sample.memory_used_bytes = 3ull << 30;
  sample.power_watts = 312.5;
  sample.energy_joules = energy_joules;
  sample.utilization_ratio = 0.75;
  sample.temperature_celsius = 61;
  return sample;
}

class DeviceSamplerTest : public ::testing::Test {
 protected:
  DeviceSamplerTest() : full_("cuda:0"), empty_("plugin:empty") {
    full_.SetNextSample(FullSample(1000));
  }
  std::vector<devices::Device*> Devices() { return {&full_, &empty_}; }

  prometheus::Registry registry_;
  fakes::FakeDevice full_;
  fakes::FakeDevice empty_;
};

TEST_F(DeviceSamplerTest, ExportsWhatTheDeviceReadsAndNothingElse) {
  DeviceSampler sampler(registry_, Devices(), std::chrono::milliseconds(0));
  const std::string text = Scrape(registry_);
  EXPECT_EQ(SeriesValue(text, R"(tokenmill_device_memory_bytes{device="cuda:0",state="total"})"),
            double(80ull << 30));
  EXPECT_EQ(SeriesValue(text, R"(tokenmill_device_memory_bytes{device="cuda:0",state="used"})"),
            double(3ull << 30));
  EXPECT_EQ(SeriesValue(text, R"(tokenmill_device_power_watts{device="cuda:0"})"), 312.5);
  EXPECT_EQ(SeriesValue(text, R"(tokenmill_device_utilization_ratio{device="cuda:0"})"), 0.75);
  EXPECT_EQ(SeriesValue(text, R"(tokenmill_device_temperature_celsius{device="cuda:0"})"), 61);
  // The first reading is the baseline.
  EXPECT_EQ(SeriesValue(text, R"(tokenmill_energy_joules_total{device="cuda:0"})"), 0);
  EXPECT_THAT(text, Not(HasSubstr(R"(device="plugin:empty")")));
  EXPECT_THAT(text, HasSubstr("# HELP tokenmill_device_power_watts "));
}

TEST_F(DeviceSamplerTest, EnergyCountsPositiveDeltasAcrossResets) {
  DeviceSampler sampler(registry_, Devices(), std::chrono::milliseconds(0));  // baseline 1000
  const std::vector<std::optional<double>> readings = {1050, 1075, 10 /* reset */, 30, std::nullopt,
                                                       50,   50};
  for (const std::optional<double>& joules : readings) {
    devices::DeviceSample sample = FullSample(0);
    sample.energy_joules = joules;
    full_.SetNextSample(sample);
    sampler.SampleOnce();
  }
  // 50 + 25 + (reset: nothing) + 20 + (unreadable: nothing) + 20 + 0.
  EXPECT_EQ(SeriesValue(Scrape(registry_), R"(tokenmill_energy_joules_total{device="cuda:0"})"),
            115);
}

TEST_F(DeviceSamplerTest, GaugeLeavesWhenTheFigureGoesAndComesBack) {
  DeviceSampler sampler(registry_, Devices(), std::chrono::milliseconds(0));
  const std::string series = R"(tokenmill_device_power_watts{device="cuda:0"})";
  devices::DeviceSample sample = FullSample(1000);
  sample.power_watts.reset();
  full_.SetNextSample(sample);
  sampler.SampleOnce();
  EXPECT_EQ(SeriesValue(Scrape(registry_), series), std::nullopt);
  sample.power_watts = 100;
  full_.SetNextSample(sample);
  sampler.SampleOnce();
  EXPECT_EQ(SeriesValue(Scrape(registry_), series), 100);
}

TEST_F(DeviceSamplerTest, EmptyDeviceGainsGaugesOnceItReports) {
  DeviceSampler sampler(registry_, Devices(), std::chrono::milliseconds(0));
  devices::DeviceSample sample;
  sample.temperature_celsius = 40;
  empty_.SetNextSample(sample);
  sampler.SampleOnce();
  const std::string text = Scrape(registry_);
  EXPECT_EQ(SeriesValue(text, R"(tokenmill_device_temperature_celsius{device="plugin:empty"})"),
            40);
  EXPECT_EQ(SeriesValue(text, R"(tokenmill_device_power_watts{device="plugin:empty"})"),
            std::nullopt);
}

TEST_F(DeviceSamplerTest, LatestFollowsConstructorOrder) {
  DeviceSampler sampler(registry_, Devices(), std::chrono::milliseconds(0));
  full_.SetNextSample(FullSample(2000));
  sampler.SampleOnce();
  const std::vector<devices::DeviceSample> latest = sampler.Latest();
  ASSERT_EQ(latest.size(), 2u);
  EXPECT_EQ(latest[0].energy_joules, 2000);
  EXPECT_EQ(latest[1].energy_joules, std::nullopt);
  EXPECT_EQ(latest[1].memory_total_bytes, 0u);
}

TEST_F(DeviceSamplerTest, DestructionRemovesItsSeries) {
  { DeviceSampler sampler(registry_, Devices(), std::chrono::milliseconds(0)); }
  EXPECT_THAT(Scrape(registry_), Not(HasSubstr(R"(device="cuda:0")")));
}

TEST_F(DeviceSamplerTest, ThreadSamplesEveryInterval) {
  DeviceSampler sampler(registry_, Devices(), std::chrono::milliseconds(2));
  // Waits on the device's own count of samples (a notification, not a poll);
  // the timeout only turns a sampler that never samples into a failure.
  EXPECT_TRUE(full_.AwaitSampleCalls(5, absl::Seconds(60)));
}

// With an interval of a day, the thread's first wait outlasts any test run:
// destruction returns only because it wakes the thread. A sampler that
// waited out its interval would hang here until ctest's timeout fails the
// test; no wall-clock bound is needed, and none is measured.
TEST_F(DeviceSamplerTest, DestructionIsPromptWithALongInterval) {
  auto sampler = std::make_unique<DeviceSampler>(registry_, Devices(), std::chrono::hours(24));
  sampler.reset();
  EXPECT_EQ(full_.sample_calls(), 1u);  // only the constructor's sample
}

TEST_F(DeviceSamplerTest, ConcurrentSamplesAndReads) {
  DeviceSampler sampler(registry_, Devices(), std::chrono::milliseconds(1));
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 200; ++i) {
        sampler.SampleOnce();
        EXPECT_EQ(sampler.Latest().size(), 2u);
        Scrape(registry_);
      }
    });
  }
  for (double joules = 1000; joules < 1200; ++joules) full_.SetNextSample(FullSample(joules));
  for (std::thread& thread : threads) thread.join();
  full_.SetNextSample(FullSample(1200));
  sampler.SampleOnce();
  // However the readings interleaved, they only rose from 1000 to 1200.
  EXPECT_EQ(SeriesValue(Scrape(registry_), R"(tokenmill_energy_joules_total{device="cuda:0"})"),
            200);
}

}  // namespace
}  // namespace tokenmill::telemetry
