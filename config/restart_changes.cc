// RestartRequiredChanges and small helpers that need no TOML.
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "config/node_config.h"

namespace tokenmill::config {
namespace {

// Appends `name` when the two values differ.
class ChangeList {
 public:
  template <typename T>
  void Compare(std::string_view name, const T& before, const T& after) {
    if (!(before == after)) names_.emplace_back(name);
  }
  void Add(std::string name) { names_.push_back(std::move(name)); }
  std::vector<std::string> Take() { return std::move(names_); }

 private:
  std::vector<std::string> names_;
};

bool SameKvMemory(const MemoryAmount& a, const MemoryAmount& b) {
  if (a.bytes || b.bytes) return a.bytes == b.bytes;
  return a.fraction == b.fraction;
}

// Entries of an array of tables by their unique name; config validation
// guarantees uniqueness.
template <typename T, typename KeyFn>
std::map<std::string, const T*> ByName(const std::vector<T>& entries, KeyFn key) {
  std::map<std::string, const T*> out;
  for (const T& e : entries) out.emplace(key(e), &e);
  return out;
}

// Reports entries added or removed as "kind[name]" and, for entries present
// in both, hands them to `compare` with their "kind[name]" prefix.
template <typename T, typename KeyFn, typename CompareFn>
void CompareEntries(const char* kind, const std::vector<T>& before, const std::vector<T>& after,
                    KeyFn key, CompareFn compare, ChangeList& changes) {
  const auto old_entries = ByName(before, key);
  const auto new_entries = ByName(after, key);
  for (const auto& [name, entry] : old_entries) {
    const std::string prefix = absl::StrCat(kind, "[", name, "]");
    const auto it = new_entries.find(name);
    if (it == new_entries.end()) {
      changes.Add(prefix);
    } else {
      compare(prefix, *entry, *it->second);
    }
  }
  for (const auto& [name, entry] : new_entries) {
    if (!old_entries.contains(name)) changes.Add(absl::StrCat(kind, "[", name, "]"));
  }
}

}  // namespace

std::string ToString(Durability durability) {
  switch (durability) {
    case Durability::kProcess:
      return "process";
    case Durability::kPower:
      return "power";
  }
  return "unknown";
}

std::vector<std::string> RestartRequiredChanges(const NodeConfig& before, const NodeConfig& after) {
  ChangeList c;
  c.Compare("node.name", before.node.name, after.node.name);
  c.Compare("node.data_dir", before.node.data_dir, after.node.data_dir);
  c.Compare("node.model_roots", before.node.model_roots, after.node.model_roots);
  c.Compare("node.device_plugins", before.node.device_plugins, after.node.device_plugins);

  c.Compare("api.socket", before.api.socket, after.api.socket);
  c.Compare("api.socket_mode", before.api.socket_mode, after.api.socket_mode);
  c.Compare("api.tcp", before.api.tcp, after.api.tcp);
  c.Compare("api.max_body_bytes", before.api.max_body_bytes, after.api.max_body_bytes);
  c.Compare("api.max_header_bytes", before.api.max_header_bytes, after.api.max_header_bytes);
  c.Compare("api.idle_timeout", before.api.idle_timeout, after.api.idle_timeout);
  c.Compare("api.control_tcp", before.api.control_tcp, after.api.control_tcp);
  c.Compare("api.control_token_sha256", before.api.control_token_sha256,
            after.api.control_token_sha256);
  c.Compare("api.max_connections", before.api.max_connections, after.api.max_connections);
  c.Compare("api.socket_max_connections", before.api.socket_max_connections,
            after.api.socket_max_connections);
  c.Compare("api.control_tcp_max_connections", before.api.control_tcp_max_connections,
            after.api.control_tcp_max_connections);
  c.Compare("api.max_buffered_output_bytes", before.api.max_buffered_output_bytes,
            after.api.max_buffered_output_bytes);

  c.Compare("metrics.listen", before.metrics.listen, after.metrics.listen);
  c.Compare("metrics.device_sample_interval", before.metrics.device_sample_interval,
            after.metrics.device_sample_interval);
  c.Compare("metrics.compat", before.metrics.compat, after.metrics.compat);

  c.Compare("storage.durability", before.storage.durability, after.storage.durability);

  c.Compare("scheduler.block_tokens", before.scheduler.block_tokens, after.scheduler.block_tokens);
  c.Compare("scheduler.max_batch_tokens", before.scheduler.max_batch_tokens,
            after.scheduler.max_batch_tokens);
  c.Compare("scheduler.max_seqs", before.scheduler.max_seqs, after.scheduler.max_seqs);
  // Instances take the VTC weights when they are created.
  c.Compare("scheduler.vtc_input_weight", before.scheduler.vtc_input_weight,
            after.scheduler.vtc_input_weight);
  c.Compare("scheduler.vtc_output_weight", before.scheduler.vtc_output_weight,
            after.scheduler.vtc_output_weight);

  CompareEntries(
      "device", before.devices, after.devices, [](const DeviceConfig& d) { return d.match; },
      [&](const std::string& prefix, const DeviceConfig& a, const DeviceConfig& b) {
        if (!SameKvMemory(a.kv_memory, b.kv_memory)) c.Add(prefix + ".kv_memory");
      },
      c);

  CompareEntries(
      "model", before.models, after.models, [](const ModelConfig& m) { return m.id; },
      [&](const std::string& prefix, const ModelConfig& a, const ModelConfig& b) {
        c.Compare(prefix + ".path", a.path, b.path);
        c.Compare(prefix + ".device", a.device, b.device);
        c.Compare(prefix + ".max_seqs", a.max_seqs, b.max_seqs);
        c.Compare(prefix + ".max_batch_tokens", a.max_batch_tokens, b.max_batch_tokens);
        c.Compare(prefix + ".context", a.context, b.context);
        // Prices are reloadable: not compared.
      },
      c);
  return c.Take();
}

}  // namespace tokenmill::config
