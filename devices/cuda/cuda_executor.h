// CudaExecutor: devices::Executor on an NVIDIA GPU. A thin adapter from the
// Abseil-typed interface to the plain-C++ CUDA core (core/engine.h), which
// holds the weights, kernels, KV pages and CUDA graphs. Built only with nvcc
// present (TOKENMILL_HAVE_CUDA); callers reach it through
// CreateCudaExecutor().
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "devices/cuda/core/engine.h"
#include "devices/executor.h"
#include "devices/kv_arena.h"

namespace tokenmill::devices::cuda {

// The absl status for a core status (same code, same message).
absl::Status ToAbslStatus(const core::GpuStatus& status);

class CudaExecutor final : public Executor {
 public:
  // Uploads `spec`'s weights to GPU `ordinal` and allocates scratch (and the
  // KV cache unless options.kv_arena is set, which must then be a CUDA arena
  // of the same GPU). options.threads is ignored. kUnimplemented for a model
  // the CUDA kernels cannot run (Q4_0 weights, head_dim > 256),
  // kResourceExhausted when it does not fit in device memory, kUnavailable
  // without a usable GPU.
  static absl::StatusOr<std::unique_ptr<CudaExecutor>> Create(const ModelSpec& spec,
                                                              const ExecutorOptions& options,
                                                              int ordinal);

  absl::StatusOr<StepOutput> Forward(const Batch& batch) override;
  const KvLayout& kv_layout() const override { return engine_->kv_layout(); }
  uint32_t kv_blocks() const override { return engine_->kv_blocks(); }
  const ModelSpec& spec() const override { return spec_; }
  uint32_t kv_blocks_per_page() const override { return engine_->options().blocks_per_page; }
  absl::Status MapKvPage(uint32_t slot, uint32_t arena_page) override;
  absl::Status UnmapKvPage(uint32_t slot) override;

  core::Engine& engine() { return *engine_; }

 private:
  CudaExecutor(const ModelSpec& spec, KvArena* arena, std::unique_ptr<core::Engine> engine);

  ModelSpec spec_;
  KvPageSlots slots_;  // arena page in each slot (none without an arena)
  std::unique_ptr<core::Engine> engine_;
  std::vector<core::StepSequence> seqs_;  // reused per step
  std::vector<uint64_t> seq_ids_;         // reused per step (duplicate check)
  core::StepResult result_;
};

absl::StatusOr<ExecutorPtr> CreateCudaExecutor(const ModelSpec& spec,
                                               const ExecutorOptions& options, int ordinal);

// A KV arena in the memory of GPU `ordinal`, growing by one cudaMalloc per
// chunk up to `budget` (devices/kv_arena.h); a fraction budget reads
// cudaMemGetInfo. The GPU is probed at once: kUnavailable without a usable
// driver, kInvalidArgument for a missing ordinal or a budget under one page.
absl::StatusOr<KvArenaPtr> CreateCudaKvArena(int ordinal, KvArenaBudget budget,
                                             size_t page_bytes = kDefaultKvPageBytes,
                                             size_t chunk_bytes = kDefaultKvChunkBytes);
// The same with a byte budget: at most `bytes` rounded down to whole pages.
absl::StatusOr<KvArenaPtr> CreateCudaKvArena(int ordinal, size_t bytes,
                                             size_t page_bytes = kDefaultKvPageBytes);

}  // namespace tokenmill::devices::cuda
