// Which devices the instance manager runs models on: the CPU always, a GPU
// only when this build has the CUDA executor and the GPU's KV arena can be
// made; anything else is listed as unusable with the reason instead of
// stopping the node.
#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "runtime/model/synth.h"
#include "runtime/node/instance_manager.h"
#include "runtime/tenants/tenant_registry.h"
#include "tests/fakes/fake_device.h"
#include "tests/support/temp_dir.h"
#include "tests/support/tiny_model.h"

namespace tokenmill::runtime {
namespace {

devices::DeviceInfo InfoOf(std::string id, devices::DeviceKind kind) {
  devices::DeviceInfo info;
  info.id = std::move(id);
  info.kind = kind;
  info.memory_total_bytes = uint64_t{1} << 30;
  if (kind == devices::DeviceKind::kCuda) info.cuda = devices::CudaDetails{};
  return info;
}

bool Listed(const std::vector<std::string>& lines, const std::string& id) {
  return std::any_of(lines.begin(), lines.end(),
                     [&](const std::string& l) { return absl::StartsWith(l, id + ": "); });
}

TEST(InstanceManagerDevicesTest, DevicesWithoutAnExecutorAreListedNotFatal) {
  fakes::FakeDevice cpu(InfoOf("cpu", devices::DeviceKind::kCpu));
  fakes::FakeDevice gpu(InfoOf("cuda:0", devices::DeviceKind::kCuda));
  fakes::FakeDevice plugin(InfoOf("plugin:x", devices::DeviceKind::kPlugin));
  tenants::TenantRegistry registry;
  InstanceManagerOptions options;
  options.cpu_threads = 1;
  options.kv_memory = [](const devices::Device&) {
    return devices::KvArenaBudget{.bytes = uint64_t{8} << 20};
  };
  SteadyClock clock;
  auto manager = InstanceManager::Create({&cpu, &gpu, &plugin}, registry, clock, options);
  ASSERT_TRUE(manager.ok()) << manager.status();

  const std::vector<std::string> unusable = (*manager)->unusable_devices();
  std::vector<std::string> usable;
  for (const DeviceRuntimeStats& s : (*manager)->DeviceStats()) usable.push_back(s.device);
  EXPECT_TRUE(Listed(unusable, "plugin:x"));
  EXPECT_FALSE(Listed(unusable, "cpu"));
  EXPECT_NE(std::find(usable.begin(), usable.end(), "cpu"), usable.end());
  // The GPU is usable (CUDA build on a machine with a GPU) or listed with
  // the reason (no CUDA in this build, or no GPU / driver): never both.
  const bool gpu_usable = std::find(usable.begin(), usable.end(), "cuda:0") != usable.end();
  EXPECT_NE(gpu_usable, Listed(unusable, "cuda:0")) << ::testing::PrintToString(unusable);

  // Models still load on the CPU, and naming an unusable device is refused.
  tokenmill::testing::TempDir dir;
  const std::filesystem::path path = dir.path() / "tiny.gguf";
  ASSERT_TRUE(model::WriteSynthGguf(tokenmill::testing::TinyModelShape(), path).ok());
  ModelLoadSpec spec;
  spec.id = "tiny";
  spec.path = path;
  spec.device = "plugin:x";
  EXPECT_EQ((*manager)->Load(spec).status().code(), absl::StatusCode::kNotFound);
  spec.device = "cpu";
  ASSERT_TRUE((*manager)->Load(spec).ok());
  absl::StatusOr<InstanceInfo> info = (*manager)->WaitLoaded("tiny", std::chrono::seconds(60));
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->state, InstanceState::kReady) << info->error;
}

}  // namespace
}  // namespace tokenmill::runtime
