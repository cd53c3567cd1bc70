// InstanceManager: the node's model instances. Places models on devices
// (the requested one, or the one with the most free memory), loads them on a
// loader thread with progress, refuses what does not fit (with the numbers),
// drains and unloads them, and keeps one KV arena and one DeviceArbiter per
// device. Tenants' shares are pushed into every instance.
//
// Thread-safe: the control API (HTTP loop) calls it; loads run on their own
// threads; Find() is cheap enough for every data request.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "devices/backend.h"
#include "devices/device.h"
#include "devices/executor.h"
#include "devices/kv_arena.h"
#include "runtime/instance/model_instance.h"
#include "runtime/node/model_path.h"
#include "runtime/tenants/tenant_registry.h"

namespace tokenmill::runtime {

// Who asked for a model: the operator's config file (its paths are trusted)
// or the control API (its paths must resolve inside the model roots).
enum class ModelSource { kConfig, kApi };
std::string_view ModelSourceName(ModelSource source);  // "config", "api"

// What to load; mirrors the config's [[model]] and the POST body.
struct ModelLoadSpec {
  std::string id;               // [A-Za-z0-9_.:-]{1,64}
  std::filesystem::path path;   // absolute; Load keeps the canonical form
  std::string device = "auto";  // "auto" or a device id
  std::optional<uint32_t> max_seqs;
  std::optional<uint32_t> max_batch_tokens;
  std::optional<uint32_t> context;  // default: the model's own, capped at 32768
  ModelSource source = ModelSource::kApi;
  bool operator==(const ModelLoadSpec&) const = default;
};

// The longest model id.
inline constexpr size_t kMaxModelIdLength = 64;

enum class InstanceState { kLoading, kReady, kDraining, kFailed };
std::string_view InstanceStateName(InstanceState state);  // "loading", "ready", ...

struct InstanceInfo {
  ModelLoadSpec spec;
  std::string device;  // where it was placed
  InstanceState state = InstanceState::kLoading;
  double load_progress = 0.0;  // 0..1 while loading, 1 after
  std::string error;           // why it failed (kFailed)
  std::string architecture;    // "llama", "qwen2", "qwen3"
  // "model": the model's own chat template renders chats; "plain": it ships
  // none, chats get the plain "role: content" format. "" until ready.
  std::string chat_template;
  // The format tool calls are parsed in (chat::ToolCallFormatName): "none"
  // when requests with tools are refused. "" until ready.
  std::string tool_calls;
  uint64_t weight_bytes = 0;
  uint64_t kv_bytes_per_block = 0;
  int32_t context = 0;
  uint32_t max_seqs = 0;
  uint32_t max_batch_tokens = 0;
  InstanceStats stats;  // zero until ready
  std::chrono::system_clock::time_point loaded_at{};
};

// What happened to an instance, for logs and for what follows it (state,
// metrics). kLoadFailed is not sent for a load cancelled by Unload or Stop;
// kUnloaded is sent once the instance is gone (drained and stopped, or a
// failed or loading entry removed); Stop() sends nothing.
enum class InstanceEventKind { kLoadStarted, kLoaded, kLoadFailed, kUnloaded };
std::string_view InstanceEventName(InstanceEventKind kind);  // "load_started", ...

struct InstanceEvent {
  InstanceEventKind kind = InstanceEventKind::kLoadStarted;
  InstanceInfo info;                    // as of the event (error set for kLoadFailed)
  std::chrono::nanoseconds elapsed{0};  // kLoaded, kLoadFailed: since the load started
};

// Node-wide settings for instances ([scheduler] and [[device]] of the config).
struct InstanceManagerOptions {
  int32_t block_tokens = 16;
  devices::KvType kv_type = devices::KvType::kF16;
  uint32_t default_max_seqs = 64;
  uint32_t default_max_batch_tokens = 2048;
  double vtc_input_weight = 1.0;
  double vtc_output_weight = 2.0;
  int32_t cpu_threads = 0;  // 0 = one per core
  // The KV arena's cap per device ([[device]] kv_memory); unset: 80% of what
  // the weights leave (KvArenaBudget's default). The arena takes memory only
  // as instances take pages, so a model's weights load first; wholly free
  // chunks of a GPU arena count as free in the fit check and are given back
  // before a model's weights load (a CPU's free pages hold no memory).
  std::function<devices::KvArenaBudget(const devices::Device&)> kv_memory;
  // The backends that make arenas and executors (the composition root's
  // registry, which outlives the manager); null: the compiled-in CPU and
  // CUDA backends (runtime/node/device_backends.h).
  const devices::BackendRegistry* backends = nullptr;
  // Makes a device's arena (budget, page bytes); unset: the device's backend.
  // Tests give a simulated device memory.
  std::function<absl::StatusOr<devices::KvArenaPtr>(const devices::Device&, devices::KvArenaBudget,
                                                    size_t)>
      create_kv_arena;
  // The device's latest reading (the telemetry sampler's), for the fit
  // check; unset or nullopt: the device's total memory counts as free.
  std::function<std::optional<devices::DeviceSample>(const std::string& device_id)> latest_sample;
  size_t kv_page_bytes = devices::kDefaultKvPageBytes;
  // Makes the metering observer of a new instance (model id, device id);
  // unset: instances are not metered.
  std::function<UsageObserverPtr(const std::string& model, const std::string& device)>
      usage_observer;
  // Where kApi models may be loaded from ([node] model_roots). nullopt: any
  // path (embedding and tests); the daemon always sets it.
  std::optional<std::vector<std::filesystem::path>> model_roots;
  // Called for every InstanceEvent, on the thread that made it (the caller of
  // Load/Unload, or a loader thread), with no lock of the manager held: it may
  // call Get/List. Unset: no events.
  std::function<void(const InstanceEvent&)> observer;
};

// A device's KV arena and its step time, for metrics and cost.
struct DeviceRuntimeStats {
  std::string device;
  devices::KvArenaStats arena;
  std::chrono::nanoseconds busy{0};  // device time granted to steps since start
};

class InstanceManager {
 public:
  // `devices`, `tenants` and `clock` outlive the manager; `clock` is what
  // every instance reads time from (ModelInstance::Start) and what load
  // times are measured on. Creates an arena and an
  // arbiter per device this build can run models on (kResourceExhausted when
  // the CPU's arena cannot be made). A GPU whose arena cannot be made (driver
  // too old for the CUDA runtime, memory taken) is left out and listed in
  // unusable_devices(), so the node still serves on its other devices.
  static absl::StatusOr<std::unique_ptr<InstanceManager>> Create(
      std::vector<devices::Device*> devices, tenants::TenantRegistry& tenants, const Clock& clock,
      InstanceManagerOptions options);
  ~InstanceManager();  // Stop()s

