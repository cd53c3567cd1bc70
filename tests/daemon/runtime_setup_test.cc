// [[device]] kv_memory as the instance manager's KV arena budget: a
// percentage stays a share of what the weights leave (the arena reads the
// device's free memory as it grows), a size is exact, and a device no entry
// names gets the default 80%.
#include "daemon/runtime_setup.h"

#include "gtest/gtest.h"
#include "tests/fakes/fake_device.h"

namespace tokenmill::daemon {
namespace {

devices::KvArenaBudget BudgetFor(const runtime::InstanceManagerOptions& o, const char* id) {
  devices::DeviceInfo info;
  info.id = id;
  fakes::FakeDevice device(info);
  EXPECT_TRUE(o.kv_memory != nullptr);
  return o.kv_memory ? o.kv_memory(device) : devices::KvArenaBudget{};
}

TEST(RuntimeSetupTest, KvMemoryBecomesTheArenaBudget) {
  absl::StatusOr<config::NodeConfig> config = config::ParseConfig(
      "[[device]]\nmatch = \"cpu\"\nkv_memory = \"8GiB\"\n\n"
      "[[device]]\nmatch = \"cuda:*\"\nkv_memory = \"50%\"\n",
      "test.toml");
  ASSERT_TRUE(config.ok()) << config.status();
  const runtime::InstanceManagerOptions o = InstanceManagerOptionsFrom(*config, {}, nullptr);

  const devices::KvArenaBudget cpu = BudgetFor(o, "cpu");
  EXPECT_EQ(cpu.bytes, uint64_t{8} << 30);
  const devices::KvArenaBudget gpu = BudgetFor(o, "cuda:1");
  EXPECT_EQ(gpu.bytes, std::nullopt);
  EXPECT_DOUBLE_EQ(gpu.fraction, 0.5);
  const devices::KvArenaBudget other = BudgetFor(o, "plugin:x");
  EXPECT_EQ(other.bytes, std::nullopt);
  EXPECT_DOUBLE_EQ(other.fraction, 0.8);
}

// [[device]] match = "cpu" threads: every CPU model instance's executor
// threads; unset: 0, the executor's own default (the affinity mask's CPUs).
TEST(RuntimeSetupTest, CpuThreadsComeFromTheCpuDeviceEntry) {
  absl::StatusOr<config::NodeConfig> config =
      config::ParseConfig("[[device]]\nmatch = \"cpu\"\nthreads = 3\n", "test.toml");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(InstanceManagerOptionsFrom(*config, {}, nullptr).cpu_threads, 3);
  absl::StatusOr<config::NodeConfig> none = config::ParseConfig("", "test.toml");
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ(InstanceManagerOptionsFrom(*none, {}, nullptr).cpu_threads, 0);
}

}  // namespace
}  // namespace tokenmill::daemon
