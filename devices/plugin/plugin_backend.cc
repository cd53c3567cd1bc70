#include "devices/plugin/plugin_backend.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "devices/dynamic_library.h"
#include "devices/plugin/tokenmill_device.h"
#include "devices/power_meter.h"

namespace tokenmill::devices {
namespace {

// The smallest table this daemon can drive: ABI 1.0's, up to
// executor_forward (get_proc_address is optional).
constexpr size_t kMinApiSize = offsetof(tm_device_api, get_proc_address);

// The ABI's id of `arch`; kNoPluginArchitecture for one the ABI cannot
// describe (gemma3: tm_model has no sliding window, post norms or GeGLU;
// qwen3moe: no experts), so no plugin's claim covers it.
constexpr uint32_t kNoPluginArchitecture = 32;
uint32_t PluginArchitecture(Architecture arch) {
  switch (arch) {
    case Architecture::kLlama:
      return TM_ARCH_LLAMA;
    case Architecture::kQwen2:
      return TM_ARCH_QWEN2;
    case Architecture::kQwen3:
      return TM_ARCH_QWEN3;
    case Architecture::kGemma3:
    case Architecture::kQwen3Moe:
      return kNoPluginArchitecture;
  }
  return kNoPluginArchitecture;
}

// Whether a claim bit set covers `arch`.
bool Claimed(uint32_t architectures, Architecture arch) {
  const uint32_t id = PluginArchitecture(arch);
  return id < 32 && (architectures & (1u << id)) != 0;
}

// A loaded plugin: the library, its table and its state. Shared by the
// backend, its devices, arenas and executors, so the library stays mapped
// while anything of it lives.
class PluginLibrary {
 public:
  PluginLibrary(DynamicLibrary library, const tm_device_api* api, std::string path)
      : library_(std::move(library)), api_(api), path_(std::move(path)) {}
  ~PluginLibrary() {
    if (plugin_ != nullptr) api_->plugin_destroy(plugin_);
  }
  PluginLibrary(const PluginLibrary&) = delete;
  PluginLibrary& operator=(const PluginLibrary&) = delete;

  absl::Status Open(std::function<void(int, std::string_view)> log) {
    log_ = std::move(log);
    tm_plugin_options options{};
    options.struct_size = sizeof(options);
    options.log = &PluginLibrary::Log;
    options.log_user = this;
    tm_plugin* plugin = nullptr;
    if (absl::Status s = Check(api_->plugin_create(&options, &plugin)); !s.ok()) return s;
    if (plugin == nullptr) return absl::InternalError(Prefix("plugin_create gave no plugin"));
    plugin_ = plugin;
    return absl::OkStatus();
  }

  // OK for a null error; else the error's code and message, freed.
  absl::Status Check(tm_error* error) const {
    if (error == nullptr) return absl::OkStatus();
    const int code = api_->error_code(error);
    const char* message = api_->error_message(error);
    absl::Status status(ToStatusCode(code), Prefix(message != nullptr ? message : "(no message)"));
    api_->error_destroy(error);
    return status;
  }

  std::string Prefix(std::string_view message) const {
    return absl::StrCat("device plugin ", api_->kind, ": ", std::string(message));
  }

  const tm_device_api& api() const { return *api_; }
  tm_plugin* plugin() const { return plugin_; }
  const std::string& path() const { return path_; }

 private:
  static absl::StatusCode ToStatusCode(int code) {
    switch (code) {
      case TM_INVALID_ARGUMENT:
      case TM_NOT_FOUND:
      case TM_RESOURCE_EXHAUSTED:
      case TM_FAILED_PRECONDITION:
      case TM_UNIMPLEMENTED:
      case TM_INTERNAL:
      case TM_UNAVAILABLE:
        return static_cast<absl::StatusCode>(code);  // the same numbers by design
      default:
        return absl::StatusCode::kInternal;
    }
  }

  static void Log(void* user, int level, const char* message) {
    auto* self = static_cast<PluginLibrary*>(user);
    if (self->log_ && message != nullptr) self->log_(level, message);
  }

