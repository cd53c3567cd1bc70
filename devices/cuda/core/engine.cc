#include "devices/cuda/core/engine.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <map>
#include <string>

#include "devices/cuda/core/cuda_call.h"
#include "devices/cuda/core/engine_weights.h"
#include "devices/cuda/core/layer_kernels.h"
#include "devices/cuda/core/matmul.h"

namespace tokenmill::devices::cuda::core {
namespace {

// Logits rows computed per pass: 256 rows of a 128K vocabulary are 128 MiB of
// f32, enough for every decode bucket; prompt logprobs (kAll) take passes.
constexpr int64_t kLogitsRowsPerPass = 256;
// Largest decode batch captured as a graph (bucket sizes 1, 2, 4, ... this).
constexpr int64_t kLargestGraphBucket = 256;
// Block-address entries the plan holds at first; it doubles when a step
// needs more (and drops the captured graphs, which point at the old buffer).
constexpr size_t kInitialBlockEntries = 4096;
// Rows of Q8_0 weights dequantized per cuBLAS pass (elements of bf16 scratch).
constexpr size_t kDequantScratchElements = size_t{32} << 20;

// Positions of the int32 arrays in the plan buffer, each `capacity` long.
enum PlanArray { kIds = 0, kPos = 1, kTableStart = 2, kGather = 3, kPlanArrays = 4 };

int64_t NextPowerOfTwo(int64_t n) {
  int64_t p = 1;
  while (p < n) p *= 2;
  return p;
}

GpuStatus Invalid(const std::string& message) {
  return GpuStatus::Error(GpuCode::kInvalidArgument, message);
}

}  // namespace

struct Engine::Impl {
  ~Impl();

  GpuStatus Allocate(size_t bytes, const char* what, void** out);
  GpuStatus AllocateScratch();
  GpuStatus EnsureBlockEntries(size_t entries);
  void DropGraphs();

  // Checks the batch and writes the plan for it into the host buffers;
  // returns the step's token count, logits rows and block entries used.
  GpuStatus BuildPlan(const StepSequence* seqs, size_t n, int64_t* tokens, int64_t* rows,
                      size_t* entries);
  // A block one sequence writes in the step may be neither written nor read
  // by another (the CPU executor refuses the same; the prefix cache shares
  // only full blocks). Block ids are checked against kv_blocks first.
  GpuStatus CheckBlockSharing(const StepSequence* seqs, size_t n);
  void PadPlan(int64_t tokens, int64_t bucket, size_t* entries);
  GpuStatus UploadPlan(size_t entries);

  // Logits rows of this step whose floats go back (all, or of [first, first + n)).
  size_t CopiedRows() const { return CopiedRows(0, static_cast<int64_t>(row_copied.size())); }
  size_t CopiedRows(int64_t first, int64_t n) const;
  // Enqueues copies of the copied rows among rows [first, first + n) of the
  // step (the device logits buffer holds row `first` at index 0) to `dst`,
  // packed, one copy per run of consecutive copied rows.
  GpuStatus CopyLogitRows(int64_t first, int64_t n, float* dst);

  GpuStatus EnqueueLayers(int64_t tokens);
  GpuStatus EnqueueLogits(int64_t first_row, int64_t rows, bool argmax);
  GpuStatus RunGraph(int64_t bucket);
  // Everything of a step after its plan is uploaded, up to the copies back.
  GpuStatus EnqueueStep(bool graph, int64_t tokens, int64_t rows, int64_t bucket, bool copy_logits,
                        bool want_argmax, StepResult* result);

  EngineOptions options;
  ModelHyperparams hp;
  KvLayout layout;
  KvShape kv;
  int64_t q_dim = 0, kv_dim = 0, qkv_dim = 0;
  cudaStream_t stream = nullptr;
  DeviceWeights weights;
  std::unique_ptr<MatMulRunner> matmul;
  const float* inv_freq = nullptr;

  // Activations, max_batch_tokens rows each (final_norm and logits:
  // kLogitsRowsPerPass rows).
  float *x = nullptr, *h = nullptr, *qkv = nullptr, *attn = nullptr;
  float *gate_up = nullptr, *act = nullptr, *final_norm = nullptr, *logits = nullptr;
  // RoPE angles and KV store blocks of the step's tokens, filled once per
  // step (layer_kernels.h StepTables).
  StepTables step_tables;
  // Split-K attention records (layer_kernels.h AttentionScratch).
  float* attn_partials = nullptr;
  size_t attn_partial_floats = 0;
  int32_t* argmax_dev = nullptr;
  uint64_t* argmax_scratch = nullptr;  // LaunchArgmax's, 2 per logits row
  int32_t* argmax_host = nullptr;      // pinned
  // Logits rows copied back land here (staging_rows x vocab floats), or in
  // logits_overflow when a step copies more rows (StepResult::logits).
  float* logits_host = nullptr;  // pinned
  int64_t staging_rows = 0;
  std::vector<float> logits_overflow;
  uint64_t pinned_bytes = 0;
  std::vector<void*> scratch;  // device allocations besides weights and KV
  uint64_t scratch_bytes = 0;