  // Checks a spec without loading it: id, limits and path (ResolveModelPath,
  // with the model roots for kApi specs). Returns the spec with the
  // canonical path. Errors as Load's.
  absl::StatusOr<ModelLoadSpec> Resolve(ModelLoadSpec spec) const;
  // Starts loading. Returns at once with state kLoading. kAlreadyExists (id
  // in use, unless by a kFailed entry, which the load replaces),
  // kInvalidArgument (bad id, limits or path; not a regular file), kNotFound
  // (file or device; for kApi also a path outside the model roots),
  // kResourceExhausted (does not fit: the message says weights + minimum KV
  // versus free memory, counting the device arena's wholly free chunks as
  // free; they are given back when the weights need them), kFailedPrecondition
  // (stopped). Errors found while loading put the instance in kFailed with the
  // reason; it stays listed until unloaded or loaded again.
  absl::StatusOr<InstanceInfo> Load(ModelLoadSpec spec);
  // Lists a model that was not loaded as kFailed with `error` (start-up: a
  // model whose last load failed, kept visible without retrying it).
  // kAlreadyExists when the id is in use.
  absl::Status AddFailed(ModelLoadSpec spec, std::string error);
  // Blocks until the model left kLoading or the timeout passed; its info.
  absl::StatusOr<InstanceInfo> WaitLoaded(const std::string& id, std::chrono::milliseconds timeout);
  // Drains the instance (no new requests; running ones finish), then frees
  // it; returns at once (state kDraining). kNotFound.
  absl::Status Unload(const std::string& id);

  std::vector<InstanceInfo> List() const;
  absl::StatusOr<InstanceInfo> Get(const std::string& id) const;
  // A ready instance, or nullptr.
  ModelInstancePtr Find(const std::string& id) const;

  std::vector<DeviceRuntimeStats> DeviceStats() const;
  // The clock given to Create: GenerationRequest::deadline is on it.
  const Clock& clock() const;
  // "device id: reason" for each device left out at creation.
  std::vector<std::string> unusable_devices() const;

  // Stops every instance (in-flight requests end kCancelled). Idempotent.
  void Stop();

 private:
  struct Impl;
  explicit InstanceManager(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tokenmill::runtime
