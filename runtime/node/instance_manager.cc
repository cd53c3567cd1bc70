#include "runtime/node/instance_manager.h"

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <map>
#include <system_error>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "runtime/node/device_arbiter.h"
#include "runtime/node/device_backends.h"
#include "runtime/node/model_warmup.h"

namespace tokenmill::runtime {
namespace {

constexpr uint32_t kMaxSeqsLimit = 4096;
constexpr int32_t kDefaultContextCap = 32768;

// "3.91 GiB", "12.5 MiB", "800 bytes": readable at every model size.
std::string Gib(uint64_t bytes) {
  const double b = static_cast<double>(bytes);
  if (bytes >= (uint64_t{1} << 30)) return absl::StrFormat("%.2f GiB", b / (1ull << 30));
  if (bytes >= (uint64_t{1} << 20)) return absl::StrFormat("%.1f MiB", b / (1ull << 20));
  if (bytes >= (uint64_t{1} << 10)) return absl::StrFormat("%.1f KiB", b / (1ull << 10));
  return absl::StrCat(bytes, " bytes");
}

bool ValidId(const std::string& id) {
  if (id.empty() || id.size() > kMaxModelIdLength) return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == ':' || c == '-';
  });
}

// Bytes of the model's files on disk (the weights dominate).
absl::StatusOr<uint64_t> FileBytes(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    return absl::NotFoundError(absl::StrCat("model file ", path.string(), " does not exist"));
  }
  if (!std::filesystem::is_directory(path, ec)) {
    const auto size = std::filesystem::file_size(path, ec);
    if (ec)
      return absl::NotFoundError(absl::StrCat("cannot read ", path.string(), ": ", ec.message()));
    return size;
  }
  uint64_t total = 0;
  for (const auto& entry : std::filesystem::directory_iterator(path, ec)) {
    if (entry.path().extension() == ".safetensors") total += entry.file_size(ec);
  }
  return total;
}

sched::TenantShare ShareOf(const tenants::TenantPolicy& t) {
  sched::TenantShare share;
  share.weight = t.weight;
  share.max_running = t.max_concurrent;
  share.kv_reserved_blocks =
      static_cast<uint32_t>(std::min<uint64_t>(t.kv_reserved_blocks, UINT32_MAX));
  share.kv_max_fraction = t.kv_max_fraction;
  share.cache_salt = t.CacheSalt();
  return share;
}

}  // namespace

std::string_view InstanceStateName(InstanceState state) {
  switch (state) {
    case InstanceState::kLoading:
      return "loading";
    case InstanceState::kReady:
      return "ready";
    case InstanceState::kDraining:
      return "draining";
    case InstanceState::kFailed:
      return "failed";
  }
  return "failed";
}

std::string_view ModelSourceName(ModelSource source) {
  return source == ModelSource::kConfig ? "config" : "api";
}

std::string_view InstanceEventName(InstanceEventKind kind) {
  switch (kind) {
    case InstanceEventKind::kLoadStarted:
      return "load_started";
    case InstanceEventKind::kLoaded:
      return "loaded";
    case InstanceEventKind::kLoadFailed:
      return "load_failed";
    case InstanceEventKind::kUnloaded:
      return "unloaded";
  }
  return "unloaded";
}

struct InstanceManager::Impl {
  struct DeviceSlot {
    devices::Device* device = nullptr;
    devices::KvArenaPtr arena;
    std::unique_ptr<DeviceArbiter> arbiter;
  };

  struct Entry {
    InstanceInfo info;
    std::atomic<double> progress{0.0};
    std::atomic<bool> cancel{false};
    ModelInstancePtr instance;
    Clock::time_point started;  // when Load was called
  };

  // Guards listeners registered with the tenant registry against a manager
  // that is gone.
  struct Liveness {
    absl::Mutex mu;
    Impl* impl ABSL_GUARDED_BY(mu) = nullptr;
  };

  Impl(tenants::TenantRegistry& t, const Clock& c, InstanceManagerOptions o)
      : tenants(t), clock(c), options(std::move(o)) {
    if (options.backends == nullptr) {
      // Only fails for a kind added twice, which two fixed kinds cannot be.
      (void)AddBuiltinBackends(own_backends);
      options.backends = &own_backends;
    }
  }
  const devices::BackendRegistry& backends() const { return *options.backends; }