  // KV: the engine's own region (no pages) or pages mapped into slots.
  void* kv_region = nullptr;
  void* trash_block = nullptr;  // padded graph rows write their KV here (in scratch)
  std::vector<uint8_t*> slot_base;
  uint32_t blocks_per_slot = 0;

  // The plan: kPlanArrays int32 arrays of `capacity`, then block addresses.
  int64_t capacity = 0;
  int32_t* plan_host = nullptr;     // pinned
  int32_t* plan_dev = nullptr;      // in scratch
  uint64_t* blocks_host = nullptr;  // pinned
  uint64_t* blocks_dev = nullptr;
  size_t block_entries = 0;
  // Per logits row of the current step: whether its floats are copied back
  // (kLast, kAll) or only its argmax (kArgmax).
  std::vector<uint8_t> row_copied;
  // Per block id: written by this step (CheckBlockSharing; all 0 between steps).
  std::vector<uint8_t> block_written;
  // Decode buckets seen once: a bucket is captured the second time it runs,
  // after an eager run has loaded its kernels and warmed cuBLAS.
  std::map<int64_t, bool> bucket_seen;

  std::map<int64_t, cudaGraphExec_t> graphs;  // by bucket
  std::map<int64_t, bool> graph_failed;
  EngineStats stats;
};

Engine::Impl::~Impl() {
  cudaSetDevice(options.device);
  DropGraphs();
  matmul.reset();
  for (void* p : scratch) cudaFree(p);
  cudaFree(kv_region);
  cudaFree(blocks_dev);
  cudaFreeHost(plan_host);
  cudaFreeHost(blocks_host);
  cudaFreeHost(argmax_host);
  cudaFreeHost(logits_host);
  if (stream != nullptr) cudaStreamDestroy(stream);
}

GpuStatus Engine::Impl::Allocate(size_t bytes, const char* what, void** out) {
  void* p = nullptr;
  const std::string call = "cudaMalloc(" + std::to_string(bytes) + " bytes for " + what + ")";
  if (GpuStatus s = CudaStatus(call.c_str(), cudaMalloc(&p, bytes)); !s.ok()) return s;
  scratch.push_back(p);
  scratch_bytes += bytes;
  *out = p;
  return GpuStatus::Ok();
}

void Engine::Impl::DropGraphs() {
  for (auto& [bucket, exec] : graphs) cudaGraphExecDestroy(exec);
  graphs.clear();
  graph_failed.clear();
}

GpuStatus Engine::Impl::AllocateScratch() {
  const size_t rows = static_cast<size_t>(capacity);
  const size_t logit_rows = static_cast<size_t>(std::min(capacity, kLogitsRowsPerPass));
  const size_t dim = static_cast<size_t>(hp.dim), ffn = static_cast<size_t>(hp.ffn_dim);
  // What the attention launcher would use at most for any step (only small
  // steps split): a few MB even for an 8B model, not splits x capacity rows.
  attn_partial_floats = AttentionScratchFloats(capacity, hp.n_heads, hp.n_kv_heads, hp.head_dim);
  struct {
    float** dst;
    size_t floats;
    const char* what;
  } buffers[] = {
      {&x, rows * dim, "residual stream"},
      {&h, rows * dim, "normed activations"},
      {&qkv, rows * static_cast<size_t>(qkv_dim), "q/k/v"},
      {&attn, rows * static_cast<size_t>(q_dim), "attention output"},
      {&gate_up, rows * 2 * ffn, "gate/up"},
      {&act, rows * ffn, "ffn activations"},
      {&final_norm, logit_rows * dim, "final norm"},
      {&logits, logit_rows * static_cast<size_t>(hp.vocab_size), "logits"},
      {&attn_partials, attn_partial_floats, "attention partials"},
  };
  for (auto& b : buffers) {
    void* p = nullptr;
    // No split scratch (no step would split, e.g. no SM count): null, which
    // the attention launcher takes as "never split".
    if (b.floats == 0) continue;
    if (GpuStatus s = Allocate(b.floats * sizeof(float), b.what, &p); !s.ok()) return s;
    *b.dst = static_cast<float*>(p);
  }
  void* p = nullptr;
  if (GpuStatus s =
          Allocate(rows * static_cast<size_t>(hp.head_dim / 2) * sizeof(float2), "rope table", &p);
      !s.ok()) {
    return s;
  }
  step_tables.rope = static_cast<float2*>(p);
  if (GpuStatus s = Allocate(rows * sizeof(uint64_t), "KV store blocks", &p); !s.ok()) return s;
  step_tables.kv_block = static_cast<uint64_t*>(p);
  if (GpuStatus s = Allocate(rows * sizeof(int32_t), "argmax", &p); !s.ok()) return s;
  argmax_dev = static_cast<int32_t*>(p);
  if (GpuStatus s = Allocate(logit_rows * 2 * sizeof(uint64_t), "argmax keys", &p); !s.ok()) {
    return s;
  }
  argmax_scratch = static_cast<uint64_t*>(p);
  if (GpuStatus s =
          Allocate(static_cast<size_t>(hp.head_dim / 2) * sizeof(float), "rope frequencies", &p);
      !s.ok()) {
    return s;
  }
  std::vector<float> freq(static_cast<size_t>(hp.head_dim / 2));
  RopeInvFrequencies(hp, nullptr, freq.data());
  TM_CUDA_RETURN_IF_ERROR(
      cudaMemcpy(p, freq.data(), freq.size() * sizeof(float), cudaMemcpyHostToDevice));
  inv_freq = static_cast<const float*>(p);
  if (GpuStatus s = Allocate(layout.BlockBytes(), "scratch KV block", &trash_block); !s.ok()) {
    return s;
  }
  const size_t plan_bytes = kPlanArrays * rows * sizeof(int32_t);
  if (GpuStatus s = Allocate(plan_bytes, "step plan", &p); !s.ok()) return s;
  plan_dev = static_cast<int32_t*>(p);
  TM_CUDA_RETURN_IF_ERROR(cudaMallocHost(reinterpret_cast<void**>(&plan_host), plan_bytes));
  std::memset(plan_host, 0, plan_bytes);
  TM_CUDA_RETURN_IF_ERROR(
      cudaMallocHost(reinterpret_cast<void**>(&argmax_host), rows * sizeof(int32_t)));
  // Pinned: the device-to-host copies run at full PCIe speed and stay
  // asynchronous, with no allocation per step. Every decode bucket fits.
  staging_rows = static_cast<int64_t>(logit_rows);
  const size_t staging_bytes = logit_rows * static_cast<size_t>(hp.vocab_size) * sizeof(float);
  const std::string call =
      "cudaMallocHost(" + std::to_string(staging_bytes) + " bytes for the logits staging)";
  if (GpuStatus s = CudaStatus(
          call.c_str(), cudaMallocHost(reinterpret_cast<void**>(&logits_host), staging_bytes));
      !s.ok()) {
    return s;
  }
  pinned_bytes = plan_bytes + rows * sizeof(int32_t) + staging_bytes;
  return EnsureBlockEntries(kInitialBlockEntries);
}

GpuStatus Engine::Impl::EnsureBlockEntries(size_t entries) {
  if (entries <= block_entries) return GpuStatus::Ok();
  size_t grown = std::max(block_entries, kInitialBlockEntries);
  while (grown < entries) grown *= 2;
  // Captured graphs read the old buffer's address.
  DropGraphs();
  cudaFree(blocks_dev);
  cudaFreeHost(blocks_host);
  blocks_dev = nullptr;
  blocks_host = nullptr;
  block_entries = 0;
  const std::string call = "cudaMalloc(" + std::to_string(grown * 8) + " bytes for block tables)";
  TM_CUDA_RETURN_IF_ERROR(cudaMallocHost(reinterpret_cast<void**>(&blocks_host), grown * 8));
  if (GpuStatus s =
          CudaStatus(call.c_str(), cudaMalloc(reinterpret_cast<void**>(&blocks_dev), grown * 8));
      !s.ok()) {
    return s;
  }
  block_entries = grown;
  return GpuStatus::Ok();
}

GpuStatus Engine::Impl::BuildPlan(const StepSequence* seqs, size_t n, int64_t* tokens_out,
                                  int64_t* rows_out, size_t* entries_out) {
  if (n == 0) return Invalid("empty batch");
  int64_t tokens = 0;
  size_t entries = 0;
  for (size_t i = 0; i < n; ++i) {
    const StepSequence& s = seqs[i];
    if (s.n_tokens < 1 || s.tokens == nullptr) {
      return Invalid("sequence " + std::to_string(i) + " has no tokens");
    }
    if (s.start_pos < 0) return Invalid("sequence " + std::to_string(i) + " starts before 0");
    const int64_t end = int64_t{s.start_pos} + s.n_tokens;
    if (end > hp.context_length) {
      return Invalid("sequence " + std::to_string(i) + " reaches position " +
                     std::to_string(end - 1) + ", past the context of " +
                     std::to_string(hp.context_length));
    }
    const int64_t needed = (end + layout.block_tokens - 1) / layout.block_tokens;
    if (s.n_blocks < needed || s.block_table == nullptr) {
      return Invalid("sequence " + std::to_string(i) + " needs " + std::to_string(needed) +
                     " KV blocks, its table has " + std::to_string(s.n_blocks));
    }
    tokens += s.n_tokens;
    entries += static_cast<size_t>(needed);
  }
  if (tokens > capacity) {
    return Invalid("step of " + std::to_string(tokens) + " tokens exceeds max_batch_tokens " +
                   std::to_string(capacity));
  }
  for (size_t i = 0; i < n; ++i) {
    const StepSequence& s = seqs[i];
    const int64_t needed =
        (int64_t{s.start_pos} + s.n_tokens + layout.block_tokens - 1) / layout.block_tokens;
    for (int64_t b = 0; b < needed; ++b) {
      if (s.block_table[b] >= options.kv_blocks) {
        return Invalid("sequence " + std::to_string(i) + " names KV block " +
                       std::to_string(s.block_table[b]) + ", past the block id space of " +
                       std::to_string(options.kv_blocks));
      }
    }
  }
  if (GpuStatus s = CheckBlockSharing(seqs, n); !s.ok()) return s;
  // +1: the scratch block padded graph rows use.
  if (GpuStatus s = EnsureBlockEntries(entries + 1); !s.ok()) return s;

  int32_t* ids = plan_host + kIds * capacity;
  int32_t* pos = plan_host + kPos * capacity;
  int32_t* table_start = plan_host + kTableStart * capacity;
  int32_t* gather = plan_host + kGather * capacity;
  int64_t t = 0, rows = 0;
  size_t entry = 0;
  row_copied.clear();
  for (size_t i = 0; i < n; ++i) {
    const StepSequence& s = seqs[i];
    const int64_t end = int64_t{s.start_pos} + s.n_tokens;
    const int64_t needed = (end + layout.block_tokens - 1) / layout.block_tokens;
    const size_t first = entry;
    for (int64_t b = 0; b < needed; ++b) {
      const uint32_t block = s.block_table[b];
      // Ids are below kv_blocks (checked above), so the slot exists.
      const uint32_t slot = block / blocks_per_slot;
      if (slot_base[slot] == nullptr) {
        return Invalid("sequence " + std::to_string(i) + " names KV block " +
                       std::to_string(block) + ", in a page slot with no page");
      }
      blocks_host[entry++] = reinterpret_cast<uint64_t>(slot_base[slot]) +
                             static_cast<uint64_t>(block % blocks_per_slot) * layout.BlockBytes();
    }
    for (int32_t j = 0; j < s.n_tokens; ++j, ++t) {
      const int32_t id = s.tokens[j];
      if (id < 0 || id >= hp.vocab_size) {
        return Invalid("token " + std::to_string(id) + " is outside the vocabulary of " +
                       std::to_string(hp.vocab_size));
      }
      ids[t] = id;
      pos[t] = s.start_pos + j;
      table_start[t] = static_cast<int32_t>(first);
      const bool last = j == s.n_tokens - 1;
      if (s.logits == LogitsMode::kAll ||
          (last && (s.logits == LogitsMode::kLast || s.logits == LogitsMode::kArgmax))) {
        gather[rows++] = static_cast<int32_t>(t);
        row_copied.push_back(s.logits != LogitsMode::kArgmax);
      }
    }
  }
  *tokens_out = tokens;
  *rows_out = rows;
  *entries_out = entry;
  return GpuStatus::Ok();
}

GpuStatus Engine::Impl::CheckBlockSharing(const StepSequence* seqs, size_t n) {
  const int32_t bt = layout.block_tokens;
  if (block_written.size() != options.kv_blocks) block_written.assign(options.kv_blocks, 0);
  std::string problem;
  size_t marked = 0;  // sequences whose written blocks are flagged
  for (; marked < n && problem.empty(); ++marked) {
    const StepSequence& s = seqs[marked];
    const int32_t end = s.start_pos + s.n_tokens;
    for (int32_t b = s.start_pos / bt; b <= (end - 1) / bt; ++b) {
      uint8_t& flag = block_written[s.block_table[b]];
      if (flag != 0) {
        problem = "sequence " + std::to_string(marked) + ": KV block " +
                  std::to_string(s.block_table[b]) + " is written twice in one step";
        break;
      }
      flag = 1;
    }
  }
  for (size_t i = 0; i < n && problem.empty(); ++i) {
    const StepSequence& s = seqs[i];
    for (int32_t b = 0; b < s.start_pos / bt; ++b) {
      if (block_written[s.block_table[b]] != 0) {
        problem = "sequence " + std::to_string(i) + ": reads KV block " +
                  std::to_string(s.block_table[b]) + " that this step writes";
        break;
      }
    }
  }
  // Clear every flag set above (also those of a partly flagged sequence).
  for (size_t i = 0; i < marked; ++i) {
    const StepSequence& s = seqs[i];
    const int32_t end = s.start_pos + s.n_tokens;
    for (int32_t b = s.start_pos / bt; b <= (end - 1) / bt; ++b)
      block_written[s.block_table[b]] = 0;
  }
  return problem.empty() ? GpuStatus::Ok() : Invalid(problem);
}

void Engine::Impl::PadPlan(int64_t tokens, int64_t bucket, size_t* entries) {
  const size_t trash = (*entries)++;
  blocks_host[trash] = reinterpret_cast<uint64_t>(trash_block);
  for (int64_t t = tokens; t < bucket; ++t) {
    plan_host[kIds * capacity + t] = 0;
    plan_host[kPos * capacity + t] = 0;
    plan_host[kTableStart * capacity + t] = static_cast<int32_t>(trash);
    plan_host[kGather * capacity + t] = static_cast<int32_t>(t);
  }
}

GpuStatus Engine::Impl::UploadPlan(size_t entries) {
  TM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(plan_dev, plan_host,
                                          kPlanArrays * static_cast<size_t>(capacity) * 4,
                                          cudaMemcpyHostToDevice, stream));
  TM_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(blocks_dev, blocks_host, entries * 8, cudaMemcpyHostToDevice, stream));
  return GpuStatus::Ok();
}