  DynamicLibrary library_;
  const tm_device_api* api_;
  std::string path_;
  tm_plugin* plugin_ = nullptr;
  std::function<void(int, std::string_view)> log_;
};

using PluginLibraryPtr = std::shared_ptr<PluginLibrary>;

struct Claims {
  uint64_t weight_types = 0;
  uint32_t kv_types = 0;
  uint32_t architectures = 0;
  uint32_t max_block_tokens = 0;
  std::vector<std::pair<std::string, std::string>> properties;
};

class PluginDevice : public Device {
 public:
  PluginDevice(PluginLibraryPtr library, uint32_t index, DeviceInfo info, Claims claims,
               std::optional<double> watts, SteadyClock clock)
      : library_(std::move(library)),
        index_(index),
        info_(std::move(info)),
        claims_(std::move(claims)) {
    if (watts) configured_power_.emplace(*watts, std::move(clock));
  }

  const DeviceInfo& Info() const override { return info_; }

  DeviceSample Sample() override {
    DeviceSample out;
    out.memory_total_bytes = info_.memory_total_bytes;
    tm_device_sample s{};
    s.struct_size = sizeof(s);
    const absl::Status status =
        library_->Check(library_->api().device_sample(library_->plugin(), index_, &s));
    if (status.ok()) {
      if (s.memory_total_bytes != 0) out.memory_total_bytes = s.memory_total_bytes;
      if (s.present & TM_SAMPLE_MEMORY_USED) out.memory_used_bytes = s.memory_used_bytes;
      if (s.present & TM_SAMPLE_POWER) out.power_watts = s.power_watts;
      if (s.present & TM_SAMPLE_ENERGY) out.energy_joules = s.energy_joules;
      if (s.present & TM_SAMPLE_UTILIZATION) out.utilization_ratio = s.utilization_ratio;
      if (s.present & TM_SAMPLE_TEMPERATURE) out.temperature_celsius = s.temperature_celsius;
    }
    // No power probe: the configured [[device]] watts stand in, as for a CPU.
    if (!out.power_watts && configured_power_) {
      const PowerReading r = configured_power_->Read();
      out.power_watts = r.watts;
      if (!out.energy_joules) out.energy_joules = r.joules;
    }
    return out;
  }

  // Free device memory now, for a fraction KV budget.
  uint64_t FreeBytes() const {
    tm_device_sample s{};
    if (!ReadSample(s).ok()) return 0;
    if (s.present & TM_SAMPLE_MEMORY_FREE) return s.memory_free_bytes;
    const uint64_t total =
        s.memory_total_bytes != 0 ? s.memory_total_bytes : info_.memory_total_bytes;
    if (s.present & TM_SAMPLE_MEMORY_USED)
      return total > s.memory_used_bytes ? total - s.memory_used_bytes : 0;
    return total;
  }

  const PluginLibraryPtr& library() const { return library_; }
  uint32_t index() const { return index_; }
  const Claims& claims() const { return claims_; }

 private:
  // The telemetry sampler and the arena (a fraction budget, on engine
  // threads) both read samples; the ABI allows one caller per device.
  absl::Status ReadSample(tm_device_sample& s) const {
    s.struct_size = sizeof(s);
    absl::MutexLock lock(&sample_mu_);
    return library_->Check(library_->api().device_sample(library_->plugin(), index_, &s));
  }

  PluginLibraryPtr library_;
  uint32_t index_;
  DeviceInfo info_;
  Claims claims_;
  std::optional<ConfiguredPowerMeter> configured_power_;
  mutable absl::Mutex sample_mu_;
};

std::string LayerName(size_t layer, const char* suffix) {
  return absl::StrCat("blk.", layer, ".", suffix);
}

class PluginExecutor : public Executor {
 public:
  PluginExecutor(PluginLibraryPtr library, tm_executor* executor, ModelSpec spec, KvLayout layout,
                 uint32_t kv_blocks, uint32_t blocks_per_page, KvArena* arena)
      : library_(std::move(library)),
        executor_(executor),
        spec_(std::move(spec)),
        layout_(layout),
        kv_blocks_(kv_blocks),
        blocks_per_page_(blocks_per_page),
        slots_(arena, kv_blocks / blocks_per_page) {
    // The weights were uploaded: the executor keeps no host copy alive.
    spec_.backing.reset();
  }
  ~PluginExecutor() override { library_->api().executor_destroy(executor_); }

