// NodeConfig from valid TOML: defaults, every field, digests, files, and the
// settings a reload cannot change.
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <climits>
#include <string>

#include "config/node_config.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/config/test_util.h"

namespace tokenmill::config {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using testing::kSource;
using testing::TempDir;

std::string HostName() {
  char host[HOST_NAME_MAX + 1] = {};
  EXPECT_EQ(gethostname(host, sizeof(host) - 1), 0);
  return host;
}

NodeConfig ParseOrDie(std::string_view text) {
  absl::StatusOr<NodeConfig> config = ParseConfig(text, kSource);
  EXPECT_TRUE(config.ok()) << config.status();
  return config.ok() ? *config : NodeConfig{};
}

TEST(ParseConfigTest, DevicePluginsAreAbsolutePaths) {
  EXPECT_THAT(ParseOrDie("").node.device_plugins, IsEmpty());
  const NodeConfig c = ParseOrDie(
      "[node]\ndevice_plugins = [\"/usr/lib/tokenmill/plugins/libacme.so\", \"/opt/x.so\"]\n");
  ASSERT_EQ(c.node.device_plugins.size(), 2u);
  EXPECT_EQ(c.node.device_plugins[0], "/usr/lib/tokenmill/plugins/libacme.so");
  absl::StatusOr<NodeConfig> relative =
      ParseConfig("[node]\ndevice_plugins = [\"plugins/libacme.so\"]\n", kSource);
  ASSERT_FALSE(relative.ok());
  EXPECT_THAT(std::string(relative.status().message()), ::testing::HasSubstr("device_plugins"));
}

TEST(ParseConfigTest, EmptyTextGivesDefaults) {
  const NodeConfig config = ParseOrDie("");
  EXPECT_EQ(config.node.name, HostName());
  EXPECT_EQ(config.node.data_dir, "/var/lib/tokenmill");
  EXPECT_EQ(config.api, ApiSection{});
  EXPECT_EQ(config.api.socket, "/run/tokenmill/tokenmill.sock");
  EXPECT_EQ(config.api.socket_mode, 0660u);
  EXPECT_EQ(config.api.idle_timeout, std::chrono::seconds(30));
  EXPECT_EQ(config.metrics, MetricsSection{});
  EXPECT_EQ(config.storage.durability, Durability::kProcess);
  EXPECT_EQ(config.scheduler, SchedulerSection{});
  EXPECT_EQ(config.cost, CostSection{});
  EXPECT_THAT(config.devices, IsEmpty());
  EXPECT_THAT(config.models, IsEmpty());
  EXPECT_THAT(config.tenants, IsEmpty());
  EXPECT_EQ(config.source, "t.toml");
  EXPECT_EQ(config.digest, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(ParseConfigTest, EmptySectionsAndArraysGiveDefaults) {
  const NodeConfig config = ParseOrDie("device = []\n[api]\n[cost]\n");
  EXPECT_EQ(config.api, ApiSection{});
  EXPECT_EQ(config.cost, CostSection{});
  EXPECT_THAT(config.devices, IsEmpty());
}

constexpr std::string_view kFullConfig = R"(
[node]
name = "gpu-node-07"
data_dir = "/srv/tokenmill"

[api]
socket = "/tmp/tm.sock"
socket_mode = "0600"
tcp = "[::1]:8080"
max_body_bytes = "1MiB"
max_header_bytes = 8192
idle_timeout = "2m"
max_connections = 10
control_tcp = "127.0.0.1:9090"
control_token_sha256 = "4c716d4cf211c7b7d2f3233c941771ad0507ea5bacf93b492766aa41ae9f720d"
socket_max_connections = 20
control_tcp_max_connections = 5
max_buffered_output_bytes = "256MiB"

[metrics]
listen = "localhost:0"
device_sample_interval = 250
compat = "vllm"

[storage]
durability = "power"

[scheduler]
block_tokens = 32
max_batch_tokens = 4096
max_seqs = 128
vtc_input_weight = 0.5
vtc_output_weight = 3

[cost]
currency = "EUR"
capex = 320000
depreciation_years = 4
power_usd_per_kwh = 0.12
pue = 1.3
network_usd_per_hour = 0.5
debt_service_usd_per_hour = 1.25
other_usd_per_hour = 0.75
prefill_token_weight = 0.25

[[device]]
match = "cuda:*"
cost_weight = 2.0
kv_memory = "90%"
watts = 700

[[device]]
match = "cpu"
kv_memory = "8GiB"
threads = 6

[[device]]
match = "acme-npu:*"
kv_memory = 4096

[[model]]
id = "llama3:8b"
path = "/models/llama3-8b.gguf"
device = "cuda:1"
max_seqs = 8
max_batch_tokens = 1024
context = 8192
price_input_per_mtok = 0.05
price_output_per_mtok = 0.2

[[model]]
id = "qwen2"
path = "/srv/models/qwen2/"

[[tenant]]
name = "acme"
api_keys_sha256 = ["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"]
weight = 2.5
kv_reserved_blocks = 1024
kv_max_fraction = 0.5
rate_limit_tokens_per_s = 20000
schema_compile_s_per_min = 2.5
max_concurrent = 16
max_queue = 32
cache_group = "shared"
models = ["llama3:8b"]
price_input_per_mtok = 0.15
price_output_per_mtok = 0.6

[[tenant]]
name = "beta"
)";

TEST(ParseConfigTest, ModelRootsWhenSet) {
  const NodeConfig c = ParseOrDie(
      "[node]\nmodel_roots = [\"/srv/models\", \"/data/hf\"]\n\n[[model]]\nid = \"m\"\npath = "
      "\"/opt/m.gguf\"\n");
  ASSERT_TRUE(c.node.model_roots.has_value());
  // Set: exactly these (config models are trusted, not added).
  EXPECT_EQ(ModelRoots(c), (std::vector<std::filesystem::path>{"/srv/models", "/data/hf"}));
  const NodeConfig none = ParseOrDie("[node]\nmodel_roots = []\n");
  ASSERT_TRUE(none.node.model_roots.has_value());
  EXPECT_TRUE(ModelRoots(none).empty());
}

TEST(ParseConfigTest, DrainTimeoutDefaultsTo30sAndReloads) {
  EXPECT_EQ(ParseOrDie("").node.drain_timeout, std::chrono::seconds(30));
  const NodeConfig c = ParseOrDie("[node]\ndrain_timeout = \"90s\"\n");
  EXPECT_EQ(c.node.drain_timeout, std::chrono::seconds(90));
  // Read when a stop begins: a reload changes it without a restart.
  EXPECT_TRUE(RestartRequiredChanges(ParseOrDie(""), c).empty());
}

TEST(ParseConfigTest, FullFileSetsEveryField) {
  const NodeConfig c = ParseOrDie(kFullConfig);
  EXPECT_EQ(c.node.name, "gpu-node-07");
  EXPECT_EQ(c.node.data_dir, "/srv/tokenmill");

  EXPECT_EQ(c.api.socket, "/tmp/tm.sock");
  EXPECT_EQ(c.api.socket_mode, 0600u);
  EXPECT_EQ(c.api.tcp, "[::1]:8080");
  EXPECT_EQ(c.api.max_body_bytes, 1u << 20);
  EXPECT_EQ(c.api.max_header_bytes, 8192u);
  EXPECT_EQ(c.api.idle_timeout, std::chrono::minutes(2));
  EXPECT_EQ(c.api.max_connections, 10u);
  EXPECT_EQ(c.api.control_tcp, "127.0.0.1:9090");
  EXPECT_EQ(c.api.control_token_sha256,
            "4c716d4cf211c7b7d2f3233c941771ad0507ea5bacf93b492766aa41ae9f720d");
  EXPECT_EQ(c.api.socket_max_connections, 20u);
  EXPECT_EQ(c.api.control_tcp_max_connections, 5u);
  EXPECT_EQ(c.api.max_buffered_output_bytes, uint64_t{256} << 20);

  EXPECT_EQ(c.metrics.listen, "localhost:0");
  EXPECT_EQ(c.metrics.device_sample_interval, std::chrono::milliseconds(250));
  EXPECT_EQ(c.metrics.compat, "vllm");
  EXPECT_EQ(c.storage.durability, Durability::kPower);

  EXPECT_EQ(c.scheduler.block_tokens, 32u);
  EXPECT_EQ(c.scheduler.max_batch_tokens, 4096u);
  EXPECT_EQ(c.scheduler.max_seqs, 128u);
  EXPECT_EQ(c.scheduler.vtc_input_weight, 0.5);
  EXPECT_EQ(c.scheduler.vtc_output_weight, 3.0);

  EXPECT_EQ(c.cost.currency, "EUR");
  EXPECT_EQ(c.cost.capex, 320000.0);
  EXPECT_EQ(c.cost.depreciation_years, 4.0);
  EXPECT_EQ(c.cost.power_usd_per_kwh, 0.12);
  EXPECT_EQ(c.cost.pue, 1.3);
  EXPECT_EQ(c.cost.network_usd_per_hour, 0.5);
  EXPECT_EQ(c.cost.debt_service_usd_per_hour, 1.25);
  EXPECT_EQ(c.cost.other_usd_per_hour, 0.75);
  EXPECT_EQ(c.cost.prefill_token_weight, 0.25);

  ASSERT_EQ(c.devices.size(), 3u);
  EXPECT_EQ(c.devices[0].match, "cuda:*");
  EXPECT_EQ(c.devices[0].cost_weight, 2.0);
  EXPECT_DOUBLE_EQ(c.devices[0].kv_memory.fraction, 0.9);
  EXPECT_EQ(c.devices[0].kv_memory.bytes, std::nullopt);
  EXPECT_EQ(c.devices[0].watts, 700.0);
  EXPECT_EQ(c.devices[1].match, "cpu");
  EXPECT_EQ(c.devices[1].cost_weight, 1.0);
  EXPECT_EQ(c.devices[1].kv_memory.bytes, 8ull << 30);
  EXPECT_EQ(c.devices[1].watts, std::nullopt);
  EXPECT_EQ(c.devices[1].threads, 6u);
  EXPECT_EQ(c.devices[0].threads, 0u);
  EXPECT_EQ(c.devices[2].match, "acme-npu:*");
  EXPECT_EQ(c.devices[2].kv_memory.bytes, 4096u);

  ASSERT_EQ(c.models.size(), 2u);
  EXPECT_EQ(c.models[0].id, "llama3:8b");
  EXPECT_EQ(c.models[0].path, "/models/llama3-8b.gguf");
  EXPECT_EQ(c.models[0].device, "cuda:1");
  EXPECT_EQ(c.models[0].max_seqs, 8u);
  EXPECT_EQ(c.models[0].max_batch_tokens, 1024u);
  EXPECT_EQ(c.models[0].context, 8192u);
  EXPECT_EQ(c.models[0].price_input_per_mtok, 0.05);
  EXPECT_EQ(c.models[0].price_output_per_mtok, 0.2);
  EXPECT_EQ(c.models[1].id, "qwen2");
  EXPECT_EQ(c.models[1].path, "/srv/models/qwen2/");
  EXPECT_FALSE(c.node.model_roots.has_value());
  // Unset roots: the data dir's models/ and the directories of the models.
  EXPECT_EQ(ModelRoots(c), (std::vector<std::filesystem::path>{"/srv/tokenmill/models", "/models",
                                                               "/srv/models"}));
  EXPECT_EQ(c.models[1].device, "auto");
  EXPECT_EQ(c.models[1].max_seqs, std::nullopt);
  EXPECT_EQ(c.models[1].context, std::nullopt);
  EXPECT_EQ(c.models[1].price_input_per_mtok, 0.0);
  EXPECT_EQ(c.models[1].price_output_per_mtok, 0.0);

  ASSERT_EQ(c.tenants.size(), 2u);
  const TenantConfig& acme = c.tenants[0];
  EXPECT_EQ(acme.name, "acme");
  EXPECT_THAT(acme.api_keys_sha256,
              ElementsAre("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"));
  EXPECT_EQ(acme.weight, 2.5);
  EXPECT_EQ(acme.kv_reserved_blocks, 1024u);
  EXPECT_EQ(acme.kv_max_fraction, 0.5);
  EXPECT_EQ(acme.rate_limit_tokens_per_s, 20000.0);
  EXPECT_EQ(acme.schema_compile_s_per_min, 2.5);
  EXPECT_EQ(acme.max_concurrent, 16u);
  EXPECT_EQ(acme.max_queue, 32u);
  EXPECT_EQ(acme.cache_group, "shared");
  EXPECT_THAT(acme.models, ElementsAre("llama3:8b"));
  EXPECT_EQ(acme.price_input_per_mtok, 0.15);
  EXPECT_EQ(acme.price_output_per_mtok, 0.6);
  TenantConfig beta_expected;
  beta_expected.name = "beta";
  EXPECT_EQ(c.tenants[1], beta_expected);
}

TEST(ParseConfigTest, InlineTablesAndDottedKeysWork) {
  const NodeConfig c = ParseOrDie(
      "api = { socket = \"/tmp/a.sock\" }\n"
      "scheduler.max_seqs = 7\n"
      "tenant = [{ name = \"x\", weight = 3 }]\n");
  EXPECT_EQ(c.api.socket, "/tmp/a.sock");
  EXPECT_EQ(c.scheduler.max_seqs, 7u);
  ASSERT_EQ(c.tenants.size(), 1u);
  EXPECT_EQ(c.tenants[0].weight, 3.0);
}

TEST(ParseConfigTest, SocketModeAcceptsTomlOctalAndThreeDigits) {
  EXPECT_EQ(ParseOrDie("[api]\nsocket_mode = 0o640\n").api.socket_mode, 0640u);
  EXPECT_EQ(ParseOrDie("[api]\nsocket_mode = \"700\"\n").api.socket_mode, 0700u);
  EXPECT_EQ(ParseOrDie("[api]\nsocket_mode = \"0777\"\n").api.socket_mode, 0777u);
}

TEST(ParseConfigTest, DurationsInStringsAndMilliseconds) {
  EXPECT_EQ(ParseOrDie("[api]\nidle_timeout = 1\n").api.idle_timeout.count(), 1);
  EXPECT_EQ(ParseOrDie("[api]\nidle_timeout = \"1.5s\"\n").api.idle_timeout.count(), 1500);
  EXPECT_EQ(ParseOrDie("[api]\nidle_timeout = \"500ms\"\n").api.idle_timeout.count(), 500);
  EXPECT_EQ(ParseOrDie("[api]\nidle_timeout = \"1h\"\n").api.idle_timeout.count(), 3600000);
}

TEST(ParseConfigTest, SizesAtTheirLimits) {
  EXPECT_EQ(ParseOrDie("[api]\nmax_header_bytes = \"1MiB\"\n").api.max_header_bytes, 1u << 20);
  EXPECT_EQ(ParseOrDie("[api]\nmax_header_bytes = 1024\n").api.max_header_bytes, 1024u);
  EXPECT_EQ(ParseOrDie("[api]\nmax_body_bytes = \"1.5GB\"\n").api.max_body_bytes, 1500000000u);
  EXPECT_EQ(ParseOrDie("[[device]]\nmatch = \"cpu\"\nkv_memory = \"100%\"\n")
                .devices[0]
                .kv_memory.fraction,
            1.0);
}

TEST(ParseConfigTest, DigestFollowsTheText) {
  const NodeConfig a = ParseOrDie("# a\n");
  EXPECT_EQ(a.digest, "fd99dedae7c3f7532f8a65d60f811a05dc9dc3e1c5936b0c554c98aafdad8c10");
  EXPECT_EQ(ParseOrDie("# a\n").digest, a.digest);
  // Same settings, different text: a different digest.
  EXPECT_NE(ParseOrDie("# b\n").digest, a.digest);
}

TEST(LoadConfigFileTest, MissingFileIsNotFound) {
  TempDir dir;
  const auto path = dir.path() / "absent.toml";
  absl::StatusOr<NodeConfig> config = LoadConfigFile(path);
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(config.status().message()), HasSubstr(path.string()));
  EXPECT_THAT(std::string(config.status().message()), HasSubstr("No such file or directory"));
}

TEST(LoadConfigFileTest, DirectoryIsRefused) {
  TempDir dir;
  absl::StatusOr<NodeConfig> config = LoadConfigFile(dir.path());
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(config.status().message()), HasSubstr("Is a directory"));
}