size_t Engine::Impl::CopiedRows(int64_t first, int64_t n) const {
  size_t copied = 0;
  for (int64_t r = first; r < first + n; ++r) copied += row_copied[static_cast<size_t>(r)];
  return copied;
}

GpuStatus Engine::Impl::CopyLogitRows(int64_t first, int64_t n, float* dst) {
  const size_t vocab = static_cast<size_t>(hp.vocab_size);
  int64_t r = 0;
  while (r < n) {
    if (!row_copied[static_cast<size_t>(first + r)]) {
      ++r;
      continue;
    }
    int64_t end = r + 1;
    while (end < n && row_copied[static_cast<size_t>(first + end)]) ++end;
    const size_t count = static_cast<size_t>(end - r) * vocab;
    TM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, logits + static_cast<size_t>(r) * vocab,
                                            count * sizeof(float), cudaMemcpyDeviceToHost, stream));
    dst += count;
    r = end;
  }
  return GpuStatus::Ok();
}

GpuStatus Engine::Impl::EnqueueLayers(int64_t tokens) {
  const StepTokens step{plan_dev + kIds * capacity, plan_dev + kPos * capacity,
                        plan_dev + kTableStart * capacity, blocks_dev};
  const int64_t dim = hp.dim, ffn = hp.ffn_dim;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hp.head_dim));
  const bool halves = hp.rope_style == RopeStyle::kHalves;
  LaunchEmbed(weights.embedding, step.ids, tokens, x, stream);
  LaunchStepTables(inv_freq, hp.head_dim, tokens, kv, step, step_tables, stream);
  for (int32_t l = 0; l < hp.n_layers; ++l) {
    const DeviceLayer& w = weights.layers[static_cast<size_t>(l)];
    // The previous layer's FFN output (in h) joins the residual here.
    LaunchAddRmsNorm(x, l == 0 ? nullptr : h, w.attn_norm, nullptr, tokens, dim, hp.rms_norm_eps, h,
                     stream);
    if (GpuStatus s = matmul->MatMul(w.wqkv, h, dim, tokens, qkv, qkv_dim); !s.ok()) return s;
    LaunchBiasRopeStoreKv(qkv, qkv_dim, tokens, hp.n_heads, w.bq, w.bk, w.bv, halves, kv, l, step,
                          step_tables, stream);
    LaunchPagedAttention(qkv, qkv_dim, tokens, hp.n_heads, kv, l, step, scale, attn, stream,
                         AttentionScratch{attn_partials, attn_partial_floats});
    if (GpuStatus s = matmul->MatMul(w.wo, attn, q_dim, tokens, h, dim); !s.ok()) return s;
    LaunchAddRmsNorm(x, h, w.ffn_norm, nullptr, tokens, dim, hp.rms_norm_eps, h, stream);
    if (GpuStatus s = matmul->MatMul(w.w_gate_up, h, dim, tokens, gate_up, 2 * ffn); !s.ok()) {
      return s;
    }
    LaunchSiluMul(gate_up, tokens, ffn, act, stream);
    if (GpuStatus s = matmul->MatMul(w.w_down, act, ffn, tokens, h, dim); !s.ok()) return s;
  }
  return CudaStatus("layer kernel launch", cudaGetLastError());
}

