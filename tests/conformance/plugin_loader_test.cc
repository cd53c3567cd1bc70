// The device plugin loader: the reference plugin loads and describes its
// device; a library built for another ABI major, one without the entry
// point, and one in a place others can write are refused with a message
// that says why; a plugin's errors come back as Status with its message.
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "devices/plugin/plugin_backend.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/model/synth.h"

namespace tokenmill::devices {
namespace {

using ::testing::HasSubstr;

// A fresh directory in the build tree (not /tmp, which anyone may write).
class TrustedDir {
 public:
  TrustedDir() {
    std::string pattern = std::string(TOKENMILL_BINARY_DIR) + "/plugin-loader-test-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) ADD_FAILURE() << "mkdtemp failed";
    path_ = pattern;
    ::chmod(path_.c_str(), 0755);
  }
  ~TrustedDir() {
    std::error_code ec;
    std::filesystem::permissions(path_, std::filesystem::perms::owner_all, ec);
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

std::filesystem::path CopyInto(const std::filesystem::path& dir, const char* library) {
  const std::filesystem::path to = dir / std::filesystem::path(library).filename();
  std::filesystem::copy_file(library, to, std::filesystem::copy_options::overwrite_existing);
  ::chmod(to.c_str(), 0755);
  return to;
}

TEST(PluginLoaderTest, LoadsTheReferencePluginAndDescribesItsDevice) {
  auto backend = LoadDevicePlugin(TOKENMILL_REFERENCE_PLUGIN);
  ASSERT_TRUE(backend.ok()) << backend.status();
  EXPECT_EQ((*backend)->kind(), "reference");
  Discovery found;
  DiscoveryOptions options;
  options.watts_for = [](const std::string& id) -> std::optional<double> {
    return id == "reference:0" ? std::optional<double>(42.0) : std::nullopt;
  };
  ASSERT_TRUE((*backend)->Discover(options, found).ok());
  ASSERT_EQ(found.devices.size(), 1u);
  Device& device = *found.devices[0];
  EXPECT_EQ(device.Info().id, "reference:0");
  EXPECT_EQ(device.Info().kind, DeviceKind::kPlugin);
  EXPECT_GT(device.Info().memory_total_bytes, 0u);
  EXPECT_TRUE((*backend)->RunsModels(device));
  const nlohmann::json details = (*backend)->DetailsJson(device);
  EXPECT_EQ(details["abi"], "1.1");
  EXPECT_EQ(details["properties"]["implementation"], "naive f32 on the host");
  // The plugin has no power probe: the configured [[device]] watts stand in.
  const DeviceSample sample = device.Sample();
  EXPECT_EQ(sample.power_watts, 42.0);
  EXPECT_FALSE(sample.temperature_celsius.has_value());  // absent, not 0
}

TEST(PluginLoaderTest, TheRegistryFindsBackendsByKindAndRefusesATakenKind) {
  BackendRegistry registry;
  auto first = LoadDevicePlugin(TOKENMILL_REFERENCE_PLUGIN);
  auto second = LoadDevicePlugin(TOKENMILL_REFERENCE_PLUGIN);
  ASSERT_TRUE(first.ok() && second.ok());
  ASSERT_TRUE(registry.Add(std::move(*first)).ok());
  EXPECT_EQ(registry.Add(std::move(*second)).code(), absl::StatusCode::kAlreadyExists);
  auto found = registry.DiscoverAll(DiscoveryOptions{});
  ASSERT_TRUE(found.ok()) << found.status();
  ASSERT_EQ(found->devices.size(), 1u);
  EXPECT_EQ(registry.For(*found->devices[0]), registry.ForKind("reference"));
  EXPECT_TRUE(registry.RunsModels(*found->devices[0]));
  EXPECT_EQ(registry.ForKind("cpu"), nullptr);
  EXPECT_EQ(KindOfDeviceId("acme:3"), "acme");
  EXPECT_EQ(KindOfDeviceId("cpu"), "cpu");
}

TEST(PluginLoaderTest, AnotherAbiMajorIsRefusedNamingBothVersions) {
  auto backend = LoadDevicePlugin(TOKENMILL_REFERENCE_PLUGIN_ABI99);
  ASSERT_FALSE(backend.ok());
  EXPECT_EQ(backend.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(backend.status().message()), HasSubstr("built for device ABI 99.1"));
  EXPECT_THAT(std::string(backend.status().message()), HasSubstr("the major must match"));
}

TEST(PluginLoaderTest, ALibraryWithoutTheEntryPointIsRefused) {
  auto backend = LoadDevicePlugin(TOKENMILL_REFERENCE_PLUGIN_NO_ENTRY);
  ASSERT_FALSE(backend.ok());
  EXPECT_EQ(backend.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(backend.status().message()),
              HasSubstr("exports no tokenmill_device_plugin()"));
}

TEST(PluginLoaderTest, ALibraryOthersCanReplaceIsRefused) {
  TrustedDir dir;
  const std::filesystem::path plugin = CopyInto(dir.path(), TOKENMILL_REFERENCE_PLUGIN);
  ASSERT_TRUE(LoadDevicePlugin(plugin).ok());  // the same copy loads where it is safe

  ::chmod(plugin.c_str(), 0757);  // anyone may write the file
  auto refused = LoadDevicePlugin(plugin);
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("writable by anyone"));

  ::chmod(plugin.c_str(), 0755);
  ::chmod(dir.path().c_str(), 0777);  // anyone may swap the file
  refused = LoadDevicePlugin(plugin);
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr("directory " + dir.path().string() + " is writable by anyone"));
  // Sticky, as /tmp is: others may add files but not rename or remove the
  // trusted-owned library, so it loads (build trees and CI clones live there).
  ::chmod(dir.path().c_str(), 01777);
  EXPECT_TRUE(LoadDevicePlugin(plugin).ok()) << LoadDevicePlugin(plugin).status();
  // ...but not a symlink someone untrusted owns in it: they could re-point it.
  const std::filesystem::path theirs = dir.path() / "theirs.so";
  std::filesystem::create_symlink(plugin, theirs);
  ASSERT_EQ(::lchown(theirs.c_str(), geteuid() + 12345, static_cast<gid_t>(-1)), 0);
  refused = LoadDevicePlugin(theirs);
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("is writable by anyone"));
  std::filesystem::remove(theirs);
  ::chmod(dir.path().c_str(), 0755);