TEST(LoadConfigFileTest, UnreadableFileIsPermissionDenied) {
  TempDir dir;
  const auto path = dir.Write("secret.toml", "");
  ASSERT_EQ(chmod(path.c_str(), 0), 0);
  ASSERT_EQ(chmod(dir.path().c_str(), 0755), 0);
  auto check = [&path]() {
    absl::StatusOr<NodeConfig> config = LoadConfigFile(path);
    return !config.ok() && config.status().code() == absl::StatusCode::kPermissionDenied &&
           std::string(config.status().message()).find(path.string()) != std::string::npos;
  };
  if (geteuid() != 0) {
    EXPECT_TRUE(check());
    return;
  }
  // Root reads files whatever their mode: check as an unprivileged user.
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (setgid(65534) != 0 || setuid(65534) != 0) _exit(3);
    _exit(check() ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "1: wrong status, 3: could not drop privileges";
}

TEST(LoadConfigFileTest, ReadsTheFileAndNamesItInErrors) {
  TempDir dir;
  const auto good = dir.Write("good.toml", "[scheduler]\nmax_seqs = 3\n");
  absl::StatusOr<NodeConfig> config = LoadConfigFile(good);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->scheduler.max_seqs, 3u);
  EXPECT_EQ(config->source, good.string());
  EXPECT_EQ(config->digest, ParseOrDie("[scheduler]\nmax_seqs = 3\n").digest);

  const auto bad = dir.Write("bad.toml", "[scheduler]\nmax_seqs = 0\n");
  config = LoadConfigFile(bad);
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(config.status().message(),
            bad.string() + ":2:12: [scheduler].max_seqs must be >= 1, got 0");
}