  DeviceSlot* FindDevice(const std::string& id) {
    for (auto& d : devices) {
      if (d.device->Info().id == id) return &d;
    }
    return nullptr;
  }
  uint64_t FreeBytes(const devices::Device& device) const;
  void LoadWorker(std::shared_ptr<Entry> entry, DeviceSlot* slot);
  void DrainWorker(std::shared_ptr<Entry> entry);
  void StartWorker(std::function<void()> fn) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);
  void ApplyTenants(ModelInstance* only);
  InstanceInfo InfoOf(const Entry& e) const ABSL_SHARED_LOCKS_REQUIRED(mu);
  // Sends an event to the observer; call with `mu` not held.
  void Emit(InstanceEventKind kind, InstanceInfo info,
            std::chrono::nanoseconds elapsed = std::chrono::nanoseconds(0)) const {
    if (options.observer) options.observer(InstanceEvent{kind, std::move(info), elapsed});
  }

  tenants::TenantRegistry& tenants;
  const Clock& clock;
  InstanceManagerOptions options;
  devices::BackendRegistry own_backends;  // used when options.backends is null
  std::vector<DeviceSlot> devices;
  std::vector<std::string> unusable;  // devices left out at creation, with why
  std::shared_ptr<Liveness> liveness = std::make_shared<Liveness>();

  mutable absl::Mutex mu;
  std::map<std::string, std::shared_ptr<Entry>> entries ABSL_GUARDED_BY(mu);
  struct Worker {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  std::vector<Worker> workers ABSL_GUARDED_BY(mu);
  bool stopped ABSL_GUARDED_BY(mu) = false;
};

uint64_t InstanceManager::Impl::FreeBytes(const devices::Device& device) const {
  if (options.latest_sample) {
    if (auto sample = options.latest_sample(device.Info().id);
        sample && sample->memory_total_bytes) {
      return sample->memory_total_bytes -
             std::min(sample->memory_used_bytes, sample->memory_total_bytes);
    }
  }
  return device.Info().memory_total_bytes;
}

void InstanceManager::Impl::StartWorker(std::function<void()> fn) {
  // Reap finished workers so the list stays short.
  for (auto it = workers.begin(); it != workers.end();) {
    if (it->done->load()) {
      it->thread.join();
      it = workers.erase(it);
    } else {
      ++it;
    }
  }
  auto done = std::make_shared<std::atomic<bool>>(false);
  workers.push_back({std::thread([fn = std::move(fn), done] {
                       fn();
                       done->store(true);
                     }),
                     done});
}

InstanceInfo InstanceManager::Impl::InfoOf(const Entry& e) const {
  InstanceInfo info = e.info;
  info.load_progress = info.state == InstanceState::kLoading ? e.progress.load() : 1.0;
  if (e.instance) info.stats = e.instance->Stats();
  return info;
}

void InstanceManager::Impl::ApplyTenants(ModelInstance* only) {
  std::vector<ModelInstancePtr> targets;
  {
    absl::MutexLock lock(&mu);
    for (const auto& [id, e] : entries) {
      if (e->instance && (only == nullptr || e->instance.get() == only))
        targets.push_back(e->instance);
    }
  }
  const std::vector<tenants::TenantPolicy> list = tenants.List();
  for (const auto& instance : targets) {
    for (const auto& t : list) instance->SetTenantShare(t.name, ShareOf(t));
  }
}