  absl::StatusOr<StepOutput> Forward(const Batch& batch) override {
    steps_.clear();
    size_t rows = 0, argmax = 0;
    for (const SequenceStep& s : batch.seqs) {
      tm_sequence_step t{};
      t.seq_id = s.seq_id;
      t.tokens = s.tokens.data();
      t.n_tokens = static_cast<uint32_t>(s.tokens.size());
      t.start_pos = s.start_pos;
      t.block_table = s.block_table.data();
      t.n_blocks = static_cast<uint32_t>(s.block_table.size());
      t.logits = s.logits == LogitsWanted::kNone   ? TM_LOGITS_NONE
                 : s.logits == LogitsWanted::kLast ? TM_LOGITS_LAST
                 : s.logits == LogitsWanted::kAll  ? TM_LOGITS_ALL
                                                   : TM_LOGITS_ARGMAX;
      if (s.tokens.size() > UINT32_MAX || s.block_table.size() > UINT32_MAX) {
        return absl::InvalidArgumentError("a sequence step too large for the plugin ABI");
      }
      rows += LogitsRows(s) * (s.logits == LogitsWanted::kArgmax ? 0 : 1);
      argmax += s.logits == LogitsWanted::kArgmax ? 1 : 0;
      steps_.push_back(t);
    }
    StepOutput out;
    out.vocab_size = spec_.hp.vocab_size;
    out.logits.resize(rows * static_cast<size_t>(spec_.hp.vocab_size));
    out.argmax.resize(argmax);
    tm_batch b{};
    b.struct_size = sizeof(b);
    b.seqs = steps_.data();
    b.n_seqs = steps_.size();
    tm_step_output o{};
    o.struct_size = sizeof(o);
    o.logits = out.logits.data();
    o.logits_capacity = out.logits.size();
    o.argmax = out.argmax.data();
    o.argmax_capacity = out.argmax.size();
    if (absl::Status s = library_->Check(library_->api().executor_forward(executor_, &b, &o));
        !s.ok()) {
      return s;
    }
    out.device_time = std::chrono::nanoseconds(o.device_time_ns);
    return out;
  }

  const KvLayout& kv_layout() const override { return layout_; }
  uint32_t kv_blocks() const override { return kv_blocks_; }
  const ModelSpec& spec() const override { return spec_; }
  uint32_t kv_blocks_per_page() const override { return blocks_per_page_; }

  absl::Status MapKvPage(uint32_t slot, uint32_t arena_page) override {
    absl::StatusOr<void*> address = slots_.Map(slot, arena_page);
    if (!address.ok()) return address.status();
    absl::Status s = library_->Check(library_->api().executor_map_page(executor_, slot, *address));
    if (!s.ok()) (void)slots_.Unmap(slot);  // keep both sides' views equal
    return s;
  }

  absl::Status UnmapKvPage(uint32_t slot) override {
    if (absl::Status s = slots_.Unmap(slot); !s.ok()) return s;
    return library_->Check(library_->api().executor_unmap_page(executor_, slot));
  }

 private:
  PluginLibraryPtr library_;
  tm_executor* executor_;
  ModelSpec spec_;
  KvLayout layout_;
  uint32_t kv_blocks_;
  uint32_t blocks_per_page_;
  KvPageSlots slots_;
  std::vector<tm_sequence_step> steps_;  // reused: no allocation per step once warm
};

class PluginBackend : public DeviceBackend {
 public:
  explicit PluginBackend(PluginLibraryPtr library)
      : library_(std::move(library)), kind_(library_->api().kind) {}

  const std::string& kind() const override { return kind_; }

  absl::Status Discover(const DiscoveryOptions& options, Discovery& found) override {
    const tm_device_api& api = library_->api();
    const uint32_t count = api.device_count(library_->plugin());
    for (uint32_t i = 0; i < count; ++i) {
      tm_device_info d{};
      d.struct_size = sizeof(d);
      if (absl::Status s = library_->Check(api.device_info(library_->plugin(), i, &d)); !s.ok()) {
        return s;
      }
      DeviceInfo info;
      info.id = absl::StrCat(kind_, ":", i);
      info.kind = DeviceKind::kPlugin;
      info.name = d.name != nullptr ? d.name : info.id;
      info.memory_total_bytes = d.memory_total_bytes;
      Claims claims;
      claims.weight_types = d.weight_types;
      claims.kv_types = d.kv_types;
      claims.architectures = d.architectures;
      claims.max_block_tokens = d.max_block_tokens;
      for (size_t p = 0; p < d.property_count && d.properties != nullptr; ++p) {
        const tm_property& prop = d.properties[p];
        if (prop.key == nullptr || prop.value == nullptr) continue;
        claims.properties.emplace_back(prop.key, prop.value);
      }
      std::optional<double> watts;
      if (options.watts_for) watts = options.watts_for(info.id);
      found.devices.push_back(std::make_unique<PluginDevice>(
          library_, i, std::move(info), std::move(claims), watts, options.clock));
    }
    return absl::OkStatus();
  }

