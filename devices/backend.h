// DeviceBackend and BackendRegistry: every kind of device (the compiled-in
// CPU and CUDA, and each loaded plugin) behind one interface, so the runtime,
// the control API and the CLI never switch on the kind.
//
// No static registry: the composition root (daemon/node.cc) makes a
// BackendRegistry, adds the compiled-in backends and the plugins the config
// names, and hands it to whoever needs it. The registry finds a device's
// backend by its kind name (BackendKindOf).
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "devices/device.h"
#include "devices/discovery.h"
#include "devices/executor.h"
#include "devices/kv_arena.h"
#include "nlohmann/json.hpp"

namespace tokenmill::devices {

// The kind of a device id: "cpu" -> "cpu", "cuda:0" -> "cuda", "acme:3" ->
// "acme".
std::string_view KindOfDeviceId(std::string_view id);
// The backend kind of a device: "cpu" and "cuda" for the compiled-in kinds
// (whatever the id: tests name fake CPUs freely), the id's kind for a
// plugin's device ("acme" for "acme:3").
std::string_view BackendKindOf(const DeviceInfo& info);

// What a device runs: the conformance suite (tests/conformance) tests every
// combination claimed, and executor creation (BackendRegistry) refuses what
// is not claimed.
struct DeviceCapabilities {
  std::vector<Architecture> architectures;
  std::vector<TensorType> weight_types;  // of the matrices and embeddings
  std::vector<KvType> kv_types;
  int32_t max_block_tokens = 0;  // 0: any size
};

// kUnimplemented naming `device_id` and the first thing `caps` does not
// claim: the model's architecture, the weight type of a matrix (embedding,
// output, attention, FFN, router, experts; norms and biases are always f32
// and not weights here), the KV type or the KV block size.
absl::Status CheckCapabilities(const std::string& device_id, const DeviceCapabilities& caps,
                               const ModelSpec& spec, const ExecutorOptions& options);

// One kind of device. Thread safety: Discover runs once on the composition
// root's thread; CreateKvArena and CreateExecutor run on loader threads,
// DetailsJson on the loop thread; implementations keep no mutable state
// across those calls, or guard it.
class DeviceBackend {
 public:
  virtual ~DeviceBackend() = default;

  // The device kind this backend serves ("cpu", "cuda", a plugin's kind).
  virtual const std::string& kind() const = 0;

  // Adds the devices it finds to `found` (and, for GPUs, why there are none).
  // An error only when a device that must exist cannot be described (the
  // CPU); a missing driver or an empty plugin adds nothing.
  virtual absl::Status Discover(const DiscoveryOptions& options, Discovery& found) = 0;

  // Whether this build can run models on `device` (one of its own).
  virtual bool RunsModels(const Device& device) const = 0;

  // What `device` (one of its own) runs.
  virtual DeviceCapabilities Capabilities(const Device& device) const = 0;

  // The device's KV arena, growing up to `budget` in pages of `page_bytes`.
  virtual absl::StatusOr<KvArenaPtr> CreateKvArena(const Device& device, KvArenaBudget budget,
                                                   size_t page_bytes) = 0;

  // An executor for `spec` on `device`; options.kv_arena is the device's
  // arena (from CreateKvArena) or null where the backend supports that.
  virtual absl::StatusOr<ExecutorPtr> CreateExecutor(const Device& device, const ModelSpec& spec,
                                                     const ExecutorOptions& options) = 0;

  // The device's vendor facts as a JSON object (the devices API shows it
  // under the device's kind).
  virtual nlohmann::json DetailsJson(const Device& device) const = 0;
};

using DeviceBackendPtr = std::unique_ptr<DeviceBackend>;

// The backends of one node, by kind. Not thread-safe while being filled;
// read-only (and so safe from any thread) after.
class BackendRegistry {
 public:
  // kAlreadyExists when a backend of the same kind is registered (two
  // plugins claiming one kind, or a plugin claiming "cpu").
  absl::Status Add(DeviceBackendPtr backend);

  // Runs every backend's Discover in the order they were added (the CPU
  // first when it was added first). Stops at the first error.
  absl::StatusOr<Discovery> DiscoverAll(const DiscoveryOptions& options) const;

  // The backend of `device`'s kind, or null when none is registered.
  DeviceBackend* For(const Device& device) const;
  DeviceBackend* ForKind(std::string_view kind) const;

  // Whether a backend runs models on `device`.
  bool RunsModels(const Device& device) const;
  // kUnimplemented (naming the device) when no backend serves its kind; and
  // for CreateExecutor, when the device does not claim the model, weight
  // types or KV options (CheckCapabilities).
  absl::StatusOr<KvArenaPtr> CreateKvArena(const Device& device, KvArenaBudget budget,
                                           size_t page_bytes) const;
  absl::StatusOr<ExecutorPtr> CreateExecutor(const Device& device, const ModelSpec& spec,
                                             const ExecutorOptions& options) const;
  // The backend's details, or null when none serves the device.
  nlohmann::json DetailsJson(const Device& device) const;

  std::vector<std::string> kinds() const;

 private:
  std::vector<DeviceBackendPtr> backends_;
};

}  // namespace tokenmill::devices