GpuStatus Engine::Impl::EnqueueLogits(int64_t first_row, int64_t rows, bool argmax) {
  // The last FFN output joins the residual only for the rows that want
  // logits; each row is a distinct token, so no token is added twice.
  LaunchAddRmsNorm(x, h, weights.output_norm, plan_dev + kGather * capacity + first_row, rows,
                   hp.dim, hp.rms_norm_eps, final_norm, stream);
  if (GpuStatus s = matmul->MatMul(weights.output, final_norm, hp.dim, rows, logits, hp.vocab_size);
      !s.ok()) {
    return s;
  }
  if (argmax) {
    LaunchArgmax(logits, rows, hp.vocab_size, argmax_dev + first_row, argmax_scratch, stream);
  }
  return CudaStatus("logits kernel launch", cudaGetLastError());
}

GpuStatus Engine::Impl::RunGraph(int64_t bucket) {
  auto it = graphs.find(bucket);
  if (it == graphs.end()) {
    cudaGraph_t graph = nullptr;
    TM_CUDA_RETURN_IF_ERROR(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    GpuStatus s = EnqueueLayers(bucket);
    if (s.ok()) s = EnqueueLogits(0, bucket, /*argmax=*/true);
    const cudaError_t end = cudaStreamEndCapture(stream, &graph);
    if (s.ok()) s = CudaStatus("cudaStreamEndCapture", end);
    cudaGraphExec_t exec = nullptr;
    if (s.ok()) s = CudaStatus("cudaGraphInstantiate", cudaGraphInstantiate(&exec, graph, 0));
    if (graph != nullptr) cudaGraphDestroy(graph);
    if (!s.ok()) {
      cudaGetLastError();
      return s;
    }
    it = graphs.emplace(bucket, exec).first;
  }
  TM_CUDA_RETURN_IF_ERROR(cudaGraphLaunch(it->second, stream));
  return GpuStatus::Ok();
}

Engine::Engine(std::unique_ptr<Impl> impl)
    : impl_(std::move(impl)), hp_(impl_->hp), layout_(impl_->layout), options_(impl_->options) {}

Engine::~Engine() = default;

namespace {

GpuStatus CheckOptions(const EngineOptions& o) {
  if (o.block_tokens < 1) return Invalid("block_tokens must be at least 1");
  if (o.kv_blocks < 1) return Invalid("kv_blocks must be at least 1");
  if (o.max_batch_tokens < 1) return Invalid("max_batch_tokens must be at least 1");
  if (o.blocks_per_page > 0 && o.kv_blocks % o.blocks_per_page != 0) {
    return Invalid("kv_blocks (" + std::to_string(o.kv_blocks) +
                   ") must be a whole number of pages of " + std::to_string(o.blocks_per_page) +
                   " blocks");
  }
  return GpuStatus::Ok();
}

// Everything Create and CreateSynthetic share once the weights are on the
// device: scratch, KV, the matmul runner.
GpuStatus Finish(std::unique_ptr<Engine::Impl>& impl) {
  Engine::Impl& e = *impl;
  const ModelHyperparams& hp = e.hp;
  e.q_dim = int64_t{hp.n_heads} * hp.head_dim;
  e.kv_dim = int64_t{hp.n_kv_heads} * hp.head_dim;
  e.qkv_dim = e.q_dim + 2 * e.kv_dim;
  e.capacity = std::max<int64_t>(e.options.max_batch_tokens, 1);
  e.kv.block_tokens = e.layout.block_tokens;
  e.kv.n_kv_heads = e.layout.n_kv_heads;
  e.kv.head_dim = e.layout.head_dim;
  e.kv.f16 = e.layout.type == KvType::kF16;
  if (GpuStatus s = e.AllocateScratch(); !s.ok()) return s;
  const int64_t widest = std::max({int64_t{hp.dim}, e.q_dim, int64_t{hp.ffn_dim}});
  const size_t dequant = e.weights.any_q8_0
                             ? std::min(kDequantScratchElements,
                                        static_cast<size_t>(e.weights.largest_matrix_elements))
                             : 0;
  if (GpuStatus s = MatMulRunner::Create(e.stream, e.capacity, widest, dequant, &e.matmul);
      !s.ok()) {
    return s;
  }
  if (e.options.blocks_per_page == 0) {
    const size_t bytes = static_cast<size_t>(e.options.kv_blocks) * e.layout.BlockBytes();
    const std::string call = "cudaMalloc(" + std::to_string(bytes) + " bytes for " +
                             std::to_string(e.options.kv_blocks) + " KV blocks)";
    if (GpuStatus s = CudaStatus(call.c_str(), cudaMalloc(&e.kv_region, bytes)); !s.ok()) return s;
    e.blocks_per_slot = e.options.kv_blocks;
    e.slot_base.assign(1, static_cast<uint8_t*>(e.kv_region));
  } else {
    e.blocks_per_slot = e.options.blocks_per_page;
    e.slot_base.assign(e.options.kv_blocks / e.options.blocks_per_page, nullptr);
  }
  return GpuStatus::Ok();
}

GpuStatus Start(const ModelHyperparams& hp, const EngineOptions& options,
                std::unique_ptr<Engine::Impl>* out) {
  if (GpuStatus s = CheckOptions(options); !s.ok()) return s;
  TM_CUDA_RETURN_IF_ERROR(cudaSetDevice(options.device));
  auto impl = std::make_unique<Engine::Impl>();
  impl->options = options;
  impl->hp = hp;
  ModelSpec shape;
  shape.hp = hp;
  impl->layout = KvLayoutFor(shape, options.block_tokens, options.kv_type);
  TM_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&impl->stream, cudaStreamNonBlocking));
  *out = std::move(impl);
  return GpuStatus::Ok();
}

}  // namespace

