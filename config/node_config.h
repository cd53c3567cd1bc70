// NodeConfig: the node's configuration as read from TOML (tokenmill.toml).
//
// Every field documents its default and whether SIGHUP may change it at run
// time ("reload: yes"). Fields marked "reload: no" take effect at the next
// start; a SIGHUP that changes one is logged and otherwise ignored.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace tokenmill::config {

// [node]
struct NodeSection {
  std::string name;                                       // default: the host name. reload: no
  std::filesystem::path data_dir = "/var/lib/tokenmill";  // RocksDB and state. reload: no
  // Directories (absolute) the control API may load models from; a model
  // path must resolve (symlinks and ".." resolved) inside one. Unset: see
  // ModelRoots(). [] allows no API load. [[model]] paths are not checked
  // (the operator wrote them). reload: no
  std::optional<std::vector<std::filesystem::path>> model_roots;
  // Device plugins (absolute paths of shared libraries built on
  // tokenmill_device.h) loaded at start; each adds the devices of its kind
  // ("KIND:N"). A library that is not owned by root or the daemon's user,
  // or that it or a directory above it lets others write, is refused, as is
  // one built for another ABI major: logged, and the node starts without it.
  // Default: none. reload: no
  std::vector<std::filesystem::path> device_plugins;
  // On SIGTERM, how long running and queued requests may finish before the
  // rest are cancelled. reload: yes (read when the stop begins)
  std::chrono::milliseconds drain_timeout{30000};

  // Field-wise; a reload compares old and new settings.
  bool operator==(const NodeSection&) const = default;
};

// [api]
struct ApiSection {
  // Unix socket: the control API (/control/v1/...) and the OpenAI API. reload: no
  std::string socket = "/run/tokenmill/tokenmill.sock";
  uint32_t socket_mode = 0660;  // written as an octal string, "0660". reload: no
  // "" = off, else "host:port": the OpenAI API (/v1/...) and /healthz,
  // /readyz only; every other path is 404. reload: no
  std::string tcp;
  // "" = off, else "host:port": the control API for holders of the admin
  // token (401 without it); needs control_token_sha256. reload: no
  std::string control_tcp;
  // Lowercase hex SHA-256 of the admin bearer token for control_tcp; "" =
  // none. reload: no
  std::string control_token_sha256;
  uint64_t max_body_bytes = 4 << 20;              // larger bodies get 413. reload: no
  uint64_t max_header_bytes = 16 << 10;           // larger heads get 431. reload: no
  std::chrono::milliseconds idle_timeout{30000};  // idle/slow connection closed. reload: no
  // Connections open at once, per listener (each its own budget, so that
  // clients of the TCP port cannot lock operators out of the socket); past
  // it the listener closes new connections at once. reload: no
  uint32_t max_connections = 1024;            // the tcp listener
  uint32_t socket_max_connections = 256;      // the unix socket
  uint32_t control_tcp_max_connections = 64;  // the control_tcp listener
  // Bytes queued for clients that do not read, over all connections; past
  // it the connection with the most queued is dropped. reload: no
  uint64_t max_buffered_output_bytes = 64 << 20;

  // Field-wise; a reload compares old and new settings.
  bool operator==(const ApiSection&) const = default;
};

// [metrics]
struct MetricsSection {
  std::string listen = "127.0.0.1:9464";  // Prometheus /metrics; "" = off. reload: no
  std::chrono::milliseconds device_sample_interval{1000};  // device gauges. reload: no
  // "" = tokenmill_* names only; "vllm" = also vLLM's names for the routing
  // and token figures (telemetry::MetricNames). reload: no
  std::string compat;

  // Field-wise; a reload compares old and new settings.
  bool operator==(const MetricsSection&) const = default;
};

enum class Durability {
  kProcess,  // WAL written, not fsynced per write: survives a process crash.
  kPower,    // WAL fsynced per group commit: survives a power loss.
};

// "process" or "power", as written in the config file.
std::string ToString(Durability durability);

// [storage]
struct StorageSection {
  Durability durability = Durability::kProcess;  // reload: no

  // Field-wise; a reload compares old and new settings.
  bool operator==(const StorageSection&) const = default;
};

// [scheduler]
struct SchedulerSection {
  uint32_t block_tokens = 16;        // KV block size in tokens. reload: no
  uint32_t max_batch_tokens = 2048;  // tokens per step per instance. reload: no
  uint32_t max_seqs = 64;            // sequences per step per instance. reload: no
  double vtc_input_weight = 1.0;     // VTC weight of a prompt token. reload: no
  double vtc_output_weight = 2.0;    // VTC weight of a generated token. reload: no

  // Field-wise; a reload compares old and new settings.
  bool operator==(const SchedulerSection&) const = default;
};

// [cost]: the node's all-in cost. All of it reload: yes (from then on).
struct CostSection {
  std::string currency = "USD";
  double capex = 0.0;               // purchase price of the node
  double depreciation_years = 4.0;  // straight-line, > 0
  double power_usd_per_kwh = 0.0;
  double pue = 1.0;  // >= 1
  double network_usd_per_hour = 0.0;
  double debt_service_usd_per_hour = 0.0;
  double other_usd_per_hour = 0.0;
  double prefill_token_weight = 1.0;  // share of a prompt token vs a generated one, > 0

  // Field-wise; a reload compares old and new settings.
  bool operator==(const CostSection&) const = default;
};

