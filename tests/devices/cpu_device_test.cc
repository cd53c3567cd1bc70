#include "devices/cpu/cpu_device.h"

#include <chrono>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/devices/fixture_tree.h"

namespace tokenmill::devices {
namespace {

using std::chrono::milliseconds;
using testing::FakeClock;
using testing::FixtureTree;

constexpr char kRapl0[] = "sys/class/powercap/intel-rapl:0/energy_uj";
constexpr char kRapl1[] = "sys/class/powercap/intel-rapl:1/energy_uj";

std::unique_ptr<CpuDevice> MakeCpu(const DiscoveryOptions& options) {
  absl::StatusOr<std::unique_ptr<CpuDevice>> cpu = CpuDevice::Create(options);
  EXPECT_TRUE(cpu.ok()) << cpu.status();
  return cpu.ok() ? std::move(*cpu) : nullptr;
}

TEST(CpuDeviceTest, InfoFromX86ServerFixture) {
  FixtureTree tree("x86_server");
  std::unique_ptr<CpuDevice> cpu = MakeCpu({.root = tree.root()});
  ASSERT_NE(cpu, nullptr);
  const DeviceInfo& info = cpu->Info();
  EXPECT_EQ(info.id, "cpu");
  EXPECT_EQ(info.kind, DeviceKind::kCpu);
  EXPECT_EQ(info.name, "Intel(R) Xeon(R) Platinum 8480+");
  EXPECT_EQ(info.memory_total_bytes, 527988392ull * 1024);
  ASSERT_TRUE(info.cpu.has_value());
  EXPECT_EQ(info.cpu->sockets, 2u);
  EXPECT_EQ(info.cpu->physical_cores, 4u);
  EXPECT_EQ(info.cpu->logical_cpus, 8u);
  EXPECT_EQ(info.cpu->numa_nodes, 2u);
  EXPECT_EQ(info.cpu->power_source, "rapl");
  EXPECT_THAT(info.cpu->simd, ::testing::Contains("amx_bf16"));
}

TEST(CpuDeviceTest, MissingNodeOnlineMeansOneNumaNode) {
  FixtureTree tree("x86_server");
  tree.Remove("sys/devices/system/node");
  std::unique_ptr<CpuDevice> cpu = MakeCpu({.root = tree.root()});
  ASSERT_NE(cpu, nullptr);
  EXPECT_EQ(cpu->Info().cpu->numa_nodes, 1u);
}

TEST(CpuDeviceTest, MissingCpuInfoIsAnError) {
  FixtureTree tree("");
  EXPECT_EQ(CpuDevice::Create({.root = tree.root()}).status().code(), absl::StatusCode::kNotFound);
}

TEST(CpuDeviceTest, SampleMemoryTemperatureAndUtilization) {
  FixtureTree tree("x86_server");
  std::unique_ptr<CpuDevice> cpu = MakeCpu({.root = tree.root()});
  ASSERT_NE(cpu, nullptr);
  const DeviceSample first = cpu->Sample();
  EXPECT_EQ(first.memory_total_bytes, 527988392ull * 1024);
  EXPECT_EQ(first.memory_used_bytes, 27988392ull * 1024);
  EXPECT_FALSE(first.utilization_ratio.has_value()) << "needs two readings";
  ASSERT_TRUE(first.temperature_celsius.has_value());
  EXPECT_DOUBLE_EQ(*first.temperature_celsius, 64.5);  // the hotter package, not acpitz

  std::filesystem::copy_file(tree.root() / "proc/stat.later", tree.root() / "proc/stat",
                             std::filesystem::copy_options::overwrite_existing);
  const DeviceSample second = cpu->Sample();
  ASSERT_TRUE(second.utilization_ratio.has_value());
  EXPECT_DOUBLE_EQ(*second.utilization_ratio, 0.6);
}

TEST(CpuDeviceTest, RaplEnergySumsPackagesAcrossWrapAround) {
  FixtureTree tree("x86_server");
  // Packages wrap at 10 J so the test can cross the range.
  tree.Write("sys/class/powercap/intel-rapl:0/max_energy_range_uj", "10000000\n");
  FakeClock clock;
  std::unique_ptr<CpuDevice> cpu =
      MakeCpu({.root = tree.root(), .cpu_watts = 999.0, .clock = clock.AsClock()});
  ASSERT_NE(cpu, nullptr);
  EXPECT_EQ(cpu->Info().cpu->power_source, "rapl");  // RAPL wins over configured watts

  // Origins: package 0 at 1 J, package 1 at 5 J.
  clock.Advance(milliseconds(1000));
  tree.Write(kRapl0, "3000000\n");  // +2 J
  tree.Write(kRapl1, "6000000\n");  // +1 J
  DeviceSample s = cpu->Sample();
  ASSERT_TRUE(s.energy_joules.has_value());
  EXPECT_DOUBLE_EQ(*s.energy_joules, 3.0);
  ASSERT_TRUE(s.power_watts.has_value());
  EXPECT_DOUBLE_EQ(*s.power_watts, 3.0);

  clock.Advance(milliseconds(2000));
  tree.Write(kRapl0, "1000000\n");  // wrapped: 7 J to the range, then 1 J
  tree.Write(kRapl1, "7000000\n");  // +1 J
  s = cpu->Sample();
  EXPECT_DOUBLE_EQ(*s.energy_joules, 12.0);
  EXPECT_DOUBLE_EQ(*s.power_watts, 4.5);  // 9 J over 2 s
}

TEST(CpuDeviceTest, UnreadableRaplFallsBackToConfiguredWatts) {
  FixtureTree tree("x86_server");
  // What a non-root daemon sees since kernel 5.10: the zone, no readable counter.
  tree.Remove(kRapl0);
  tree.Remove(kRapl1);
  FakeClock clock;
  std::unique_ptr<CpuDevice> cpu =
      MakeCpu({.root = tree.root(), .cpu_watts = 350.0, .clock = clock.AsClock()});
  ASSERT_NE(cpu, nullptr);
  EXPECT_EQ(cpu->Info().cpu->power_source, "configured");
  clock.Advance(milliseconds(4000));
  const DeviceSample s = cpu->Sample();
  EXPECT_DOUBLE_EQ(*s.power_watts, 350.0);
  EXPECT_DOUBLE_EQ(*s.energy_joules, 1400.0);
}

TEST(CpuDeviceTest, NoProbeAndNoWattsGivesNoPowerFigure) {
  FixtureTree tree("aarch64");
  std::unique_ptr<CpuDevice> cpu = MakeCpu({.root = tree.root()});
  ASSERT_NE(cpu, nullptr);
  EXPECT_EQ(cpu->Info().cpu->power_source, "none");
  EXPECT_EQ(cpu->Info().name, "ARM Neoverse-V2");
  const DeviceSample s = cpu->Sample();
  EXPECT_FALSE(s.power_watts.has_value());
  EXPECT_FALSE(s.energy_joules.has_value());
  EXPECT_FALSE(s.temperature_celsius.has_value());
  EXPECT_EQ(s.memory_used_bytes, 580u * 1024);
}

}  // namespace
}  // namespace tokenmill::devices