  // A symlink is followed, and the directory holding the link is checked
  // too: whoever can write there could point it at another library.
  const std::filesystem::path link = dir.path() / "link.so";
  std::filesystem::create_symlink(plugin, link);
  EXPECT_TRUE(LoadDevicePlugin(link).ok());
  char open_pattern[] = "/tmp/tokenmill-plugin-link-XXXXXX";
  ASSERT_NE(::mkdtemp(open_pattern), nullptr);
  const std::filesystem::path open_dir = open_pattern;
  ::chmod(open_dir.c_str(), 0777);
  std::filesystem::create_symlink(plugin, open_dir / "link.so");
  refused = LoadDevicePlugin(open_dir / "link.so");
  std::filesystem::remove_all(open_dir);
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("is writable by anyone"));

  // Owned by someone the daemon does not trust.
  PluginLoadOptions only_other;
  only_other.trusted_owners = {static_cast<uid_t>(geteuid() + 12345)};
  refused = LoadDevicePlugin(plugin, only_other);
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("not root or the daemon's user"));

  EXPECT_EQ(LoadDevicePlugin(dir.path() / "missing.so").status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(PluginLoaderTest, APluginsForwardErrorComesBackWithItsMessage) {
  auto backend = LoadDevicePlugin(TOKENMILL_REFERENCE_PLUGIN_FAILING);
  ASSERT_TRUE(backend.ok()) << backend.status();
  EXPECT_EQ((*backend)->kind(), "failing");
  Discovery found;
  ASSERT_TRUE((*backend)->Discover(DiscoveryOptions{}, found).ok());
  ASSERT_EQ(found.devices.size(), 1u);
  const Device& device = *found.devices[0];
  model::SynthOptions shape;
  shape.vocab_size = 300;
  shape.context_length = 64;
  auto model = model::SynthesizeModel(shape);
  ASSERT_TRUE(model.ok()) << model.status();
  auto arena = (*backend)->CreateKvArena(device, KvArenaBudget{.bytes = 1 << 20}, 16384);
  ASSERT_TRUE(arena.ok()) << arena.status();
  ExecutorOptions eo;
  eo.block_tokens = 16;
  eo.kv_blocks = 8;
  eo.kv_arena = arena->get();
  auto executor = (*backend)->CreateExecutor(device, model->spec, eo);
  ASSERT_TRUE(executor.ok()) << executor.status();
  const uint32_t page = *(*arena)->TakePage();
  ASSERT_TRUE((*executor)->MapKvPage(0, page).ok());
  const std::vector<int32_t> tokens = {1, 2, 3};
  const std::vector<uint32_t> table = {0};
  Batch batch;
  batch.seqs.push_back({.seq_id = 1, .tokens = tokens, .start_pos = 0, .block_table = table});
  auto out = (*executor)->Forward(batch);
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInternal);
  EXPECT_EQ(out.status().message(),
            "device plugin failing: reference plugin (failing build): the device lost its state");

  (*executor)->UnmapKvPage(0).IgnoreError();
  (*arena)->ReturnPage(page);
}