  bool RunsModels(const Device& device) const override { return Own(device) != nullptr; }

  DeviceCapabilities Capabilities(const Device& device) const override {
    DeviceCapabilities out;
    const PluginDevice* d = Own(device);
    if (d == nullptr) return out;
    const Claims& c = d->claims();
    for (Architecture a : {Architecture::kLlama, Architecture::kQwen2, Architecture::kQwen3}) {
      if (Claimed(c.architectures, a)) out.architectures.push_back(a);
    }
    for (TensorType t :
         {TensorType::kF32, TensorType::kF16, TensorType::kBF16, TensorType::kQ8_0,
          TensorType::kQ4_0, TensorType::kQ4_K, TensorType::kQ5_K, TensorType::kQ6_K}) {
      if (c.weight_types & (uint64_t{1} << static_cast<uint32_t>(t))) out.weight_types.push_back(t);
    }
    if (c.kv_types & (1u << TM_KV_F16)) out.kv_types.push_back(KvType::kF16);
    if (c.kv_types & (1u << TM_KV_F32)) out.kv_types.push_back(KvType::kF32);
    out.max_block_tokens = static_cast<int32_t>(std::min<uint32_t>(c.max_block_tokens, INT32_MAX));
    return out;
  }

  absl::StatusOr<KvArenaPtr> CreateKvArena(const Device& device, KvArenaBudget budget,
                                           size_t page_bytes) override {
    const PluginDevice* d = Own(device);
    if (d == nullptr) return NotOurs(device);
    PluginLibraryPtr library = library_;
    const uint32_t index = d->index();
    KvChunkSource source;
    source.allocate = [library, index](size_t bytes) -> void* {
      void* base = nullptr;
      // No room is a normal outcome (the arena counts a miss); the error
      // text has nowhere to go from under the arena's lock.
      if (!library->Check(library->api().kv_region_alloc(library->plugin(), index, bytes, &base))
               .ok()) {
        return nullptr;
      }
      return base;
    };
    source.release = [library, index](void* base, size_t bytes) {
      library->api().kv_region_free(library->plugin(), index, base, bytes);
    };
    source.free_bytes = [d] { return d->FreeBytes(); };
    source.free_pages_hold_memory = true;
    return CreateChunkedKvArena(std::move(source), budget, page_bytes);
  }

  absl::StatusOr<ExecutorPtr> CreateExecutor(const Device& device, const ModelSpec& spec,
                                             const ExecutorOptions& options) override {
    const PluginDevice* d = Own(device);
    if (d == nullptr) return NotOurs(device);
    const std::string& id = device.Info().id;
    if (std::string problem = spec.Problem(); !problem.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("model ", spec.name, ": ", problem));
    }
    if (absl::Status s = CheckAbiCovers(*d, spec); !s.ok()) return s;
    if (options.kv_arena == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("device ", id, " keeps KV only in its arena: options.kv_arena is unset"));
    }
    const KvLayout layout = KvLayoutFor(spec, options.block_tokens, options.kv_type);
    absl::StatusOr<KvPaging> paging =
        KvPagingFor(*options.kv_arena, layout.BlockBytes(), options.kv_blocks);
    if (!paging.ok()) return paging.status();