void InstanceManager::Impl::LoadWorker(std::shared_ptr<Entry> entry, DeviceSlot* slot) {
  auto fail = [&](const absl::Status& status) {
    InstanceInfo info;
    {
      absl::MutexLock lock(&mu);
      entry->info.state = InstanceState::kFailed;
      entry->info.error =
          entry->cancel.load() ? "unloaded while loading" : std::string(status.message());
      // Unload and Stop already took a cancelled entry off the list.
      if (entry->cancel.load()) return;
      info = InfoOf(*entry);
    }
    Emit(InstanceEventKind::kLoadFailed, std::move(info), clock.Now() - entry->started);
  };
  const ModelLoadSpec spec = entry->info.spec;
  absl::StatusOr<model::LoadedModel> loaded = model::LoadModel(spec.path);
  if (!loaded.ok()) return fail(loaded.status());
  const devices::ModelSpec& ms = loaded->spec;

  // Fault the weights in now, with progress, so the first request does not
  // pay for it and an unreadable file fails here.
  if (absl::Status s = WarmWeights(ms, entry->progress, entry->cancel); !s.ok()) return fail(s);

  const int32_t trained = ms.hp.context_length > 0 ? ms.hp.context_length : 4096;
  const int32_t context =
      spec.context ? static_cast<int32_t>(*spec.context) : std::min(trained, kDefaultContextCap);
  const uint32_t max_seqs = spec.max_seqs.value_or(options.default_max_seqs);
  const uint32_t max_batch_tokens =
      spec.max_batch_tokens.value_or(options.default_max_batch_tokens);

  const devices::KvLayout layout = devices::KvLayoutFor(ms, options.block_tokens, options.kv_type);
  const size_t page_bytes = slot->arena->page_bytes();
  const uint32_t per_page = static_cast<uint32_t>(page_bytes / layout.BlockBytes());
  if (per_page == 0) {
    return fail(absl::ResourceExhaustedError(absl::StrCat(
        "a KV block of this model takes ", layout.BlockBytes(), " bytes, more than the ",
        page_bytes, "-byte arena page of ", slot->device->Info().id)));
  }
  const uint64_t blocks_per_seq = (static_cast<uint64_t>(context) + options.block_tokens - 1) /
                                  static_cast<uint64_t>(options.block_tokens);
  const uint64_t arena_blocks = uint64_t{slot->arena->Stats().pages_total} * per_page;
  uint64_t id_space = std::min<uint64_t>(blocks_per_seq * max_seqs + per_page, arena_blocks);
  id_space = (id_space + per_page - 1) / per_page * per_page;

  // The weights (uploaded by the executor on a GPU) get first call on the
  // memory: chunks no instance has a page in go back to the device, and the
  // arena grows again as pages are taken.
  slot->arena->TrimFreeChunks();

  devices::ExecutorOptions eo;
  eo.block_tokens = options.block_tokens;
  eo.kv_type = options.kv_type;
  eo.kv_arena = slot->arena.get();
  eo.kv_blocks = static_cast<uint32_t>(std::min<uint64_t>(id_space, UINT32_MAX));
  eo.threads = options.cpu_threads;
  eo.max_batch_tokens = static_cast<int32_t>(max_batch_tokens);
  absl::StatusOr<devices::ExecutorPtr> executor = backends().CreateExecutor(*slot->device, ms, eo);
  if (!executor.ok()) return fail(executor.status());

  InstanceOptions io;
  io.id = spec.id;
  io.device = slot->device->Info().id;
  io.scheduler.max_seqs = static_cast<int32_t>(max_seqs);
  io.scheduler.max_batch_tokens = static_cast<int32_t>(max_batch_tokens);
  io.scheduler.context = context;
  io.scheduler.vtc_input_weight = options.vtc_input_weight;
  io.scheduler.vtc_output_weight = options.vtc_output_weight;
  const std::string arch = loaded->metadata.count("general.architecture")
                               ? loaded->metadata.at("general.architecture")
                               : std::string(devices::ArchitectureName(ms.arch));
  const uint64_t weight_bytes = ms.WeightBytes();
  UsageObserverPtr observer =
      options.usage_observer ? options.usage_observer(spec.id, slot->device->Info().id) : nullptr;
  absl::StatusOr<std::unique_ptr<ModelInstance>> instance =
      ModelInstance::Start(std::move(io), std::move(*loaded), std::move(*executor), *slot->arena,
                           *slot->arbiter, clock, std::move(observer));
  if (!instance.ok()) return fail(instance.status());
  ModelInstancePtr shared(std::move(*instance));
  {
    absl::MutexLock lock(&mu);
    if (entry->cancel.load() || stopped) {
      entry->info.state = InstanceState::kFailed;
      entry->info.error = "unloaded while loading";
      shared->Stop();
      return;
    }
    entry->instance = shared;
    entry->info.state = InstanceState::kReady;
    entry->info.architecture = arch;
    entry->info.chat_template = std::string(shared->chat_template().source());
    entry->info.tool_calls =
        std::string(chat::ToolCallFormatName(shared->chat_template().tool_call_format()));
    entry->info.weight_bytes = weight_bytes;
    entry->info.kv_bytes_per_block = layout.BlockBytes();
    entry->info.context = context;
    entry->info.max_seqs = max_seqs;
    entry->info.max_batch_tokens = max_batch_tokens;
    entry->info.loaded_at = std::chrono::system_clock::now();
    entry->progress.store(1.0);
  }
  ApplyTenants(shared.get());
  InstanceInfo info;
  {
    absl::MutexLock lock(&mu);
    info = InfoOf(*entry);
  }
  Emit(InstanceEventKind::kLoaded, std::move(info), clock.Now() - entry->started);
}