GpuStatus Engine::Create(const ModelSpec& spec, const EngineOptions& options,
                         std::unique_ptr<Engine>* out) {
  if (GpuStatus s = CheckSpecForCuda(spec); !s.ok()) return s;
  std::unique_ptr<Impl> impl;
  if (GpuStatus s = Start(spec.hp, options, &impl); !s.ok()) return s;
  if (GpuStatus s = UploadWeights(spec, &impl->weights); !s.ok()) return s;
  if (!spec.rope_freq_factors.empty()) {
    // GGUF llama 3 files carry the frequency divisors as a tensor.
    std::vector<float> freq(static_cast<size_t>(spec.hp.head_dim / 2));
    RopeInvFrequencies(spec.hp, static_cast<const float*>(spec.rope_freq_factors.data),
                       freq.data());
    if (GpuStatus s = Finish(impl); !s.ok()) return s;
    TM_CUDA_RETURN_IF_ERROR(cudaMemcpy(const_cast<float*>(impl->inv_freq), freq.data(),
                                       freq.size() * sizeof(float), cudaMemcpyHostToDevice));
  } else if (GpuStatus s = Finish(impl); !s.ok()) {
    return s;
  }
  // Pageable cudaMemcpy may return before its DMA lands, and the engine's
  // stream is not ordered after the legacy stream: wait for the uploads.
  TM_CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());
  out->reset(new Engine(std::move(impl)));
  return GpuStatus::Ok();
}