TEST(RestartRequiredChangesTest, SameConfigHasNone) {
  const NodeConfig c = ParseOrDie(kFullConfig);
  EXPECT_THAT(RestartRequiredChanges(c, c), IsEmpty());
}

TEST(RestartRequiredChangesTest, ReloadableSettingsAreNotListed) {
  const NodeConfig before = ParseOrDie(kFullConfig);
  NodeConfig after = before;
  after.tenants.pop_back();
  after.tenants[0].weight = 9;
  after.cost.capex = 1;
  after.cost.pue = 1.5;
  after.devices[0].cost_weight = 0;
  after.devices[0].watts = 300;
  after.models[0].price_input_per_mtok = 0.5;
  after.models[1].price_output_per_mtok = 1.5;
  after.digest = "other";
  EXPECT_THAT(RestartRequiredChanges(before, after), IsEmpty());
}

TEST(RestartRequiredChangesTest, NamesEveryFixedSettingThatChanged) {
  const NodeConfig before = ParseOrDie(kFullConfig);
  NodeConfig after = before;
  after.node.name = "renamed";
  after.node.device_plugins = {"/usr/lib/tokenmill/plugins/libacme.so"};
  after.api.socket = "/tmp/other.sock";
  after.api.idle_timeout = std::chrono::seconds(1);
  after.api.control_token_sha256 = std::string(64, 'b');
  after.api.socket_max_connections = 1;
  after.api.max_buffered_output_bytes = 1 << 20;
  after.metrics.listen = "";
  after.storage.durability = Durability::kProcess;
  after.scheduler.block_tokens = 64;
  after.scheduler.vtc_output_weight = 8;
  after.devices[0].kv_memory.fraction = 0.5;       // cuda:*
  after.devices[1].kv_memory = MemoryAmount{};     // cpu: 8GiB -> 80%
  after.devices.erase(after.devices.begin() + 2);  // acme-npu:* removed
  after.devices.emplace_back().match = "cuda:3";
  after.models[0].path = "/models/other.gguf";
  after.models[0].context = std::nullopt;
  after.models[1].id = "qwen2.5";  // removed one model, added another
  EXPECT_THAT(RestartRequiredChanges(before, after),
              ElementsAre("node.name", "node.device_plugins", "api.socket", "api.idle_timeout",
                          "api.control_token_sha256", "api.socket_max_connections",
                          "api.max_buffered_output_bytes", "metrics.listen", "storage.durability",
                          "scheduler.block_tokens", "scheduler.vtc_output_weight",
                          "device[acme-npu:*]", "device[cpu].kv_memory", "device[cuda:*].kv_memory",
                          "device[cuda:3]", "model[llama3:8b].path", "model[llama3:8b].context",
                          "model[qwen2]", "model[qwen2.5]"));
}

