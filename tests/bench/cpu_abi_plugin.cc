// The in-tree CPU backend behind the device plugin C ABI: a measurement
// vehicle for plugin_boundary_bench (the boundary's cost per step, the same
// backend in-tree and behind tokenmill_device.h in one run), not a plugin
// anyone ships. Built by the main CMake project as a bench target, never
// installed.
//
// The library holds only this adapter. It links the in-tree CPU code
// (tokenmill_cpu_executor, tokenmill_devices) by name and leaves those symbols
// to the process that loads it, which must export them (CMake
// ENABLE_EXPORTS): dlopen resolves them there. So both sides of the figure
// run the very same machine code, and the difference is the boundary alone
// (the C++ adapter in plugin_backend.cc, the C calls, the output buffers and
// this file's copy of the logits). tokenmilld exports nothing: it cannot load
// this library.
//
// Every function of the table is real: devices, samples, KV regions (mmap'ed
// host memory), executors (the CPU executor over the pages the daemon maps),
// forward (its device time is the whole call, the copy of the outputs into
// the daemon's buffers included; get_proc_address offers
// "cpu_abi_last_copy_ns", that copy's time in the last step). The
// conformance suite (tests/conformance) runs it as "cpu_abi".
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "devices/cpu/cpu_executor.h"
#include "devices/kv_arena.h"
#include "devices/model_spec.h"
#include "devices/plugin/tokenmill_device.h"

struct tm_error {
  tm_status_code code;
  std::string message;
};

struct tm_plugin {
  tm_property properties[1] = {{"backend", "tokenmill_cpu_executor (in-tree, behind the C ABI)"}};
  uint64_t memory_total_bytes = 0;
};

namespace tokenmill::bench::cpu_abi {
namespace {

using devices::TensorType;
using devices::TensorView;

tm_error* Error(tm_status_code code, std::string message) {
  return new (std::nothrow) tm_error{code, std::move(message)};
}

// absl codes and tm codes are the same numbers by design.
tm_error* FromStatus(const absl::Status& s) {
  if (s.ok()) return nullptr;
  const int code = static_cast<int>(s.code());
  const bool known = code == TM_INVALID_ARGUMENT || code == TM_NOT_FOUND ||
                     code == TM_RESOURCE_EXHAUSTED || code == TM_FAILED_PRECONDITION ||
                     code == TM_UNIMPLEMENTED || code == TM_UNAVAILABLE;
  return Error(known ? static_cast<tm_status_code>(code) : TM_INTERNAL, std::string(s.message()));
}

// The CPU executor's view of the daemon's pages: arena page i is whatever
// the daemon mapped in slot i (the executor maps page i in slot i only).
class SlotArena final : public devices::KvArena {
 public:
  SlotArena(size_t page_bytes, uint32_t slots) : page_bytes_(page_bytes), address_(slots) {}

  std::optional<uint32_t> TakePage() override { return std::nullopt; }
  void ReturnPage(uint32_t) override {}
  void* PageAddress(uint32_t page) const override {
    return page < address_.size() ? address_[page] : nullptr;
  }
  uint64_t TrimFreeChunks() override { return 0; }
  devices::KvArenaStats Stats() const override {
    devices::KvArenaStats s;
    s.page_bytes = page_bytes_;
    return s;
  }
  uint64_t page_misses() const override { return 0; }

  uint32_t slots() const { return static_cast<uint32_t>(address_.size()); }
  void*& address(uint32_t slot) { return address_[slot]; }

 private:
  size_t page_bytes_;
  std::vector<void*> address_;
};

// Weight copies (tensor data is valid only during executor_create), 64-byte
// aligned like an mmap'ed GGUF's rows or better.
struct WeightCopies {
  std::vector<std::pair<uint8_t*, size_t>> buffers;
  ~WeightCopies() {
    for (auto& [data, bytes] : buffers) ::operator delete (data, std::align_val_t{64});
  }
};

}  // namespace
}  // namespace tokenmill::bench::cpu_abi

struct tm_executor {
  tm_executor(size_t page_bytes, uint32_t slots) : arena(page_bytes, slots) {}
  tokenmill::bench::cpu_abi::SlotArena arena;
  std::unique_ptr<tokenmill::devices::cpu::CpuExecutor> cpu;
  tokenmill::devices::Batch batch;  // reused: no allocation per step once warm
};