GpuStatus Engine::CreateSynthetic(const ModelHyperparams& hp, WeightType type, uint64_t seed,
                                  const EngineOptions& options, std::unique_ptr<Engine>* out) {
  ModelSpec shape;
  shape.hp = hp;
  if (std::string problem = HyperparamsProblem(hp); !problem.empty()) return Invalid(problem);
  if (hp.head_dim > 256 || hp.head_dim % 8 != 0) {
    return GpuStatus::Error(
        GpuCode::kUnimplemented,
        "head_dim " + std::to_string(hp.head_dim) +
            ": the CUDA attention takes head dims that are multiples of 8 up to 256");
  }
  std::unique_ptr<Impl> impl;
  if (GpuStatus s = Start(hp, options, &impl); !s.ok()) return s;
  if (GpuStatus s = SynthesizeWeights(hp, type, seed, impl->stream, &impl->weights); !s.ok()) {
    return s;
  }
  if (GpuStatus s = Finish(impl); !s.ok()) return s;
  TM_CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());
  out->reset(new Engine(std::move(impl)));
  return GpuStatus::Ok();
}

GpuStatus Engine::Step(const StepSequence* seqs, size_t n_seqs, bool copy_logits, bool want_argmax,
                       StepResult* result) {
  Impl& e = *impl_;
  const auto start = std::chrono::steady_clock::now();
  TM_CUDA_RETURN_IF_ERROR(cudaSetDevice(e.options.device));
  int64_t tokens = 0, rows = 0;
  size_t entries = 0;
  if (GpuStatus s = e.BuildPlan(seqs, n_seqs, &tokens, &rows, &entries); !s.ok()) return s;
  result->logits = {};
  result->argmax.clear();
  result->graph = false;

  // Decode-only steps whose every sequence wants its row replay a graph of
  // the next bucket size (captured the second time the bucket runs); anything
  // else runs eagerly.
  const int64_t largest_bucket = std::min(kLargestGraphBucket, e.capacity);
  const int64_t bucket = NextPowerOfTwo(tokens);
  bool graph = e.options.cuda_graphs && rows == tokens && tokens == static_cast<int64_t>(n_seqs) &&
               bucket <= largest_bucket && !e.graph_failed[bucket];
  if (graph && !e.bucket_seen[bucket]) {
    e.bucket_seen[bucket] = true;
    graph = false;
  }
  if (graph) e.PadPlan(tokens, bucket, &entries);
  GpuStatus s = e.UploadPlan(entries);
  if (s.ok()) s = e.EnqueueStep(graph, tokens, rows, bucket, copy_logits, want_argmax, result);
  if (s.ok()) s = CudaStatus("cudaStreamSynchronize", cudaStreamSynchronize(e.stream));
  if (!s.ok()) {
    // Work already queued must finish before the next step rewrites the
    // pinned plan buffers it may still be reading.
    cudaStreamSynchronize(e.stream);
    cudaGetLastError();
    result->logits = {};
    return s;
  }
  if (want_argmax) result->argmax.assign(e.argmax_host, e.argmax_host + rows);
  result->device_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  return GpuStatus::Ok();
}