    // The tensor table, named as GGUF names them.
    std::vector<std::string> names;
    std::vector<const TensorView*> views;
    auto add = [&](std::string name, const TensorView& t) {
      if (t.empty()) return;
      names.push_back(std::move(name));
      views.push_back(&t);
    };
    add("token_embd.weight", spec.token_embedding);
    add("output_norm.weight", spec.output_norm);
    add("output.weight", spec.output);
    add("rope_freqs.weight", spec.rope_freq_factors);
    for (size_t l = 0; l < spec.layers.size(); ++l) {
      const LayerWeights& w = spec.layers[l];
      add(LayerName(l, "attn_norm.weight"), w.attn_norm);
      add(LayerName(l, "attn_q.weight"), w.wq);
      add(LayerName(l, "attn_k.weight"), w.wk);
      add(LayerName(l, "attn_v.weight"), w.wv);
      add(LayerName(l, "attn_q.bias"), w.bq);
      add(LayerName(l, "attn_k.bias"), w.bk);
      add(LayerName(l, "attn_v.bias"), w.bv);
      add(LayerName(l, "attn_q_norm.weight"), w.q_norm);
      add(LayerName(l, "attn_k_norm.weight"), w.k_norm);
      add(LayerName(l, "attn_output.weight"), w.wo);
      add(LayerName(l, "ffn_norm.weight"), w.ffn_norm);
      add(LayerName(l, "ffn_gate.weight"), w.w_gate);
      add(LayerName(l, "ffn_up.weight"), w.w_up);
      add(LayerName(l, "ffn_down.weight"), w.w_down);
    }
    std::vector<tm_tensor> tensors(views.size());
    for (size_t i = 0; i < views.size(); ++i) {
      const TensorView& t = *views[i];
      tm_tensor& c = tensors[i];
      c.name = names[i].c_str();
      c.type = static_cast<uint32_t>(t.type);
      c.n_dims = static_cast<uint32_t>(std::min<size_t>(t.shape.size(), 4));
      for (uint32_t k = 0; k < c.n_dims; ++k) c.shape[k] = t.shape[k];
      c.data = t.data;
      c.bytes = t.bytes;
    }
    const ModelHyperparams& hp = spec.hp;
    tm_model m{};
    m.struct_size = sizeof(m);
    m.name = spec.name.c_str();
    m.architecture = PluginArchitecture(spec.arch);
    m.rope_style = hp.rope_style == RopeStyle::kHalves ? TM_ROPE_HALVES : TM_ROPE_ADJACENT_PAIRS;
    m.dim = hp.dim;
    m.n_layers = hp.n_layers;
    m.n_heads = hp.n_heads;
    m.n_kv_heads = hp.n_kv_heads;
    m.head_dim = hp.head_dim;
    m.ffn_dim = hp.ffn_dim;
    m.vocab_size = hp.vocab_size;
    m.context_length = hp.context_length;
    m.rms_norm_eps = hp.rms_norm_eps;
    m.rope_theta = hp.rope_theta;
    m.rope_scaling_factor = hp.rope_scaling.factor;
    m.rope_low_freq_factor = hp.rope_scaling.low_freq_factor;
    m.rope_high_freq_factor = hp.rope_scaling.high_freq_factor;
    m.rope_original_context = hp.rope_scaling.original_context;
    m.tensors = tensors.data();
    m.tensor_count = tensors.size();

    tm_executor_options o{};
    o.struct_size = sizeof(o);
    o.block_tokens = options.block_tokens;
    o.kv_type = options.kv_type == KvType::kF16 ? TM_KV_F16 : TM_KV_F32;
    o.kv_blocks = paging->kv_blocks;
    o.blocks_per_page = paging->blocks_per_page;
    o.page_bytes = options.kv_arena->page_bytes();
    o.max_batch_tokens = options.max_batch_tokens;
    tm_executor* executor = nullptr;
    if (absl::Status s = library_->Check(
            library_->api().executor_create(library_->plugin(), d->index(), &m, &o, &executor));
        !s.ok()) {
      return s;
    }
    if (executor == nullptr)
      return absl::InternalError(library_->Prefix("executor_create gave none"));
    return std::make_unique<PluginExecutor>(library_, executor, spec, layout, paging->kv_blocks,
                                            paging->blocks_per_page, options.kv_arena);
  }

  nlohmann::json DetailsJson(const Device& device) const override {
    const PluginDevice* d = Own(device);
    if (d == nullptr) return nullptr;
    nlohmann::json properties = nlohmann::json::object();
    for (const auto& [key, value] : d->claims().properties) properties[key] = value;
    const tm_device_api& api = library_->api();
    return {{"plugin", library_->path()},
            {"plugin_version", api.plugin_version != nullptr ? api.plugin_version : ""},
            {"abi", absl::StrCat(api.abi_major, ".", api.abi_minor)},
            {"index", d->index()},
            {"properties", std::move(properties)}};
  }

 private:
  const PluginDevice* Own(const Device& device) const {
    const auto* d = dynamic_cast<const PluginDevice*>(&device);
    return d != nullptr && d->library() == library_ ? d : nullptr;
  }

  absl::Status NotOurs(const Device& device) const {
    return absl::InvalidArgumentError(
        absl::StrCat("device ", device.Info().id, " is not one of plugin ", kind_, "'s"));
  }

