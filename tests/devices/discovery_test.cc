#include "devices/discovery.h"

#include <chrono>

#include "devices/dynamic_library.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/devices/fixture_tree.h"

namespace tokenmill::devices {
namespace {

using std::chrono::milliseconds;
using testing::FakeClock;
using testing::FixtureTree;
using ::testing::HasSubstr;

constexpr char kMissingLibrary[] = "/nonexistent/tokenmill/libcuda.so.1";

TEST(DynamicLibraryTest, MissingFileAndMissingSymbol) {
  absl::StatusOr<DynamicLibrary> missing = DynamicLibrary::Open(kMissingLibrary);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr(kMissingLibrary));

  absl::StatusOr<DynamicLibrary> driver = DynamicLibrary::Open(FAKE_CUDA_DRIVER);
  ASSERT_TRUE(driver.ok()) << driver.status();
  int (*init)(unsigned int) = nullptr;
  EXPECT_TRUE(driver->Resolve("cuInit", &init).ok());
  ASSERT_NE(init, nullptr);
  EXPECT_EQ(init(0), 0);
  EXPECT_EQ(driver->Resolve("cuNoSuchCall", &init).code(), absl::StatusCode::kNotFound);
}

TEST(DiscoverTest, MissingCudaLibraryGivesOnlyTheCpuAndAReason) {
  FixtureTree tree("x86_server");
  DiscoveryOptions options{.root = tree.root()};
  options.cuda_driver_library = kMissingLibrary;
  options.nvml_library = "/nonexistent/tokenmill/libnvidia-ml.so.1";
  absl::StatusOr<Discovery> found = Discover(options);
  ASSERT_TRUE(found.ok()) << found.status();
  ASSERT_EQ(found->devices.size(), 1u);
  EXPECT_EQ(found->devices[0]->Info().id, "cpu");
  EXPECT_THAT(found->cuda_unavailable_reason, HasSubstr(kMissingLibrary));
}

TEST(DiscoverTest, CudaOffLooksForNothing) {
  FixtureTree tree("x86_server");
  DiscoveryOptions options{.root = tree.root(), .cuda = false};
  options.cuda_driver_library = FAKE_CUDA_DRIVER;
  absl::StatusOr<Discovery> found = Discover(options);
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(found->devices.size(), 1u);
  EXPECT_EQ(found->cuda_unavailable_reason, "");
}

TEST(DiscoverTest, FailingCuInitIsNoGpuWithTheDriverReason) {
  FixtureTree tree("x86_server");
  DiscoveryOptions options{.root = tree.root()};
  options.cuda_driver_library = FAKE_CUDA_DRIVER_NO_DEVICE;
  absl::StatusOr<Discovery> found = Discover(options);
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(found->devices.size(), 1u);
  EXPECT_THAT(found->cuda_unavailable_reason, HasSubstr("cuInit: CUDA_ERROR_NO_DEVICE"));
}

TEST(DiscoverTest, GpusWithoutNvmlAreListedWithoutNvml) {
  FixtureTree tree("x86_server");
  FakeClock clock;
  DiscoveryOptions options{.root = tree.root(), .cuda_watts = 700.0, .clock = clock.AsClock()};
  options.cuda_driver_library = FAKE_CUDA_DRIVER;
  options.nvml_library = "/nonexistent/tokenmill/libnvidia-ml.so.1";
  absl::StatusOr<Discovery> found = Discover(options);
  ASSERT_TRUE(found.ok()) << found.status();
  ASSERT_EQ(found->devices.size(), 3u);
  EXPECT_EQ(found->cuda_unavailable_reason, "");
  EXPECT_THAT(found->nvml_unavailable_reason, HasSubstr("libnvidia-ml"));

  Device& gpu = *found->devices[2];
  const DeviceInfo& info = gpu.Info();
  EXPECT_EQ(info.id, "cuda:1");
  EXPECT_EQ(info.kind, DeviceKind::kCuda);
  EXPECT_EQ(info.name, "Fake GPU 1");
  EXPECT_EQ(info.memory_total_bytes, 80ull << 30);
  ASSERT_TRUE(info.cuda.has_value());
  EXPECT_EQ(info.cuda->ordinal, 1);
  EXPECT_EQ(info.cuda->compute_major, 9);
  EXPECT_EQ(info.cuda->compute_minor, 0);
  EXPECT_EQ(info.cuda->multiprocessors, 132u);
  EXPECT_EQ(info.cuda->pci_bus_id, "0000:18:00.0");
  EXPECT_EQ(info.cuda->driver_version, 12080);
  EXPECT_FALSE(info.cuda->nvml);
  EXPECT_EQ(info.cuda->uuid, "");

  clock.Advance(milliseconds(1000));
  const DeviceSample s = gpu.Sample();
  EXPECT_EQ(s.memory_total_bytes, 80ull << 30);
  EXPECT_DOUBLE_EQ(*s.power_watts, 700.0);
  EXPECT_DOUBLE_EQ(*s.energy_joules, 700.0);
  EXPECT_FALSE(s.utilization_ratio.has_value());
}

// [[device]] watts resolved per device id: cuda:1 gets its own figure,
// cuda:0 the kind-wide fallback, the CPU (no RAPL in the fixture) its own.
TEST(DiscoverTest, ConfiguredWattsArePerDeviceId) {
  FixtureTree tree("x86_server");
  FakeClock clock;
  DiscoveryOptions options{.root = tree.root(), .cuda_watts = 700.0, .clock = clock.AsClock()};
  options.cuda_driver_library = FAKE_CUDA_DRIVER;
  options.nvml_library = "/nonexistent/tokenmill/libnvidia-ml.so.1";
  std::vector<std::string> asked;
  options.watts_for = [&asked](const std::string& id) -> std::optional<double> {
    asked.push_back(id);
    if (id == "cuda:1") return 300.0;
    if (id == "cpu") return 250.0;
    return std::nullopt;
  };
  absl::StatusOr<Discovery> found = Discover(options);
  ASSERT_TRUE(found.ok()) << found.status();
  ASSERT_EQ(found->devices.size(), 3u);
  EXPECT_THAT(asked, ::testing::ElementsAre("cpu", "cuda:0", "cuda:1"));
  clock.Advance(milliseconds(1000));
  EXPECT_DOUBLE_EQ(*found->devices[1]->Sample().power_watts, 700.0);
  EXPECT_DOUBLE_EQ(*found->devices[2]->Sample().power_watts, 300.0);
  // This fixture's CPU has RAPL, which wins over any configured figure; a CPU
  // without it (the aarch64 fixture) takes the one asked for "cpu".
  EXPECT_EQ(found->devices[0]->Info().cpu->power_source, "rapl");
  FixtureTree no_rapl("aarch64");
  DiscoveryOptions cpu_only{.root = no_rapl.root(), .cuda = false, .clock = clock.AsClock()};
  cpu_only.watts_for = options.watts_for;
  absl::StatusOr<Discovery> cpu = Discover(cpu_only);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  ASSERT_EQ(cpu->devices.size(), 1u);
  EXPECT_EQ(cpu->devices[0]->Info().cpu->power_source, "configured");
  clock.Advance(milliseconds(1000));
  EXPECT_DOUBLE_EQ(*cpu->devices[0]->Sample().power_watts, 250.0);
}

TEST(DiscoverTest, NvmlFiguresAndConfiguredFallbackPerGpu) {
  FixtureTree tree("x86_server");
  FakeClock clock;
  DiscoveryOptions options{.root = tree.root(), .cuda_watts = 700.0, .clock = clock.AsClock()};
  options.cuda_driver_library = FAKE_CUDA_DRIVER;
  options.nvml_library = FAKE_NVML;
  absl::StatusOr<Discovery> found = Discover(options);
  ASSERT_TRUE(found.ok()) << found.status();
  ASSERT_EQ(found->devices.size(), 3u);
  EXPECT_EQ(found->nvml_unavailable_reason, "");

  Device& gpu0 = *found->devices[1];
  EXPECT_TRUE(gpu0.Info().cuda->nvml);
  EXPECT_EQ(gpu0.Info().cuda->uuid, "GPU-fake-0");
  const DeviceSample s0 = gpu0.Sample();
  EXPECT_EQ(s0.memory_used_bytes, 1ull << 30);
  EXPECT_DOUBLE_EQ(*s0.power_watts, 350.5);
  EXPECT_DOUBLE_EQ(*s0.energy_joules, 123456.789);
  EXPECT_DOUBLE_EQ(*s0.utilization_ratio, 0.75);
  EXPECT_DOUBLE_EQ(*s0.temperature_celsius, 55.0);

  // The second board reads memory through NVML but not power: configured watts.
  Device& gpu1 = *found->devices[2];
  EXPECT_TRUE(gpu1.Info().cuda->nvml);
  clock.Advance(milliseconds(2000));
  const DeviceSample s1 = gpu1.Sample();
  EXPECT_EQ(s1.memory_used_bytes, 1ull << 30);
  EXPECT_DOUBLE_EQ(*s1.power_watts, 700.0);
  EXPECT_DOUBLE_EQ(*s1.energy_joules, 1400.0);
}

TEST(DiscoverTest, RealMachineHasACpu) {
  DiscoveryOptions options;  // "/", the real libcuda if there is one
  absl::StatusOr<Discovery> found = Discover(options);
  ASSERT_TRUE(found.ok()) << found.status();
  ASSERT_FALSE(found->devices.empty());
  Device& cpu = *found->devices[0];
  const DeviceInfo& info = cpu.Info();
  EXPECT_EQ(info.kind, DeviceKind::kCpu);
  ASSERT_TRUE(info.cpu.has_value());
  EXPECT_GT(info.cpu->physical_cores, 0u);
  EXPECT_GT(info.cpu->logical_cpus, 0u);
  EXPECT_GE(info.cpu->logical_cpus, info.cpu->physical_cores);
  EXPECT_GT(info.memory_total_bytes, 0u);
  const DeviceSample s = cpu.Sample();
  EXPECT_GT(s.memory_total_bytes, 0u);
  EXPECT_LE(s.memory_used_bytes, s.memory_total_bytes);
  for (size_t i = 1; i < found->devices.size(); ++i) {
    EXPECT_EQ(found->devices[i]->Info().kind, DeviceKind::kCuda);
  }
  if (found->devices.size() == 1) {
    EXPECT_NE(found->cuda_unavailable_reason, "") << "no GPU needs a reason";
  }
  std::cout << "cpu: " << info.name << ", " << info.cpu->physical_cores << " cores, "
            << found->devices.size() - 1 << " GPU(s); " << found->cuda_unavailable_reason << "\n";
}

TEST(DeviceKindNameTest, Names) {
  EXPECT_STREQ(DeviceKindName(DeviceKind::kCpu), "cpu");
  EXPECT_STREQ(DeviceKindName(DeviceKind::kCuda), "cuda");
  EXPECT_STREQ(DeviceKindName(DeviceKind::kPlugin), "plugin");
}

}  // namespace
}  // namespace tokenmill::devices