GpuStatus Engine::Impl::EnqueueStep(bool graph, int64_t tokens, int64_t rows, int64_t bucket,
                                    bool copy_logits, bool want_argmax, StepResult* result) {
  const size_t vocab = static_cast<size_t>(hp.vocab_size);
  if (graph) {
    GpuStatus s = RunGraph(bucket);
    if (!s.ok() && s.code == GpuCode::kUnavailable) return s;
    if (!s.ok()) {
      // A capture or instantiation the driver or cuBLAS refused: this bucket
      // runs eagerly from now on rather than fail its steps.
      graph_failed[bucket] = true;
      graph = false;
    }
  }
  // Copied rows go to the pinned staging buffer when they fit (always for a
  // graph: buckets <= staging_rows), else to the overflow vector.
  const size_t copied_rows = copy_logits ? CopiedRows() : 0;
  float* copied = logits_host;
  if (copied_rows > static_cast<size_t>(staging_rows)) {
    logits_overflow.resize(copied_rows * vocab);
    copied = logits_overflow.data();
  }
  result->logits = std::span<const float>(copied, copied_rows * vocab);
  if (graph) {
    ++stats.graph_steps;
    result->graph = true;
    if (copy_logits) {
      if (GpuStatus s = CopyLogitRows(0, rows, copied); !s.ok()) return s;
    }
  } else {
    ++stats.eager_steps;
    if (GpuStatus s = EnqueueLayers(tokens); !s.ok()) return s;
    for (int64_t first = 0; first < rows; first += kLogitsRowsPerPass) {
      const int64_t n = std::min(kLogitsRowsPerPass, rows - first);
      if (GpuStatus s = EnqueueLogits(first, n, want_argmax); !s.ok()) return s;
      if (copy_logits) {
        if (GpuStatus s = CopyLogitRows(first, n, copied); !s.ok()) return s;
        copied += CopiedRows(first, n) * vocab;
      }
    }
  }
  if (want_argmax && rows > 0) {
    TM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(argmax_host, argmax_dev,
                                            static_cast<size_t>(rows) * sizeof(int32_t),
                                            cudaMemcpyDeviceToHost, stream));
  }
  return GpuStatus::Ok();
}