  // What the ABI cannot describe, checked before anything is uploaded (what
  // the device claims, BackendRegistry::CreateExecutor checks).
  static absl::Status CheckAbiCovers(const PluginDevice& d, const ModelSpec& spec) {
    // The ABI's tm_model has no experts (Mixtral is llama with them), no
    // sliding window (Mistral's) and no linear RoPE scaling.
    if (spec.hp.n_experts > 0 || spec.hp.sliding_window > 0 || spec.hp.rope_linear_factor != 1.0f) {
      return absl::UnimplementedError(
          absl::StrCat("device ", d.Info().id, " cannot run this ", ArchitectureName(spec.arch),
                       " model: plugins take no ",
                       spec.hp.n_experts > 0        ? "mixture of experts"
                       : spec.hp.sliding_window > 0 ? "sliding-window attention"
                                                    : "linear RoPE scaling",
                       " (plugin ABI); run it on the CPU"));
    }
    return absl::OkStatus();
  }

  PluginLibraryPtr library_;
  std::string kind_;
};

bool ValidKind(std::string_view kind) {
  if (kind.empty() || kind.size() > 32 ||
      !absl::ascii_islower(static_cast<unsigned char>(kind[0]))) {
    return false;
  }
  return std::all_of(kind.begin(), kind.end(), [](char c) {
    return absl::ascii_islower(static_cast<unsigned char>(c)) ||
           absl::ascii_isdigit(static_cast<unsigned char>(c)) || c == '_' || c == '-';
  });
}

}  // namespace

namespace {

// `start` and every directory above it: owned by a trusted owner, writable
// by no one else. `file` says whether `start` is the library itself. A
// sticky directory others may write (/tmp, where build trees and CI clones
// often live) passes when the entry reached through it is trusted-owned:
// the sticky bit keeps others from renaming or removing what they do not
// own. `entry_trusted` says that of the entry inside a directory `start`.
absl::Status CheckChain(const std::filesystem::path& named, const std::filesystem::path& start,
                        bool file, bool entry_trusted, const std::vector<uid_t>& owners) {
  for (std::filesystem::path p = start;; p = p.parent_path()) {
    struct stat st {};
    if (::stat(p.c_str(), &st) != 0) {
      return absl::NotFoundError(
          absl::StrCat("device plugin ", named.string(), ": cannot stat ", p.string()));
    }
    const char* what = file ? "file" : "directory";
    if (file && !S_ISREG(st.st_mode)) {
      return absl::PermissionDeniedError(
          absl::StrCat("device plugin ", named.string(), " is not a regular file"));
    }
    if (std::find(owners.begin(), owners.end(), st.st_uid) == owners.end()) {
      return absl::PermissionDeniedError(
          absl::StrCat("device plugin ", named.string(), ": ", what, " ", p.string(),
                       " is owned by uid ", st.st_uid, ", not root or the daemon's user"));
    }
    const bool others_write =
        (st.st_mode & S_IWOTH) != 0 || ((st.st_mode & S_IWGRP) != 0 && st.st_gid != 0);
    const bool sticky_guards_entry = !file && (st.st_mode & S_ISVTX) != 0 && entry_trusted;
    if (others_write && !sticky_guards_entry) {
      return absl::PermissionDeniedError(
          absl::StrCat("device plugin ", named.string(), ": ", what, " ", p.string(),
                       " is writable by ", (st.st_mode & S_IWOTH) ? "anyone" : "its group"));
    }
    file = false;
    entry_trusted = true;                               // p passed the owner check
    if (p == p.parent_path()) return absl::OkStatus();  // "/"
  }
}

}  // namespace

absl::Status CheckPluginPathTrusted(const std::filesystem::path& path,
                                    const std::vector<uid_t>& trusted_owners) {
  std::error_code ec;
  const std::filesystem::path resolved = std::filesystem::canonical(path, ec);
  if (ec) {
    return absl::NotFoundError(absl::StrCat("device plugin ", path.string(), ": ", ec.message()));
  }
  std::vector<uid_t> owners = trusted_owners;
  if (owners.empty()) owners = {0, geteuid()};
  // The library itself and its directories, then the directories holding
  // the name the config gave (a symlink there could be re-pointed).
  if (absl::Status s = CheckChain(path, resolved, /*file=*/true, /*entry_trusted=*/false, owners);
      !s.ok()) {
    return s;
  }
  const std::filesystem::path named = std::filesystem::absolute(path);
  const std::filesystem::path holder = std::filesystem::canonical(named.parent_path(), ec);
  if (ec) {
    return absl::NotFoundError(absl::StrCat("device plugin ", path.string(), ": ", ec.message()));
  }
  // The name itself (a symlink, say) must be trusted-owned for a sticky
  // holder to protect it.
  struct stat link {};
  const bool name_trusted = ::lstat(named.c_str(), &link) == 0 &&
                            std::find(owners.begin(), owners.end(), link.st_uid) != owners.end();
  return CheckChain(path, holder, /*file=*/false, name_trusted, owners);
}

