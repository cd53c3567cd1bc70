// Engine: the Llama-family forward of one model on one GPU, in plain C++ over
// the CUDA kernels (no Abseil), so the GPU test target builds with the CUDA
// toolkit alone. devices/cuda/cuda_executor.h adapts it to devices::Executor.
//
// Weights are uploaded once (F32, F16, BF16 as they are; Q8_0 split into
// aligned quants and scales; wq/wk/wv and w_gate/w_up fused into one matrix
// each so a layer runs two wide matmuls instead of five). KV blocks live in
// pages: the engine owns one region of kv_blocks blocks, or the caller maps
// pages of a device KV arena into page slots (block b in slot b /
// blocks_per_page, like the CPU executor). A step is one batch of sequences
// mixing prefill chunks and decodes; decode-only steps run as a CUDA graph
// captured per batch-size bucket (1, 2, 4, ... 256, at most max_batch_tokens)
// the second time the bucket runs (the first runs eagerly, loading kernels),
// padded rows writing their KV into a scratch block of the engine's own.
//
// One thread at a time (the instance's engine thread); the engine owns its
// stream, cuBLAS handle, graphs and every device buffer, and frees them on
// destruction.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "devices/cuda/core/device_matrix.h"
#include "devices/cuda/core/status.h"
#include "devices/kv_layout.h"
#include "devices/model_spec.h"

namespace tokenmill::devices::cuda::core {

struct EngineOptions {
  int device = 0;             // CUDA ordinal
  int32_t block_tokens = 16;  // positions per KV block
  KvType kv_type = KvType::kF16;
  // KV block id space. With blocks_per_page > 0 a multiple of it (slots =
  // kv_blocks / blocks_per_page, pages mapped with MapPage); with 0 the engine
  // allocates all kv_blocks blocks itself.
  uint32_t kv_blocks = 0;
  uint32_t blocks_per_page = 0;
  int32_t max_batch_tokens = 2048;  // most tokens in one step (scratch sizing)
  bool cuda_graphs = true;          // capture decode-only steps per bucket
};

enum class LogitsMode : int32_t {
  kNone,  // no logits (a prefill chunk that is not the prompt's last)
  kLast,  // the last token's row
  kAll,   // every token's row
  // The last token's row is computed but never copied back: only its argmax
  // (StepResult::argmax) leaves the device.
  kArgmax,
};

// One sequence's share of a step (devices::SequenceStep without Abseil).
// Pointers are host memory the caller keeps until Step returns.
struct StepSequence {
  const int32_t* tokens = nullptr;
  int32_t n_tokens = 0;  // >= 1
  int32_t start_pos = 0;
  // Block ids covering positions [0, start_pos + n_tokens).
  const uint32_t* block_table = nullptr;
  int32_t n_blocks = 0;
  LogitsMode logits = LogitsMode::kLast;
};

struct StepResult {
  // Rows of vocab floats in sequence order (kLast: one, kAll: n_tokens,
  // kNone and kArgmax: none), only when Step was asked to copy them. A view
  // of the engine's pinned staging buffer (allocated once, min(256,
  // max_batch_tokens) rows; the device copies into it directly), or of an
  // engine-owned host vector for a step that copies more rows (kAll over a
  // long prompt). Valid until the next Step or the engine's destruction.
  std::span<const float> logits;
  // The argmax of every computed row (kLast, kAll and kArgmax rows, in
  // sequence order), computed on the device, only when asked: greedy decoding
  // needs 4 bytes per row back, not vocab x 4.
  std::vector<int32_t> argmax;
  double device_ms = 0.0;  // wall time of the step (host enqueue to sync)
  bool graph = false;      // ran as a captured CUDA graph
};

struct EngineStats {
  uint64_t weight_bytes = 0;   // device memory of the uploaded weights
  uint64_t scratch_bytes = 0;  // activations, plan buffers, cuBLAS workspace
  uint64_t pinned_bytes = 0;   // pinned host memory (plan, logits staging)
  uint64_t kv_bytes = 0;       // the engine's own KV region (0 with pages)
  uint32_t graphs = 0;         // captured decode graphs
  uint64_t graph_steps = 0;    // steps that replayed a graph
  uint64_t eager_steps = 0;
};

class Engine {
 public:
  // Checks the model (F32/F16/BF16/Q8_0 matrices; q/k/v and gate/up each of
  // one type; head_dim a multiple of 8 and <= 256; columns multiples of 32) and options,
  // selects the device, uploads the weights and allocates scratch (and the
  // KV region without pages). kUnimplemented for a model it cannot run,
  // kInvalidArgument for bad options, kResourceExhausted when memory runs out
  // (everything allocated so far is freed), kUnavailable without a GPU.
  static GpuStatus Create(const ModelSpec& spec, const EngineOptions& options,
                          std::unique_ptr<Engine>* out);