// A KV budget: a fraction of the memory weights leave, or a byte count. The
// cap of a device's KV arena, which grows up to it as pages are taken
// (devices::KvArenaBudget, devices/kv_arena.h).
struct MemoryAmount {
  double fraction = 0.8;  // used when bytes is unset
  std::optional<uint64_t> bytes;

  // Field-wise; a reload compares old and new settings.
  bool operator==(const MemoryAmount&) const = default;
};

// [[device]]: settings for the devices a pattern matches.
struct DeviceConfig {
  std::string match;            // "cpu" | "KIND:N" | "KIND:*" ("cuda:0", "acme:*"). reload: no
  double cost_weight = 1.0;     // share of fixed cost. reload: yes
  MemoryAmount kv_memory;       // "80%" or bytes ("8GiB", 8589934592). reload: no
  std::optional<double> watts;  // used when no power probe can be read. reload: yes
  // "cpu" only: threads of each model instance's executor; 0 = one per CPU
  // the daemon may run on (its affinity mask). reload: no
  uint32_t threads = 0;

  // Field-wise; a reload compares old and new settings.
  bool operator==(const DeviceConfig&) const = default;
};

// [[model]]: a model loaded at start. reload: no (models also load and
// unload through the control API at run time), except the prices.
struct ModelConfig {
  std::string id;
  std::filesystem::path path;
  std::string device = "auto";       // "auto" or a device id
  std::optional<uint32_t> max_seqs;  // default: [scheduler].max_seqs
  std::optional<uint32_t> max_batch_tokens;
  std::optional<uint32_t> context;  // default: the model's own
  // Prices of the model's tokens in [cost].currency per million tokens, >= 0,
  // default 0; a tenant's own price wins where it is > 0. reload: yes
  double price_input_per_mtok = 0.0;
  double price_output_per_mtok = 0.0;

  // Field-wise; a reload compares old and new settings.
  bool operator==(const ModelConfig&) const = default;
};

// [[tenant]]: all of it reload: yes.
struct TenantConfig {
  std::string name;
  std::vector<std::string> api_keys_sha256;  // lowercase hex, 64 chars each
  double weight = 1.0;                       // fair-share weight, > 0
  uint64_t kv_reserved_blocks = 0;
  double kv_max_fraction = 1.0;            // (0, 1]
  double rate_limit_tokens_per_s = 0.0;    // 0 = unlimited
  double schema_compile_s_per_min = 10.0;  // new grammars' compile time; 0 = unlimited
  uint32_t max_concurrent = 0;             // 0 = unlimited
  uint32_t max_queue = 256;
  std::string cache_group;             // "" = private prefix cache
  std::vector<std::string> models;     // empty = all models
  double price_input_per_mtok = 0.0;   // currency per million prompt tokens
  double price_output_per_mtok = 0.0;  // currency per million generated tokens

  // Field-wise; a reload compares old and new settings.
  bool operator==(const TenantConfig&) const = default;
};

struct NodeConfig {
  NodeSection node;
  ApiSection api;
  MetricsSection metrics;
  StorageSection storage;
  SchedulerSection scheduler;
  CostSection cost;
  std::vector<DeviceConfig> devices;
  std::vector<ModelConfig> models;
  std::vector<TenantConfig> tenants;

  std::string source;  // file it came from ("<string>" when parsed from text)
  std::string digest;  // hex SHA-256 of the source text

  // Field-wise; a reload compares old and new settings.
  bool operator==(const NodeConfig&) const = default;
};

// The [[device]] entry for a device id: the one whose match is the id
// ("cuda:1"), else a "kind:*" pattern covering it ("cuda:*"), else nullptr.
const DeviceConfig* FindDeviceConfig(const NodeConfig& config, std::string_view device_id);

// The model roots in force: [node] model_roots when set, else
// DATA_DIR/models plus the directory holding each [[model]] path.
std::vector<std::filesystem::path> ModelRoots(const NodeConfig& config);

// Parses TOML text. Errors are kInvalidArgument with one message per problem,
// each "SOURCE:LINE:COL: what is wrong", joined by newlines in file order:
// unknown keys (with a did-you-mean hint), wrong types and bad values are all
// reported, a TOML syntax error as the one message at its position. `source`
// names the text in messages and in NodeConfig::source. Thread-safe.
absl::StatusOr<NodeConfig> ParseConfig(std::string_view toml_text, std::string_view source);

// Reads and parses a file; NodeConfig::source and messages name the path. A
// missing or unreadable file is kNotFound / kPermissionDenied naming the path
// and the system's reason; a directory is kFailedPrecondition; a file over
// 16 MiB is kInvalidArgument.
absl::StatusOr<NodeConfig> LoadConfigFile(const std::filesystem::path& path);

// Names of the settings that differ between two configs and cannot change
// without a restart ("api.socket", "device[cuda:0].kv_memory",
// "model[llama].path"; a model or device added or removed is "model[x]" /
// "device[cuda:1]"): sections in declaration order, entries by name. Reloadable settings (tenants,
// cost, device cost_weight and watts, model prices, VTC weights) are never listed. SIGHUP logs
// these and keeps the running values.
std::vector<std::string> RestartRequiredChanges(const NodeConfig& before, const NodeConfig& after);

// Every key the parser accepts, as "section.key" ("api.socket",
// "tenant.weight"; "device", "model" and "tenant" stand for their [[...]]
// entries), in the order the parser reads them. Lets tests check that the
// shipped example documents each one.
std::vector<std::string> KnownKeys();

}  // namespace tokenmill::config