absl::StatusOr<DeviceBackendPtr> LoadDevicePlugin(const std::filesystem::path& path,
                                                  PluginLoadOptions options) {
  if (absl::Status s = CheckPluginPathTrusted(path, options.trusted_owners); !s.ok()) {
    return absl::FailedPreconditionError(s.message());
  }
  const std::string resolved = std::filesystem::canonical(path).string();
  absl::StatusOr<DynamicLibrary> library = DynamicLibrary::Open(resolved);
  if (!library.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("device plugin ", resolved, ": ", library.status().message()));
  }
  tm_device_plugin_fn entry = nullptr;
  if (!library->Resolve(TM_DEVICE_ENTRY_POINT, &entry).ok()) {
    return absl::FailedPreconditionError(absl::StrCat("device plugin ", resolved, " exports no ",
                                                      TM_DEVICE_ENTRY_POINT,
                                                      "(): not a tokenmill device plugin"));
  }
  const tm_device_api* api = entry();
  if (api == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("device plugin ", resolved, ": ", TM_DEVICE_ENTRY_POINT, "() returned null"));
  }
  if (api->abi_major != TM_DEVICE_ABI_MAJOR) {
    return absl::FailedPreconditionError(
        absl::StrCat("device plugin ", resolved, " was built for device ABI ", api->abi_major, ".",
                     api->abi_minor, "; this tokenmilld speaks ABI ", TM_DEVICE_ABI_MAJOR, ".",
                     TM_DEVICE_ABI_MINOR,
                     " (the major must match): rebuild the plugin against this "
                     "tokenmill_device.h"));
  }
  if (api->struct_size < kMinApiSize) {
    return absl::FailedPreconditionError(
        absl::StrCat("device plugin ", resolved, ": its function table has ", api->struct_size,
                     " bytes, fewer than ABI ", TM_DEVICE_ABI_MAJOR, ".0's ", kMinApiSize));
  }
  const std::string_view kind = api->kind != nullptr ? api->kind : "";
  if (!ValidKind(kind) || kind == "cpu" || kind == "cuda") {
    return absl::FailedPreconditionError(
        absl::StrCat("device plugin ", resolved, " names device kind \"", std::string(kind),
                     "\": it must match [a-z][a-z0-9_-]{0,31} and not be \"cpu\" or \"cuda\""));
  }
  for (const void* fn : {reinterpret_cast<const void*>(api->error_code),
                         reinterpret_cast<const void*>(api->error_message),
                         reinterpret_cast<const void*>(api->error_destroy),
                         reinterpret_cast<const void*>(api->plugin_create),
                         reinterpret_cast<const void*>(api->plugin_destroy),
                         reinterpret_cast<const void*>(api->device_count),
                         reinterpret_cast<const void*>(api->device_info),
                         reinterpret_cast<const void*>(api->device_sample),
                         reinterpret_cast<const void*>(api->kv_region_alloc),
                         reinterpret_cast<const void*>(api->kv_region_free),
                         reinterpret_cast<const void*>(api->executor_create),
                         reinterpret_cast<const void*>(api->executor_destroy),
                         reinterpret_cast<const void*>(api->executor_map_page),
                         reinterpret_cast<const void*>(api->executor_unmap_page),
                         reinterpret_cast<const void*>(api->executor_forward)}) {
    if (fn == nullptr) {
      return absl::FailedPreconditionError(
          absl::StrCat("device plugin ", resolved, ": its function table has a null entry"));
    }
  }
  auto plugin = std::make_shared<PluginLibrary>(std::move(*library), api, resolved);
  if (absl::Status s = plugin->Open(std::move(options.log)); !s.ok()) {
    return absl::FailedPreconditionError(s.message());
  }
  return std::make_unique<PluginBackend>(std::move(plugin));
}

}  // namespace tokenmill::devices
