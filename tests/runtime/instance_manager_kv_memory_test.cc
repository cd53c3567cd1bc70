// The instance manager's KV arenas and fit check on a simulated device whose
// memory the arena's chunks, the weights and the fit check all see: with the
// default kv_memory a model that fits with a KV reserve loads, the arena then
// grows to 80% of what the weights left, and idle arena chunks are given back
// when a load needs the memory.
//
// A model file here is a sparse file of the weights' size where only the
// size matters: the fit check reads the size of the file, as in production,
// before the loader thread reads the file (which then fails: not a model).
#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "runtime/model/synth.h"
#include "runtime/node/instance_manager.h"
#include "runtime/tenants/tenant_registry.h"
#include "tests/fakes/fake_device.h"
#include "tests/fakes/fake_device_memory.h"
#include "tests/runtime/instance_test_util.h"
#include "tests/support/temp_dir.h"
#include "tests/support/tiny_model.h"

namespace tokenmill::runtime {
namespace {

constexpr uint64_t kGiB = uint64_t{1} << 30;
constexpr uint64_t kMiB = uint64_t{1} << 20;

// A file of `bytes` that takes no disk (a hole).
std::filesystem::path SparseFile(const std::filesystem::path& path, uint64_t bytes) {
  const int fd = ::open(path.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0600);
  EXPECT_GE(fd, 0);
  if (fd >= 0) {
    EXPECT_EQ(::ftruncate(fd, static_cast<off_t>(bytes)), 0);
    ::close(fd);
  }
  return path;
}

// A device of `memory`'s size whose arena grows over `memory`, and whose
// samples report what `memory` has in use (as the telemetry sampler does
// for a GPU). `arena` is set to the arena the manager made.
struct SimulatedDevice {
  SimulatedDevice(std::string id, uint64_t total, bool real_memory)
      : memory(total, real_memory), device([&] {
          devices::DeviceInfo info;
          info.id = std::move(id);
          info.kind = devices::DeviceKind::kCpu;  // a kind every build runs models on
          info.memory_total_bytes = total;
          return info;
        }()) {}

  InstanceManagerOptions Options() {
    InstanceManagerOptions o;
    o.cpu_threads = 1;
    o.latest_sample = [this](const std::string&) {
      devices::DeviceSample s;
      s.memory_total_bytes = memory.total_bytes();
      s.memory_used_bytes = memory.used_bytes();
      return std::optional<devices::DeviceSample>(s);
    };
    o.create_kv_arena = [this](const devices::Device&, devices::KvArenaBudget budget,
                               size_t page_bytes) -> absl::StatusOr<devices::KvArenaPtr> {
      absl::StatusOr<devices::KvArenaPtr> a =
          devices::CreateChunkedKvArena(memory.ChunkSource(), budget, page_bytes);
      if (a.ok()) arena = a->get();
      return a;
    };
    return o;
  }