void InstanceManager::Impl::DrainWorker(std::shared_ptr<Entry> entry) {
  ModelInstancePtr instance;
  {
    absl::MutexLock lock(&mu);
    instance = entry->instance;
  }
  if (instance) {
    instance->Drain();
    while (!instance->idle()) {
      {
        absl::MutexLock lock(&mu);
        if (stopped) break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    instance->Stop();
  }
  InstanceInfo info;
  {
    absl::MutexLock lock(&mu);
    if (stopped) return;  // Stop() ends everything without events
    info = InfoOf(*entry);
  }
  // Sent while the entry still holds the id, so that what follows an unload
  // (metric series removed) is done before the id can be loaded again.
  Emit(InstanceEventKind::kUnloaded, std::move(info));
  absl::MutexLock lock(&mu);
  auto it = entries.find(entry->info.spec.id);
  if (it != entries.end() && it->second == entry) entries.erase(it);
}

InstanceManager::InstanceManager(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

absl::StatusOr<std::unique_ptr<InstanceManager>> InstanceManager::Create(
    std::vector<devices::Device*> devices, tenants::TenantRegistry& tenants, const Clock& clock,
    InstanceManagerOptions options) {
  auto impl = std::make_unique<Impl>(tenants, clock, std::move(options));
  for (devices::Device* device : devices) {
    if (device == nullptr) continue;
    if (!impl->backends().RunsModels(*device)) {
      impl->unusable.push_back(
          absl::StrCat(device->Info().id, ": this build has no executor for this device"));
      continue;
    }
    // The arena takes no memory yet: it grows as instances take pages, up to
    // its budget of what the weights leave.
    devices::KvArenaBudget budget =
        impl->options.kv_memory ? impl->options.kv_memory(*device) : devices::KvArenaBudget{};
    if (budget.bytes) budget.bytes = std::max<uint64_t>(*budget.bytes, impl->options.kv_page_bytes);
    absl::StatusOr<devices::KvArenaPtr> arena =
        impl->options.create_kv_arena
            ? impl->options.create_kv_arena(*device, budget, impl->options.kv_page_bytes)
            : impl->backends().CreateKvArena(*device, budget, impl->options.kv_page_bytes);
    if (!arena.ok() && device->Info().kind != devices::DeviceKind::kCpu) {
      impl->unusable.push_back(absl::StrCat(device->Info().id, ": ", arena.status().ToString()));
      continue;
    }
    if (!arena.ok()) return arena.status();
    impl->devices.push_back(
        {device, std::move(*arena), std::make_unique<DeviceArbiter>(device->Info().id)});
  }
  {
    absl::MutexLock lock(&impl->liveness->mu);
    impl->liveness->impl = impl.get();
  }
  std::weak_ptr<Impl::Liveness> weak = impl->liveness;
  tenants.OnChange([weak] {
    auto alive = weak.lock();
    if (!alive) return;
    absl::MutexLock lock(&alive->mu);
    if (alive->impl != nullptr) alive->impl->ApplyTenants(nullptr);
  });
  return std::unique_ptr<InstanceManager>(new InstanceManager(std::move(impl)));
}

InstanceManager::~InstanceManager() { Stop(); }

std::vector<std::string> InstanceManager::unusable_devices() const { return impl_->unusable; }
const Clock& InstanceManager::clock() const { return impl_->clock; }

absl::StatusOr<ModelLoadSpec> InstanceManager::Resolve(ModelLoadSpec spec) const {
  const Impl& m = *impl_;
  if (!ValidId(spec.id)) {
    return absl::InvalidArgumentError(absl::StrCat("model id \"", spec.id, "\" must be 1-",
                                                   kMaxModelIdLength,
                                                   " characters of A-Z a-z 0-9 _ . : -"));
  }
  if (spec.max_seqs && (*spec.max_seqs == 0 || *spec.max_seqs > kMaxSeqsLimit)) {
    return absl::InvalidArgumentError(absl::StrCat("max_seqs must be in [1, ", kMaxSeqsLimit, "]"));
  }
  if (spec.max_batch_tokens && (*spec.max_batch_tokens == 0 || *spec.max_batch_tokens > 65536)) {
    return absl::InvalidArgumentError("max_batch_tokens must be in [1, 65536]");
  }
  if (spec.context && (*spec.context < 16 || *spec.context > 1048576)) {
    return absl::InvalidArgumentError("context must be in [16, 1048576]");
  }
  {
    // Every running sequence must fit its decode token into one step.
    const uint32_t seqs = spec.max_seqs.value_or(m.options.default_max_seqs);
    const uint32_t tokens = spec.max_batch_tokens.value_or(m.options.default_max_batch_tokens);
    if (tokens < seqs) {
      return absl::InvalidArgumentError(
          absl::StrCat("max_batch_tokens (", tokens, ") must be at least max_seqs (", seqs, ")"));
    }
  }
  ModelPathPolicy policy;
  if (spec.source == ModelSource::kApi) policy.roots = m.options.model_roots;
  absl::StatusOr<std::filesystem::path> path = ResolveModelPath(spec.path, policy);
  if (!path.ok()) return path.status();
  spec.path = std::move(*path);
  return spec;
}

absl::StatusOr<InstanceInfo> InstanceManager::Load(ModelLoadSpec requested) {
  Impl& m = *impl_;
  absl::StatusOr<ModelLoadSpec> resolved = Resolve(std::move(requested));
  if (!resolved.ok()) return resolved.status();
  ModelLoadSpec& spec = *resolved;
  absl::StatusOr<uint64_t> file_bytes = FileBytes(spec.path);
  if (!file_bytes.ok()) return file_bytes.status();

  Impl::DeviceSlot* slot = nullptr;
  if (spec.device.empty() || spec.device == "auto") {
    for (auto& d : m.devices) {
      if (slot == nullptr || m.FreeBytes(*d.device) > m.FreeBytes(*slot->device)) slot = &d;
    }
    if (slot == nullptr) return absl::NotFoundError("no device on this node can run models");
  } else {
    slot = m.FindDevice(spec.device);
    if (slot == nullptr) {
      return absl::NotFoundError(absl::StrCat("device ", spec.device,
                                              " is not on this node or this build has no "
                                              "executor for it"));
    }
  }
  // Arena chunks with no page taken are free for the weights: they are
  // given back before the weights load.
  const uint64_t free_bytes = m.FreeBytes(*slot->device);
  const devices::KvArenaStats arena = slot->arena->Stats();
  const uint64_t reclaimable = uint64_t{arena.pages_reclaimable} * arena.page_bytes;
  const uint64_t need = *file_bytes + m.options.kv_page_bytes;
  if (need > free_bytes + reclaimable) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "model ", spec.id, " does not fit on ", slot->device->Info().id, ": it needs ", Gib(need),
        " (weights ", Gib(*file_bytes), " + one KV page ", Gib(m.options.kv_page_bytes), ") and ",
        Gib(free_bytes + reclaimable), " are free (", Gib(reclaimable), " of it idle KV arena)"));
  }
  // Give the idle chunks back now when the weights need them, so the memory
  // reads free while the file is read (the loader trims again before the
  // weights go to the device).
  if (need > free_bytes) slot->arena->TrimFreeChunks();

  InstanceInfo info;
  {
    absl::MutexLock lock(&m.mu);
    if (m.stopped) return absl::FailedPreconditionError("the node is stopping");
    if (auto it = m.entries.find(spec.id);
        it != m.entries.end() && it->second->info.state != InstanceState::kFailed) {
      return absl::AlreadyExistsError(absl::StrCat(
          "model ", spec.id, " is already loaded (state ",
          std::string(InstanceStateName(it->second->info.state)), "); unload it first"));
    }
    auto entry = std::make_shared<Impl::Entry>();
    entry->info.spec = spec;
    entry->info.device = slot->device->Info().id;
    entry->info.state = InstanceState::kLoading;
    entry->started = m.clock.Now();
    m.entries[spec.id] = entry;  // replaces a failed entry
    m.StartWorker([&m, entry, slot] { m.LoadWorker(entry, slot); });
    info = m.InfoOf(*entry);
  }
  m.Emit(InstanceEventKind::kLoadStarted, info);
  return info;
}