GpuStatus Engine::MapPage(uint32_t slot, void* page) {
  Impl& e = *impl_;
  if (e.options.blocks_per_page == 0) return Invalid("the engine owns its KV memory: no pages");
  if (slot >= e.slot_base.size()) {
    return Invalid("KV page slot " + std::to_string(slot) + " past the " +
                   std::to_string(e.slot_base.size()) + " slots");
  }
  if (e.slot_base[slot] != nullptr) {
    return Invalid("KV page slot " + std::to_string(slot) + " already holds a page");
  }
  if (page == nullptr) return Invalid("null KV page");
  // Kernels would fault on host memory: only device (or managed) memory.
  cudaPointerAttributes attributes{};
  if (cudaPointerGetAttributes(&attributes, page) != cudaSuccess ||
      (attributes.type != cudaMemoryTypeDevice && attributes.type != cudaMemoryTypeManaged)) {
    cudaGetLastError();
    return Invalid("KV page for slot " + std::to_string(slot) + " is not GPU memory");
  }
  e.slot_base[slot] = static_cast<uint8_t*>(page);
  return GpuStatus::Ok();
}

GpuStatus Engine::UnmapPage(uint32_t slot) {
  Impl& e = *impl_;
  if (e.options.blocks_per_page == 0 || slot >= e.slot_base.size() ||
      e.slot_base[slot] == nullptr) {
    return Invalid("KV page slot " + std::to_string(slot) + " has no page");
  }
  e.slot_base[slot] = nullptr;
  return GpuStatus::Ok();
}

GpuStatus Engine::PoisonScratchForTesting() {
  Impl& e = *impl_;
  TM_CUDA_RETURN_IF_ERROR(cudaSetDevice(e.options.device));
  const size_t rows = static_cast<size_t>(e.capacity);
  const size_t logit_rows = static_cast<size_t>(std::min(e.capacity, kLogitsRowsPerPass));
  const size_t dim = static_cast<size_t>(hp_.dim), ffn = static_cast<size_t>(hp_.ffn_dim);
  const struct {
    void* p;
    size_t bytes;
  } buffers[] = {{e.x, rows * dim * 4},
                 {e.h, rows * dim * 4},
                 {e.qkv, rows * static_cast<size_t>(e.qkv_dim) * 4},
                 {e.attn, rows * static_cast<size_t>(e.q_dim) * 4},
                 {e.gate_up, rows * 2 * ffn * 4},
                 {e.act, rows * ffn * 4},
                 {e.final_norm, logit_rows * dim * 4},
                 {e.logits, logit_rows * static_cast<size_t>(hp_.vocab_size) * 4},
                 {e.argmax_dev, rows * 4},
                 {e.argmax_scratch, logit_rows * 16},
                 {e.step_tables.rope, rows * static_cast<size_t>(hp_.head_dim / 2) * 8},
                 {e.step_tables.kv_block, rows * 8},
                 {e.attn_partials, e.attn_partial_floats * 4}};
  for (const auto& b : buffers) LaunchFillBytes(b.p, 0xFF, b.bytes, e.stream);
  TM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  TM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(e.stream));
  return GpuStatus::Ok();
}

GpuStatus Engine::PoisonKvForTesting() {
  Impl& e = *impl_;
  TM_CUDA_RETURN_IF_ERROR(cudaSetDevice(e.options.device));
  const size_t slot_bytes = static_cast<size_t>(e.blocks_per_slot) * layout_.BlockBytes();
  for (uint8_t* base : e.slot_base) {
    if (base != nullptr) LaunchFillBytes(base, 0xFF, slot_bytes, e.stream);
  }
  LaunchFillBytes(e.trash_block, 0xFF, layout_.BlockBytes(), e.stream);
  TM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  TM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(e.stream));
  return GpuStatus::Ok();
}

void Engine::SetMatMulPathForTesting(int path) {
  impl_->matmul->set_path_for_testing(path == 1   ? MatMulRunner::Path::kGemv
                                      : path == 2 ? MatMulRunner::Path::kGemm
                                                  : MatMulRunner::Path::kAuto);
  // Graphs captured under another path would keep running it.
  impl_->DropGraphs();
}

EngineStats Engine::Stats() const {
  EngineStats s = impl_->stats;
  s.weight_bytes = impl_->weights.bytes;
  s.scratch_bytes = impl_->scratch_bytes + impl_->block_entries * 8;
  s.pinned_bytes = impl_->pinned_bytes + impl_->block_entries * 8;
  s.kv_bytes = impl_->kv_region != nullptr
                   ? static_cast<uint64_t>(options_.kv_blocks) * layout_.BlockBytes()
                   : 0;
  s.graphs = static_cast<uint32_t>(impl_->graphs.size());
  return s;
}

uint64_t Engine::WeightBytesPerToken() const { return impl_->weights.bytes_per_token; }

GpuStatus DeviceMemory(int device, size_t* total, size_t* free) {
  TM_CUDA_RETURN_IF_ERROR(cudaSetDevice(device));
  TM_CUDA_RETURN_IF_ERROR(cudaMemGetInfo(free, total));
  return GpuStatus::Ok();
}

GpuStatus AllocateDeviceRegion(int device, size_t bytes, void** out) {
  TM_CUDA_RETURN_IF_ERROR(cudaSetDevice(device));
  const std::string call = "cudaMalloc(" + std::to_string(bytes) + " bytes for the KV arena)";
  return CudaStatus(call.c_str(), cudaMalloc(out, bytes));
}

void FreeDeviceRegion(void* region) { cudaFree(region); }

}  // namespace tokenmill::devices::cuda::core