  fakes::FakeDeviceMemory memory;  // outlives the manager and its arena
  fakes::FakeDevice device;
  devices::KvArena* arena = nullptr;
};

ModelLoadSpec SpecFor(std::string id, std::filesystem::path path) {
  ModelLoadSpec spec;
  spec.id = std::move(id);
  spec.path = std::move(path);
  return spec;
}

std::vector<uint32_t> TakeAll(devices::KvArena& arena) {
  std::vector<uint32_t> pages;
  while (std::optional<uint32_t> p = arena.TakePage()) pages.push_back(*p);
  return pages;
}

// The case: an 8B BF16 model (16 GiB) on an 80 GiB GPU with the
// default kv_memory. Before the arena grew lazily it took 80% of the free
// memory at start and the fit check refused the model.
TEST(InstanceManagerKvMemoryTest, DefaultOnA80GiBDeviceLoads16GiBOfWeightsThenGrowsTo80Percent) {
  SimulatedDevice gpu("gpu-sim", 80 * kGiB, /*real_memory=*/false);
  tenants::TenantRegistry registry;
  SteadyClock clock;
  auto manager = InstanceManager::Create({&gpu.device}, registry, clock, gpu.Options());
  ASSERT_TRUE(manager.ok()) << manager.status();
  ASSERT_NE(gpu.arena, nullptr);
  EXPECT_LT(gpu.memory.used_bytes(), kGiB) << "the arena took memory before any weights";

  tokenmill::testing::TempDir dir;
  const uint64_t weights = 16 * kGiB;
  absl::StatusOr<InstanceInfo> load =
      (*manager)->Load(SpecFor("llama-8b", SparseFile(dir.path() / "w.gguf", weights)));
  ASSERT_TRUE(load.ok()) << load.status();
  EXPECT_EQ(load->state, InstanceState::kLoading);

  // The weights take their memory (the executor's upload), then the arena
  // grows to 80% of the 64 GiB they left.
  void* uploaded = gpu.memory.Allocate(weights);
  ASSERT_NE(uploaded, nullptr);
  const std::vector<uint32_t> pages = TakeAll(*gpu.arena);
  const uint64_t want = (80 * kGiB - weights) * 8 / 10 / devices::kDefaultKvPageBytes;
  EXPECT_EQ(pages.size(), want);
  const std::vector<DeviceRuntimeStats> stats = (*manager)->DeviceStats();
  ASSERT_EQ(stats.size(), 1u);
  EXPECT_EQ(stats[0].arena.pages_total, want);
  EXPECT_EQ(stats[0].arena.pages_free, 0u);
  EXPECT_EQ(stats[0].arena.pages_backed, want);
  for (uint32_t p : pages) gpu.arena->ReturnPage(p);
  EXPECT_EQ((*manager)->DeviceStats()[0].arena.pages_free, want);
}

// Idle arena chunks count as free for the fit check and are given back when
// the load needs them; chunks with a page taken are not.
TEST(InstanceManagerKvMemoryTest, IdleArenaChunksAreGivenBackForALoad) {
  SimulatedDevice gpu("gpu-sim", 2 * kGiB, /*real_memory=*/false);
  tenants::TenantRegistry registry;
  InstanceManagerOptions options = gpu.Options();
  options.kv_memory = [](const devices::Device&) {
    return devices::KvArenaBudget{.bytes = uint64_t{1536} << 20};  // 1.5 GiB
  };
  SteadyClock clock;
  auto manager = InstanceManager::Create({&gpu.device}, registry, clock, options);
  ASSERT_TRUE(manager.ok()) << manager.status();
  ASSERT_NE(gpu.arena, nullptr);

  // Instances filled the arena, then went idle but one page (chunk 0).
  std::vector<uint32_t> pages = TakeAll(*gpu.arena);
  ASSERT_EQ(pages.size(), 768u);
  for (size_t i = 1; i < pages.size(); ++i) gpu.arena->ReturnPage(pages[i]);
  EXPECT_EQ(gpu.memory.free_bytes(), 512 * kMiB);

  tokenmill::testing::TempDir dir;
  // 1.5 GiB of weights: more than is free, less than free + idle chunks
  // (1.5 GiB - the 64 MiB chunk in use).
  const uint64_t weights = 1536 * kMiB - 128 * kMiB;
  absl::StatusOr<InstanceInfo> load =
      (*manager)->Load(SpecFor("fits", SparseFile(dir.path() / "fits.gguf", weights)));
  ASSERT_TRUE(load.ok()) << load.status();
  EXPECT_EQ(gpu.memory.used_bytes(), 64 * kMiB) << "the idle chunks were not given back";
  EXPECT_NE(gpu.arena->PageAddress(pages[0]), nullptr);
  EXPECT_EQ(gpu.memory.bad_releases(), 0u);
  void* uploaded = gpu.memory.Allocate(weights);
  EXPECT_NE(uploaded, nullptr);

  // What is left cannot take more weights than free + idle chunks.
  absl::StatusOr<InstanceInfo> too_big =
      (*manager)->Load(SpecFor("too-big", SparseFile(dir.path() / "big.gguf", 600 * kMiB)));
  EXPECT_EQ(too_big.status().code(), absl::StatusCode::kResourceExhausted) << too_big.status();
  EXPECT_TRUE(absl::StrContains(too_big.status().message(), "idle KV arena")) << too_big.status();
}

// The loader gives idle chunks back before the weights go to the device
// even when the fit check did not need them, and the model then runs on the
// arena (pages regrow on demand).
TEST(InstanceManagerKvMemoryTest, LoaderTrimsIdleChunksBeforeTheWeights) {
  SimulatedDevice dev("sim", 512 * kMiB, /*real_memory=*/true);
  tenants::TenantRegistry registry;
  InstanceManagerOptions options = dev.Options();
  options.kv_page_bytes = 64 << 10;
  options.kv_memory = [](const devices::Device&) {
    return devices::KvArenaBudget{.bytes = uint64_t{64} << 20};
  };
  SteadyClock clock;
  auto manager = InstanceManager::Create({&dev.device}, registry, clock, options);
  ASSERT_TRUE(manager.ok()) << manager.status();
  ASSERT_NE(dev.arena, nullptr);
  for (uint32_t p : TakeAll(*dev.arena)) dev.arena->ReturnPage(p);
  ASSERT_EQ(dev.memory.used_bytes(), 64 * kMiB);

  tokenmill::testing::TempDir dir;
  const std::filesystem::path path = dir.path() / "tiny.gguf";
  ASSERT_TRUE(model::WriteSynthGguf(tokenmill::testing::TinyModelShape(), path).ok());
  ASSERT_TRUE((*manager)->Load(SpecFor("tiny", path)).ok());
  absl::StatusOr<InstanceInfo> info = (*manager)->WaitLoaded("tiny", std::chrono::seconds(60));
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->state, InstanceState::kReady) << info->error;
  EXPECT_GE(dev.memory.releases(), 1u);
  EXPECT_EQ((*manager)->DeviceStats()[0].arena.pages_total, 1024u);

  const uint64_t allocations = dev.memory.allocations();

  // It serves: a request takes pages from the arena, which grows again.
  ModelInstancePtr instance = (*manager)->Find("tiny");
  ASSERT_NE(instance, nullptr);
  testing::Collector c;
  ASSERT_TRUE(instance->Submit(testing::Greedy("t", testing::PromptOf(40, 3), 8), c.Sink()).ok());
  ASSERT_TRUE(c.Wait());
  EXPECT_TRUE(c.error().ok()) << c.error();
  EXPECT_EQ(c.tokens().size(), 8u);
  EXPECT_GT(dev.memory.allocations(), allocations);
}

}  // namespace
}  // namespace tokenmill::runtime