absl::Status InstanceManager::AddFailed(ModelLoadSpec spec, std::string error) {
  Impl& m = *impl_;
  absl::MutexLock lock(&m.mu);
  if (m.entries.contains(spec.id)) {
    return absl::AlreadyExistsError(absl::StrCat("model ", spec.id, " is already listed"));
  }
  auto entry = std::make_shared<Impl::Entry>();
  entry->info.spec = std::move(spec);
  entry->info.state = InstanceState::kFailed;
  entry->info.error = std::move(error);
  m.entries[entry->info.spec.id] = entry;
  return absl::OkStatus();
}

absl::StatusOr<InstanceInfo> InstanceManager::WaitLoaded(const std::string& id,
                                                         std::chrono::milliseconds timeout) {
  Impl& m = *impl_;
  absl::MutexLock lock(&m.mu);
  auto left_loading = [&m, &id]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(m.mu) {
    auto it = m.entries.find(id);
    return it == m.entries.end() || it->second->info.state != InstanceState::kLoading;
  };
  m.mu.AwaitWithTimeout(absl::Condition(&left_loading), absl::FromChrono(timeout));
  auto it = m.entries.find(id);
  if (it == m.entries.end())
    return absl::NotFoundError(absl::StrCat("model ", id, " is not loaded"));
  return m.InfoOf(*it->second);
}