TEST(DurabilityTest, ToStringNamesTheConfigValue) {
  EXPECT_EQ(ToString(Durability::kProcess), "process");
  EXPECT_EQ(ToString(Durability::kPower), "power");
}

TEST(KnownKeysTest, ListsEverySectionKey) {
  const std::vector<std::string> keys = KnownKeys();
  EXPECT_THAT(keys, ::testing::Contains("api.socket"));
  EXPECT_THAT(keys, ::testing::Contains("tenant.weight"));
  EXPECT_THAT(keys, ::testing::Contains("device.kv_memory"));
  EXPECT_THAT(keys, ::testing::Contains("model.context"));
  EXPECT_THAT(keys, ::testing::Contains("model.price_output_per_mtok"));
  EXPECT_THAT(keys, ::testing::Contains("api.control_token_sha256"));
  EXPECT_THAT(keys, ::testing::Contains("node.model_roots"));
  EXPECT_THAT(keys, ::testing::Contains("node.device_plugins"));
  EXPECT_THAT(keys, ::testing::Contains("metrics.compat"));
  EXPECT_THAT(keys, ::testing::Contains("node.drain_timeout"));
  EXPECT_THAT(keys, ::testing::Contains("device.threads"));
  EXPECT_THAT(keys, ::testing::Contains("tenant.schema_compile_s_per_min"));
  // One per field of the sections: 4 + 13 + 3 + 1 + 5 + 9 + 5 + 8 + 13.
  EXPECT_EQ(keys.size(), 61u);
}