// Executor creation through the node's registry, as the instance manager
// does it: what the device does not claim (the reference plugin: llama,
// qwen2, qwen3; F32/F16/BF16/Q8_0/Q4_0) is refused naming it, and what
// plugin ABI 1.1's tm_model cannot describe (experts, Mistral's window,
// linear RoPE scaling) is refused by the plugin backend, with the model kind
// named.
TEST(PluginLoaderTest, UnclaimedAndUndescribableModelsAreRefusedAtLoad) {
  auto backend = LoadDevicePlugin(TOKENMILL_REFERENCE_PLUGIN);
  ASSERT_TRUE(backend.ok()) << backend.status();
  BackendRegistry registry;
  ASSERT_TRUE(registry.Add(std::move(*backend)).ok());
  auto found = registry.DiscoverAll(DiscoveryOptions{});
  ASSERT_TRUE(found.ok()) << found.status();
  ASSERT_EQ(found->devices.size(), 1u);
  const Device& device = *found->devices[0];
  struct Refused {
    Architecture arch;
    int32_t experts;
    int32_t window;
    TensorType type;
    float rope_linear;
    const char* why;
  };
  for (const Refused& r :
       {Refused{Architecture::kLlama, 4, 0, TensorType::kF16, 1.0f,
                "llama model: plugins take no mixture of experts"},
        Refused{Architecture::kLlama, 0, 8, TensorType::kF16, 1.0f, "sliding-window attention"},
        Refused{Architecture::kLlama, 0, 0, TensorType::kF16, 8.0f, "linear RoPE scaling"},
        Refused{Architecture::kQwen3Moe, 4, 0, TensorType::kF16, 1.0f,
                "reference:0 does not run architecture qwen3moe"},
        Refused{Architecture::kLlama, 0, 0, TensorType::kQ4_K, 1.0f,
                "reference:0 does not run weight type q4_k (token_embd.weight)"}}) {
    model::SynthOptions shape;
    shape.arch = r.arch;
    shape.vocab_size = 300;
    shape.context_length = 64;
    shape.n_experts = r.experts;
    shape.n_experts_used = r.experts > 0 ? 2 : 0;
    shape.sliding_window = r.window;
    shape.weight_type = r.type;
    shape.rope_linear_factor = r.rope_linear;
    if (r.type == TensorType::kQ4_K) shape.dim = shape.ffn_dim = 256;
    auto model = model::SynthesizeModel(shape);
    ASSERT_TRUE(model.ok()) << model.status();
    auto arena = registry.CreateKvArena(device, KvArenaBudget{.bytes = 1 << 20}, 16384);
    ASSERT_TRUE(arena.ok()) << arena.status();
    ExecutorOptions eo;
    eo.block_tokens = 16;
    eo.kv_blocks = 8;
    eo.kv_arena = arena->get();
    auto executor = registry.CreateExecutor(device, model->spec, eo);
    ASSERT_FALSE(executor.ok()) << r.why;
    EXPECT_EQ(executor.status().code(), absl::StatusCode::kUnimplemented);
    EXPECT_THAT(std::string(executor.status().message()), HasSubstr(r.why));
  }
}

}  // namespace
}  // namespace tokenmill::devices
