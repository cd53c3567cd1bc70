// CpuExecutor: the Llama-family forward on the CPU kernels, one step over a
// batch that mixes prefill chunks and decodes. All T tokens of a step form one
// activation matrix, so each weight row is read once per step whatever the
// batch size. The KV cache is paged (KvLayout), in the executor's own buffer
// or in pages of the device's KvArena mapped into page slots; scratch is sized
// for max_batch_tokens at creation, so a step allocates nothing but its
// logits.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "devices/cpu/executor_attention.h"
#include "devices/cpu/executor_buffer.h"
#include "devices/cpu/executor_plan.h"
#include "devices/cpu/kernels.h"
#include "devices/cpu/worker_pool.h"
#include "devices/executor.h"
#include "devices/kv_arena.h"
#include "devices/model_spec.h"

namespace tokenmill::devices::cpu {

class CpuExecutor final : public Executor {
 public:
  // Checks spec and options (shapes, types, dims multiples of 32), detects
  // the ISA and allocates the KV cache (unless options.kv_arena is set) and
  // scratch. The executor keeps a copy of spec, whose `backing` keeps the
  // weights alive. kInvalidArgument or kUnimplemented for a model it cannot
  // run or an arena page smaller than one KV block, kResourceExhausted when
  // the KV cache or scratch cannot be allocated.
  static absl::StatusOr<std::unique_ptr<CpuExecutor>> Create(const ModelSpec& spec,
                                                             const ExecutorOptions& options);

  absl::StatusOr<StepOutput> Forward(const Batch& batch) override;
  const KvLayout& kv_layout() const override { return layout_; }
  uint32_t kv_blocks() const override { return kv_blocks_; }
  const ModelSpec& spec() const override { return spec_; }
  uint32_t kv_blocks_per_page() const override {
    return arena_ != nullptr ? pages_.blocks_per_page : 0;
  }
  absl::Status MapKvPage(uint32_t slot, uint32_t arena_page) override;
  absl::Status UnmapKvPage(uint32_t slot) override;

  int32_t threads() const { return pool_.threads(); }
  // (layer, expert) matmul sets run since creation: each is one read of an
  // expert's three matrices (benchmarks divide by steps for the bytes a
  // step reads). 0 without experts.
  uint64_t expert_runs() const { return expert_runs_; }
  Isa isa() const { return isa_; }

  // Test hooks: fill every scratch buffer, or the whole KV cache (every
  // mapped page's blocks, on an arena), with NaN so that a step reading
  // anything it did not write shows NaN in its logits.
  void PoisonScratchForTesting();
  void PoisonKvForTesting();
  // The executor's own KV cache bytes, for tests that check what a step
  // changed; empty on an arena (read the arena's pages instead).
  std::span<const uint8_t> kv_bytes_for_testing() const { return {kv_.data(), kv_.bytes()}; }

 private:
  // One weight matmul of a group that runs as a single parallel loop.
  struct MatMulTask {
    const TensorView* w = nullptr;
    const float* x = nullptr;  // activation rows, `cols` = w->cols() floats each
    float* y = nullptr;
    int64_t y_stride = 0;
    // Activation rows of this task (0: the group's), and the index of x's
    // first row among the rows PrepareRows prepared (an expert's share of
    // the gathered rows).
    int64_t rows = 0;
    int64_t first_row = 0;
  };

  // `options` as Create() checked them (kv_blocks rounded to whole pages).
  CpuExecutor(const ModelSpec& spec, const ExecutorOptions& options, size_t arena_page_bytes);
  absl::Status Allocate();

  // Prepares rows [begin, end) of x (x_cols wide) for the weights in
  // `consumers` that want quantized activations: once per scratch buffer,
  // with the union of the row parts (ActivationFormats) those weights read.
  void PrepareRows(std::span<const TensorView* const> consumers, const float* x, int64_t x_cols,
                   int64_t begin, int64_t end);
  // Runs the tasks over `rows` activation rows, splitting the weight rows of
  // all of them across the pool in one loop.
  void MatMulGroup(std::span<const MatMulTask> tasks, int64_t rows);

  void Embed(int64_t tokens);
  void RunLayer(int32_t layer, int64_t tokens);
  // The mixture-of-experts FFN of `layer` on the normed rows in h_, output
  // into h_: route each token to its top-k experts, gather the rows of each
  // expert together, run every used expert once over its rows, and add the
  // weighted outputs back per token.
  void RunExperts(int32_t layer, int64_t tokens);
  // Groups the tokens' expert choices by expert (expert_offset_, slot_token_,
  // token_slot_, slot_weight_) from the router logits.
  void RouteTokens(int64_t tokens);
  void ComputeLogits(float* logits);

  ModelSpec spec_;
  KvLayout layout_;
  uint32_t kv_blocks_ = 0;
  KvArena* arena_ = nullptr;  // not owned; null when kv_ holds the cache
  size_t arena_page_bytes_ = 0;
  KvPageTable pages_;  // where each block lives (one slot over kv_ without an arena)
  KvPageSlots slots_;  // arena page mapped in each slot (with an arena)
  int32_t max_batch_tokens_ = 0;
  Isa isa_ = Isa::kScalar;
  WorkerPool pool_;
  StepPlan plan_;

  AlignedBuffer kv_;  // own KV cache; empty on an arena
  AlignedBuffer inv_freq_, inv_freq_local_;
  // Activations, max_batch_tokens rows each.
  AlignedBuffer x_;     // residual stream, dim
  AlignedBuffer h_;     // normed input / matmul output, dim
  AlignedBuffer q_;     // heads x head_dim
  AlignedBuffer k_;     // kv_heads x head_dim
  AlignedBuffer v_;     // kv_heads x head_dim
  AlignedBuffer attn_;  // heads x head_dim
  AlignedBuffer gate_;  // ffn_dim
  AlignedBuffer up_;    // ffn_dim
  // Quantized activations (Q8_0 blocks) for Q8_0 and for Q4_0 weights.
  AlignedBuffer act_q8_0_;
  AlignedBuffer act_q4_0_;
  // Mixture of experts: each expert's 2-D views per layer (layer * n_experts
  // + e: gate, up, down), router logits (tokens x n_experts), rows gathered
  // by expert (max_batch_tokens x n_experts_used rows of dim) and the
  // experts' outputs there; per expert its first gathered row (n_experts + 1
  // entries, and a fill count); per (token, rank) the expert, its weight
  // and its gathered row; per gathered row its token.
  struct ExpertViews {
    TensorView gate, up, down;
  };
  std::vector<ExpertViews> expert_views_;
  std::vector<MatMulTask> expert_tasks_;
  std::vector<Activations> group_acts_;
  AlignedBuffer router_logits_, moe_x_, moe_out_;
  std::vector<int64_t> expert_offset_, expert_fill_;
  std::vector<int32_t> token_expert_;  // per (token, rank): the expert chosen
  std::vector<int64_t> slot_token_, token_slot_;
  std::vector<float> token_weight_;  // per (token, rank)
  uint64_t expert_runs_ = 0;
  // Per-thread attention scores, one block's worth each.
  AlignedBuffer scores_;
  size_t scores_stride_ = 0;  // floats per thread
};

// The CPU executor behind the Executor interface.
absl::StatusOr<ExecutorPtr> CreateCpuExecutor(const ModelSpec& spec,
                                              const ExecutorOptions& options);

}  // namespace tokenmill::devices::cpu