  // A model of `hp`'s shape whose matrices (all of `type`) are filled on the
  // device with a pseudo-random pattern from `seed` (norm weights 1, no
  // biases): benchmarks of 8B shapes without a file or host copies.
  static GpuStatus CreateSynthetic(const ModelHyperparams& hp, WeightType type, uint64_t seed,
                                   const EngineOptions& options, std::unique_ptr<Engine>* out);

  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Runs one step. kInvalidArgument (nothing changed) when the batch is
  // empty, a sequence has no tokens, a token is outside the vocabulary, a
  // position passes the context, the block table is too short or names a
  // block past kv_blocks or in an unmapped slot, or the step has more than
  // max_batch_tokens tokens. copy_logits / want_argmax choose what comes
  // back in `result` (both may be set).
  GpuStatus Step(const StepSequence* seqs, size_t n_seqs, bool copy_logits, bool want_argmax,
                 StepResult* result);

  // Page slots (blocks_per_page > 0): puts the device page at `page` (at least
  // blocks_per_page x block bytes, owned by the caller, kept until unmapped)
  // behind `slot`. kInvalidArgument without pages, for a slot out of range
  // or already mapped, or a null page. Between steps only.
  GpuStatus MapPage(uint32_t slot, void* page);
  GpuStatus UnmapPage(uint32_t slot);

  // Tests: fill every activation buffer / every KV block the engine can reach
  // (own region or mapped pages) with 0xFF bytes (NaN), so that a step
  // reading something it did not write shows NaN in its logits.
  GpuStatus PoisonScratchForTesting();
  GpuStatus PoisonKvForTesting();
  // Tests: forces the matmul path (see MatMulRunner::Path): 0 auto, 1 GEMV
  // (at most kMaxGemvRows tokens per step), 2 cuBLAS.
  void SetMatMulPathForTesting(int path);

  const ModelHyperparams& hp() const { return hp_; }
  const KvLayout& kv_layout() const { return layout_; }
  uint32_t kv_blocks() const { return options_.kv_blocks; }
  const EngineOptions& options() const { return options_; }
  EngineStats Stats() const;
  // Bytes a decode step reads per token at batch 1: every matrix once plus
  // one embedding row and the norms (the bandwidth bound's numerator; add the
  // KV read for the context).
  uint64_t WeightBytesPerToken() const;

  // The engine's state, defined in engine.cc (public only so that file's
  // helpers can name it).
  struct Impl;

 private:
  explicit Engine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  ModelHyperparams hp_;
  KvLayout layout_;
  EngineOptions options_;
};

// Device memory (total, free) of GPU `device`, for placement decisions.
GpuStatus DeviceMemory(int device, size_t* total, size_t* free);

// Allocates / frees device memory for a KV arena (one region cut into pages
// by the adapter). kResourceExhausted when it does not fit.
GpuStatus AllocateDeviceRegion(int device, size_t bytes, void** out);
void FreeDeviceRegion(void* region);

}  // namespace tokenmill::devices::cuda::core