namespace tokenmill::bench::cpu_abi {
namespace {

tm_status_code ErrorCode(const tm_error* e) { return e->code; }
const char* ErrorMessage(const tm_error* e) { return e->message.c_str(); }
void ErrorDestroy(tm_error* e) { delete e; }

tm_error* PluginCreate(const tm_plugin_options*, tm_plugin** out) {
  auto* p = new (std::nothrow) tm_plugin;
  if (p == nullptr) return Error(TM_RESOURCE_EXHAUSTED, "no memory for the plugin");
  p->memory_total_bytes =
      static_cast<uint64_t>(sysconf(_SC_PHYS_PAGES)) * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  *out = p;
  return nullptr;
}
void PluginDestroy(tm_plugin* p) { delete p; }

uint32_t DeviceCount(const tm_plugin*) { return 1; }

tm_error* DeviceInfo(const tm_plugin* p, uint32_t device, tm_device_info* info) {
  if (device != 0) return Error(TM_NOT_FOUND, absl::StrCat("no device ", device));
  tm_device_info d{};
  d.struct_size = info->struct_size;
  d.name = "CPU (in-tree executor behind the C ABI)";
  d.memory_total_bytes = p->memory_total_bytes;
  d.properties = p->properties;
  d.property_count = 1;
  for (TensorType t : {TensorType::kF32, TensorType::kF16, TensorType::kBF16, TensorType::kQ8_0,
                       TensorType::kQ4_0, TensorType::kQ4_K, TensorType::kQ5_K, TensorType::kQ6_K})
    d.weight_types |= uint64_t{1} << static_cast<uint32_t>(t);
  d.kv_types = (1u << TM_KV_F16) | (1u << TM_KV_F32);
  d.architectures = (1u << TM_ARCH_LLAMA) | (1u << TM_ARCH_QWEN2) | (1u << TM_ARCH_QWEN3);
  d.max_block_tokens = 0;
  std::memcpy(info, &d, std::min(info->struct_size, sizeof(d)));
  return nullptr;
}

tm_error* DeviceSample(tm_plugin* p, uint32_t device, tm_device_sample* sample) {
  if (device != 0) return Error(TM_NOT_FOUND, absl::StrCat("no device ", device));
  tm_device_sample s{};
  s.struct_size = sample->struct_size;
  s.memory_total_bytes = p->memory_total_bytes;
  std::memcpy(sample, &s, std::min(sample->struct_size, sizeof(s)));
  return nullptr;
}

tm_error* KvRegionAlloc(tm_plugin*, uint32_t device, uint64_t bytes, void** base) {
  if (device != 0) return Error(TM_NOT_FOUND, absl::StrCat("no device ", device));
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    return Error(TM_RESOURCE_EXHAUSTED, absl::StrCat("mmap of ", bytes, " bytes failed"));
  }
  *base = p;
  return nullptr;
}
void KvRegionFree(tm_plugin*, uint32_t, void* base, uint64_t bytes) { munmap(base, bytes); }

// "blk.N.rest" -> N and rest.
bool LayerOf(std::string_view name, int32_t* layer, std::string_view* rest) {
  if (!name.starts_with("blk.")) return false;
  name.remove_prefix(4);
  const size_t dot = name.find('.');
  if (dot == std::string_view::npos ||
      !absl::SimpleAtoi(absl::string_view(name.data(), dot), layer))
    return false;
  *rest = name.substr(dot + 1);
  return true;
}

// The model as a ModelSpec over copies of its tensors; kInvalidArgument for
// a name the ABI does not define.
absl::StatusOr<devices::ModelSpec> ToSpec(const tm_model& m) {
  devices::ModelSpec spec;
  spec.name = m.name != nullptr ? m.name : "";
  switch (m.architecture) {
    case TM_ARCH_LLAMA:
      spec.arch = devices::Architecture::kLlama;
      break;
    case TM_ARCH_QWEN2:
      spec.arch = devices::Architecture::kQwen2;
      break;
    case TM_ARCH_QWEN3:
      spec.arch = devices::Architecture::kQwen3;
      break;
    default:
      return absl::UnimplementedError(absl::StrCat("architecture ", m.architecture));
  }
  devices::ModelHyperparams& hp = spec.hp;
  hp.dim = m.dim;
  hp.n_layers = m.n_layers;
  hp.n_heads = m.n_heads;
  hp.n_kv_heads = m.n_kv_heads;
  hp.head_dim = m.head_dim;
  hp.ffn_dim = m.ffn_dim;
  hp.vocab_size = m.vocab_size;
  hp.context_length = m.context_length;
  hp.rms_norm_eps = m.rms_norm_eps;
  hp.rope_theta = m.rope_theta;
  hp.rope_style = m.rope_style == TM_ROPE_HALVES ? devices::RopeStyle::kHalves
                                                 : devices::RopeStyle::kAdjacentPairs;
  hp.rope_scaling.factor = m.rope_scaling_factor;
  hp.rope_scaling.low_freq_factor = m.rope_low_freq_factor;
  hp.rope_scaling.high_freq_factor = m.rope_high_freq_factor;
  hp.rope_scaling.original_context = m.rope_original_context;
  if (m.n_layers < 0 || m.n_layers > 4096) {
    return absl::InvalidArgumentError(absl::StrCat("n_layers ", m.n_layers));
  }
  spec.layers.resize(static_cast<size_t>(m.n_layers));

  auto copies = std::make_shared<WeightCopies>();
  std::map<const void*, const uint8_t*> copied;  // a tied output shares the embedding's copy
  for (size_t i = 0; i < m.tensor_count; ++i) {
    const tm_tensor& t = m.tensors[i];
    if (t.name == nullptr || t.data == nullptr || t.n_dims < 1 || t.n_dims > 4) {
      return absl::InvalidArgumentError(absl::StrCat("tensor ", i, " has no name, data or shape"));
    }
    TensorView v;
    v.name = t.name;
    v.type = static_cast<TensorType>(t.type);
    v.shape.assign(t.shape, t.shape + t.n_dims);
    v.bytes = t.bytes;
    auto it = copied.find(t.data);
    if (it == copied.end()) {
      auto* data = static_cast<uint8_t*>(::operator new (t.bytes, std::align_val_t{64}));
      copies->buffers.emplace_back(data, t.bytes);
      std::memcpy(data, t.data, t.bytes);
      it = copied.emplace(t.data, data).first;
    }
    v.data = it->second;
    const std::string_view name = t.name;
    int32_t layer = 0;
    std::string_view rest;
    TensorView* slot = nullptr;
    if (name == "token_embd.weight") {
      slot = &spec.token_embedding;
    } else if (name == "output_norm.weight") {
      slot = &spec.output_norm;
    } else if (name == "output.weight") {
      slot = &spec.output;
    } else if (name == "rope_freqs.weight") {
      slot = &spec.rope_freq_factors;
    } else if (LayerOf(name, &layer, &rest) && layer >= 0 && layer < m.n_layers) {
      devices::LayerWeights& w = spec.layers[static_cast<size_t>(layer)];
      const std::pair<std::string_view, TensorView*> fields[] = {{"attn_norm.weight", &w.attn_norm},
                                                                 {"attn_q.weight", &w.wq},
                                                                 {"attn_k.weight", &w.wk},
                                                                 {"attn_v.weight", &w.wv},
                                                                 {"attn_q.bias", &w.bq},
                                                                 {"attn_k.bias", &w.bk},
                                                                 {"attn_v.bias", &w.bv},
                                                                 {"attn_q_norm.weight", &w.q_norm},
                                                                 {"attn_k_norm.weight", &w.k_norm},
                                                                 {"attn_output.weight", &w.wo},
                                                                 {"ffn_norm.weight", &w.ffn_norm},
                                                                 {"ffn_gate.weight", &w.w_gate},
                                                                 {"ffn_up.weight", &w.w_up},
                                                                 {"ffn_down.weight", &w.w_down}};
      for (const auto& [suffix, field] : fields) {
        if (rest == suffix) slot = field;
      }
    }
    if (slot == nullptr) return absl::InvalidArgumentError(absl::StrCat("unknown tensor ", t.name));
    *slot = std::move(v);
  }
  spec.tied_embeddings = !spec.output.empty() && spec.output.data == spec.token_embedding.data;
  spec.backing = std::move(copies);
  if (std::string problem = spec.Problem(); !problem.empty()) {
    return absl::InvalidArgumentError(problem);
  }
  return spec;
}

tm_error* ExecutorCreate(tm_plugin*, uint32_t device, const tm_model* model,
                         const tm_executor_options* options, tm_executor** out) {
  if (device != 0) return Error(TM_NOT_FOUND, absl::StrCat("no device ", device));
  if (options->blocks_per_page == 0 || options->kv_blocks % options->blocks_per_page != 0) {
    return Error(TM_INVALID_ARGUMENT, "kv_blocks is not a whole number of pages");
  }
  if (options->kv_type != TM_KV_F16 && options->kv_type != TM_KV_F32) {
    return Error(TM_UNIMPLEMENTED, absl::StrCat("KV type ", options->kv_type));
  }
  std::unique_ptr<tm_executor> e;
  absl::StatusOr<devices::ModelSpec> spec;
  try {  // no exception crosses the C ABI
    spec = ToSpec(*model);
    e = std::make_unique<tm_executor>(options->page_bytes,
                                      options->kv_blocks / options->blocks_per_page);
  } catch (const std::bad_alloc&) {
    return Error(TM_RESOURCE_EXHAUSTED, "no host memory for the weights");
  }
  if (!spec.ok()) return FromStatus(spec.status());
  devices::ExecutorOptions o;
  o.block_tokens = options->block_tokens;
  o.kv_type = options->kv_type == TM_KV_F16 ? devices::KvType::kF16 : devices::KvType::kF32;
  o.kv_blocks = options->kv_blocks;
  o.threads = 0;  // one per core, as the in-tree CPU backend by default
  o.max_batch_tokens = options->max_batch_tokens;
  o.kv_arena = &e->arena;
  auto cpu = devices::cpu::CpuExecutor::Create(*spec, o);
  if (!cpu.ok()) return FromStatus(cpu.status());
  if ((*cpu)->kv_blocks_per_page() != options->blocks_per_page ||
      (*cpu)->kv_blocks() != options->kv_blocks) {
    return Error(TM_INVALID_ARGUMENT, "the executor pages KV otherwise than the options say");
  }
  e->cpu = std::move(*cpu);
  *out = e.release();
  return nullptr;
}
void ExecutorDestroy(tm_executor* e) { delete e; }

tm_error* ExecutorMapPage(tm_executor* e, uint32_t slot, void* page) {
  if (slot >= e->arena.slots()) {
    return Error(TM_INVALID_ARGUMENT,
                 absl::StrCat("page slot ", slot, " past the ", e->arena.slots(), " slots"));
  }
  if (page == nullptr) return Error(TM_INVALID_ARGUMENT, "a null page");
  if (e->arena.address(slot) != nullptr) {
    return Error(TM_INVALID_ARGUMENT, absl::StrCat("page slot ", slot, " is already mapped"));
  }
  e->arena.address(slot) = page;
  if (absl::Status s = e->cpu->MapKvPage(slot, slot); !s.ok()) {
    e->arena.address(slot) = nullptr;
    return FromStatus(s);
  }
  return nullptr;
}

tm_error* ExecutorUnmapPage(tm_executor* e, uint32_t slot) {
  if (absl::Status s = e->cpu->UnmapKvPage(slot); !s.ok()) return FromStatus(s);
  e->arena.address(slot) = nullptr;
  return nullptr;
}

// The last step's copy of the logits and argmax into the daemon's buffers,
// in nanoseconds: offered as "cpu_abi_last_copy_ns" (get_proc_address), so
// plugin_boundary_bench can tell this shim's extra copy from the boundary.
std::atomic<uint64_t> last_copy_ns{0};
uint64_t LastCopyNs() { return last_copy_ns.load(std::memory_order_relaxed); }

void* GetProcAddress(const char* name) {
  if (name != nullptr && std::strcmp(name, "cpu_abi_last_copy_ns") == 0) {
    return reinterpret_cast<void*>(&LastCopyNs);
  }
  return nullptr;
}

tm_error* ExecutorForward(tm_executor* e, const tm_batch* batch, tm_step_output* output) {
  using devices::LogitsWanted;
  const auto start = std::chrono::steady_clock::now();
  if (batch->n_seqs == 0 || batch->seqs == nullptr) {
    return Error(TM_INVALID_ARGUMENT, "a batch with no sequence");
  }
  // What the step writes, checked against the buffers before it runs.
  size_t rows = 0, argmax = 0;
  e->batch.seqs.clear();
  for (size_t i = 0; i < batch->n_seqs; ++i) {
    const tm_sequence_step& t = batch->seqs[i];
    if ((t.n_tokens > 0 && t.tokens == nullptr) || (t.n_blocks > 0 && t.block_table == nullptr)) {
      return Error(TM_INVALID_ARGUMENT, absl::StrCat("sequence ", i, ": a null array"));
    }
    devices::SequenceStep s;
    s.seq_id = t.seq_id;
    s.tokens = {t.tokens, t.n_tokens};
    s.start_pos = t.start_pos;
    s.block_table = {t.block_table, t.n_blocks};
    switch (t.logits) {
      case TM_LOGITS_NONE:
        s.logits = LogitsWanted::kNone;
        break;
      case TM_LOGITS_LAST:
        s.logits = LogitsWanted::kLast;
        ++rows;
        break;
      case TM_LOGITS_ALL:
        s.logits = LogitsWanted::kAll;
        rows += t.n_tokens;
        break;
      case TM_LOGITS_ARGMAX:
        s.logits = LogitsWanted::kArgmax;
        ++argmax;
        break;
      default:
        return Error(TM_INVALID_ARGUMENT,
                     absl::StrCat("sequence ", i, ": unknown logits mode ", t.logits));
    }
    e->batch.seqs.push_back(s);
  }
  const size_t vocab = static_cast<size_t>(e->cpu->spec().hp.vocab_size);
  if (rows * vocab > output->logits_capacity || argmax > output->argmax_capacity ||
      (rows > 0 && output->logits == nullptr) || (argmax > 0 && output->argmax == nullptr)) {
    return Error(TM_INVALID_ARGUMENT, "the output buffers are too small for the step");
  }
  absl::StatusOr<devices::StepOutput> out = e->cpu->Forward(e->batch);
  if (!out.ok()) return FromStatus(out.status());
  // The CPU executor returns its own vectors: one more copy than a plugin
  // that writes straight into the daemon's buffers.
  const auto copy_start = std::chrono::steady_clock::now();
  if (!out->logits.empty()) {
    std::memcpy(output->logits, out->logits.data(), out->logits.size() * sizeof(float));
  }
  if (!out->argmax.empty()) {
    std::memcpy(output->argmax, out->argmax.data(), out->argmax.size() * sizeof(int32_t));
  }
  const auto end = std::chrono::steady_clock::now();
  last_copy_ns.store(static_cast<uint64_t>((end - copy_start).count()), std::memory_order_relaxed);
  // The whole call, as a plugin's device time covers delivering its outputs
  // (the OpenCL plugin's includes reading the logits back).
  output->device_time_ns = static_cast<uint64_t>((end - start).count());
  return nullptr;
}

constexpr tm_device_api kApi = {
    .struct_size = sizeof(tm_device_api),
    .abi_major = TM_DEVICE_ABI_MAJOR,
    .abi_minor = TM_DEVICE_ABI_MINOR,
    .kind = "cpu_abi",
    .plugin_version = "in-tree CPU executor, bench shim",
    .error_code = ErrorCode,
    .error_message = ErrorMessage,
    .error_destroy = ErrorDestroy,
    .plugin_create = PluginCreate,
    .plugin_destroy = PluginDestroy,
    .device_count = DeviceCount,
    .device_info = DeviceInfo,
    .device_sample = DeviceSample,
    .kv_region_alloc = KvRegionAlloc,
    .kv_region_free = KvRegionFree,
    .executor_create = ExecutorCreate,
    .executor_destroy = ExecutorDestroy,
    .executor_map_page = ExecutorMapPage,
    .executor_unmap_page = ExecutorUnmapPage,
    .executor_forward = ExecutorForward,
    .get_proc_address = GetProcAddress,
};

}  // namespace
}  // namespace tokenmill::bench::cpu_abi

extern "C" TM_DEVICE_EXPORT const tm_device_api* tokenmill_device_plugin(void) {
  return &tokenmill::bench::cpu_abi::kApi;
}