absl::Status InstanceManager::Unload(const std::string& id) {
  Impl& m = *impl_;
  InstanceInfo removed;
  {
    absl::MutexLock lock(&m.mu);
    auto it = m.entries.find(id);
    if (it == m.entries.end())
      return absl::NotFoundError(absl::StrCat("model ", id, " is not loaded"));
    std::shared_ptr<Impl::Entry> entry = it->second;
    switch (entry->info.state) {
      case InstanceState::kDraining:
        return absl::OkStatus();
      case InstanceState::kReady:
        entry->info.state = InstanceState::kDraining;
        m.StartWorker([&m, entry] { m.DrainWorker(entry); });
        return absl::OkStatus();  // kUnloaded comes from the drain worker
      case InstanceState::kFailed:
        break;
      case InstanceState::kLoading:
        // The loader sees the flag and ends in kFailed; take it off the list now.
        entry->cancel.store(true);
        break;
    }
    removed = m.InfoOf(*entry);
    m.entries.erase(it);
  }
  m.Emit(InstanceEventKind::kUnloaded, std::move(removed));
  return absl::OkStatus();
}

std::vector<InstanceInfo> InstanceManager::List() const {
  absl::MutexLock lock(&impl_->mu);
  std::vector<InstanceInfo> out;
  for (const auto& [id, e] : impl_->entries) out.push_back(impl_->InfoOf(*e));
  return out;
}

absl::StatusOr<InstanceInfo> InstanceManager::Get(const std::string& id) const {
  absl::MutexLock lock(&impl_->mu);
  auto it = impl_->entries.find(id);
  if (it == impl_->entries.end())
    return absl::NotFoundError(absl::StrCat("model ", id, " is not loaded"));
  return impl_->InfoOf(*it->second);
}

ModelInstancePtr InstanceManager::Find(const std::string& id) const {
  absl::MutexLock lock(&impl_->mu);
  auto it = impl_->entries.find(id);
  if (it == impl_->entries.end() || it->second->info.state != InstanceState::kReady) return nullptr;
  return it->second->instance;
}

std::vector<DeviceRuntimeStats> InstanceManager::DeviceStats() const {
  std::vector<DeviceRuntimeStats> out;
  for (const auto& d : impl_->devices) {
    out.push_back({d.device->Info().id, d.arena->Stats(), d.arbiter->busy_time()});
  }
  return out;
}

void InstanceManager::Stop() {
  Impl& m = *impl_;
  {
    absl::MutexLock lock(&m.liveness->mu);
    m.liveness->impl = nullptr;
  }
  std::vector<Impl::Worker> workers;
  std::vector<std::shared_ptr<Impl::Entry>> entries;
  {
    absl::MutexLock lock(&m.mu);
    m.stopped = true;
    for (auto& [id, e] : m.entries) {
      e->cancel.store(true);
      entries.push_back(e);
    }
    workers.swap(m.workers);
  }
  for (auto& w : workers) w.thread.join();
  for (auto& e : entries) {
    if (e->instance) e->instance->Stop();
  }
  absl::MutexLock lock(&m.mu);
  m.entries.clear();
}

}  // namespace tokenmill::runtime