TEST(FindDeviceConfigTest, AnExactIdWinsOverAKindPattern) {
  NodeConfig config;
  DeviceConfig all_gpus, gpu1, cpu;
  all_gpus.match = "cuda:*";
  all_gpus.watts = 700.0;
  gpu1.match = "cuda:1";
  gpu1.watts = 300.0;
  cpu.match = "cpu";
  // The exact entry wins whichever comes first.
  config.devices = {gpu1, all_gpus, cpu};
  ASSERT_NE(FindDeviceConfig(config, "cuda:1"), nullptr);
  EXPECT_EQ(FindDeviceConfig(config, "cuda:1")->watts, 300.0);
  ASSERT_NE(FindDeviceConfig(config, "cuda:0"), nullptr);
  EXPECT_EQ(FindDeviceConfig(config, "cuda:0")->watts, 700.0);
  EXPECT_EQ(FindDeviceConfig(config, "cpu"), &config.devices[2]);
  EXPECT_EQ(FindDeviceConfig(config, "plugin:x"), nullptr);
  // A plugin's devices match like any kind's.
  DeviceConfig acme;
  acme.match = "acme:*";
  acme.watts = 50.0;
  config.devices.push_back(acme);
  ASSERT_NE(FindDeviceConfig(config, "acme:3"), nullptr);
  EXPECT_EQ(FindDeviceConfig(config, "acme:3")->watts, 50.0);
  // "cuda:*" does not cover an id that merely starts with "cuda".
  EXPECT_EQ(FindDeviceConfig(config, "cudax:0"), nullptr);
}

}  // namespace
}  // namespace tokenmill::config
