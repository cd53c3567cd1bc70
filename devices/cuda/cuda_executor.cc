#include "devices/cuda/cuda_executor.h"

#include <algorithm>
#include <chrono>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"

namespace tokenmill::devices::cuda {
namespace {

std::optional<core::LogitsMode> ModeOf(LogitsWanted wanted) {
  switch (wanted) {
    case LogitsWanted::kNone:
      return core::LogitsMode::kNone;
    case LogitsWanted::kLast:
      return core::LogitsMode::kLast;
    case LogitsWanted::kAll:
      return core::LogitsMode::kAll;
    case LogitsWanted::kArgmax:
      return core::LogitsMode::kArgmax;
  }
  return std::nullopt;
}

}  // namespace

absl::Status ToAbslStatus(const core::GpuStatus& status) {
  switch (status.code) {
    case core::GpuCode::kOk:
      return absl::OkStatus();
    case core::GpuCode::kInvalidArgument:
      return absl::InvalidArgumentError(status.message);
    case core::GpuCode::kUnimplemented:
      return absl::UnimplementedError(status.message);
    case core::GpuCode::kResourceExhausted:
      return absl::ResourceExhaustedError(status.message);
    case core::GpuCode::kUnavailable:
      return absl::UnavailableError(status.message);
    case core::GpuCode::kInternal:
      return absl::InternalError(status.message);
  }
  return absl::InternalError(status.message);
}

absl::StatusOr<std::unique_ptr<CudaExecutor>> CudaExecutor::Create(const ModelSpec& spec,
                                                                   const ExecutorOptions& options,
                                                                   int ordinal) {
  if (options.block_tokens < 1 || options.kv_blocks < 1 || options.max_batch_tokens < 1) {
    return absl::InvalidArgumentError(
        "block_tokens, kv_blocks and max_batch_tokens must each be at least 1");
  }
  if (options.kv_type != KvType::kF16 && options.kv_type != KvType::kF32) {
    return absl::InvalidArgumentError("unknown KV type");
  }
  core::EngineOptions eo;
  eo.device = ordinal;
  eo.block_tokens = options.block_tokens;
  eo.kv_type = options.kv_type;
  eo.kv_blocks = options.kv_blocks;
  eo.max_batch_tokens = options.max_batch_tokens;
  if (options.kv_arena != nullptr) {
    absl::StatusOr<KvPaging> paging = KvPagingFor(
        *options.kv_arena, KvLayoutFor(spec, options.block_tokens, options.kv_type).BlockBytes(),
        options.kv_blocks);
    if (!paging.ok()) return paging.status();
    eo.kv_blocks = paging->kv_blocks;
    eo.blocks_per_page = paging->blocks_per_page;
  }
  std::unique_ptr<core::Engine> engine;
  if (core::GpuStatus s = core::Engine::Create(spec, eo, &engine); !s.ok()) {
    return ToAbslStatus(s);
  }
  return std::unique_ptr<CudaExecutor>(new CudaExecutor(spec, options.kv_arena, std::move(engine)));
}

CudaExecutor::CudaExecutor(const ModelSpec& spec, KvArena* arena,
                           std::unique_ptr<core::Engine> engine)
    : spec_(spec), engine_(std::move(engine)) {
  const uint32_t per_page = engine_->options().blocks_per_page;
  if (per_page > 0) slots_ = KvPageSlots(arena, engine_->kv_blocks() / per_page);
}

absl::StatusOr<StepOutput> CudaExecutor::Forward(const Batch& batch) {
  const auto start = std::chrono::steady_clock::now();
  seqs_.clear();
  seq_ids_.clear();
  bool copy_logits = false, want_argmax = false;
  for (const SequenceStep& s : batch.seqs) {
    copy_logits |= s.logits == LogitsWanted::kLast || s.logits == LogitsWanted::kAll;
    want_argmax |= s.logits == LogitsWanted::kArgmax;
    core::StepSequence c;
    c.tokens = s.tokens.data();
    c.n_tokens = static_cast<int32_t>(std::min<size_t>(s.tokens.size(), INT32_MAX));
    c.start_pos = s.start_pos;
    c.block_table = s.block_table.data();
    c.n_blocks = static_cast<int32_t>(std::min<size_t>(s.block_table.size(), INT32_MAX));
    const std::optional<core::LogitsMode> mode = ModeOf(s.logits);
    if (!mode) {
      return absl::InvalidArgumentError(
          absl::StrCat("sequence ", s.seq_id, ": unknown logits request"));
    }
    c.logits = *mode;
    seqs_.push_back(c);
    seq_ids_.push_back(s.seq_id);
  }
  // Two entries of one sequence would write its KV twice (the CPU refuses
  // the same).
  std::sort(seq_ids_.begin(), seq_ids_.end());
  if (auto dup = std::adjacent_find(seq_ids_.begin(), seq_ids_.end()); dup != seq_ids_.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("sequence ", *dup, " appears twice in one step"));
  }
  if (core::GpuStatus s =
          engine_->Step(seqs_.data(), seqs_.size(), copy_logits, want_argmax, &result_);
      !s.ok()) {
    return ToAbslStatus(s);
  }
  StepOutput out;
  out.vocab_size = spec_.hp.vocab_size;
  // One host copy out of the engine's pinned staging (StepOutput owns its
  // rows).
  out.logits.assign(result_.logits.begin(), result_.logits.end());
  if (want_argmax) {
    // result_.argmax has one entry per computed row; keep the kArgmax rows'.
    size_t row = 0;
    for (const SequenceStep& s : batch.seqs) {
      if (s.logits == LogitsWanted::kArgmax) out.argmax.push_back(result_.argmax[row]);
      row += LogitsRows(s);
    }
  }
  out.device_time = std::chrono::duration_cast<std::chrono::nanoseconds>(
      std::chrono::steady_clock::now() - start);
  return out;
}

absl::Status CudaExecutor::MapKvPage(uint32_t slot, uint32_t arena_page) {
  absl::StatusOr<void*> address = slots_.Map(slot, arena_page);
  if (!address.ok()) return address.status();
  if (absl::Status s = ToAbslStatus(engine_->MapPage(slot, *address)); !s.ok()) {
    // Keep the bookkeeping equal to what the engine holds.
    slots_.Unmap(slot).IgnoreError();
    return s;
  }
  return absl::OkStatus();
}

absl::Status CudaExecutor::UnmapKvPage(uint32_t slot) {
  if (absl::Status s = slots_.Unmap(slot); !s.ok()) return s;
  return ToAbslStatus(engine_->UnmapPage(slot));
}

absl::StatusOr<ExecutorPtr> CreateCudaExecutor(const ModelSpec& spec,
                                               const ExecutorOptions& options, int ordinal) {
  absl::StatusOr<std::unique_ptr<CudaExecutor>> e = CudaExecutor::Create(spec, options, ordinal);
  if (!e.ok()) return e.status();
  return ExecutorPtr(std::move(*e));
}

absl::StatusOr<KvArenaPtr> CreateCudaKvArena(int ordinal, KvArenaBudget budget, size_t page_bytes,
                                             size_t chunk_bytes) {
  // Reading the memory now refuses a missing GPU or unusable driver at once
  // rather than at the first page.
  size_t total = 0, free = 0;
  if (core::GpuStatus s = core::DeviceMemory(ordinal, &total, &free); !s.ok()) {
    return ToAbslStatus(s);
  }
  KvChunkSource source;
  source.allocate = [ordinal](size_t bytes) -> void* {
    void* base = nullptr;
    // A refused chunk is the arena's cap being the device's memory: the
    // taker gets no page (a page miss), not an error.
    if (!core::AllocateDeviceRegion(ordinal, bytes, &base).ok()) return nullptr;
    return base;
  };
  source.release = [](void* base, size_t) { core::FreeDeviceRegion(base); };
  // A returned page keeps its bytes: the next instance overwrites every
  // position before attention reads it (a block is written before use).
  source.free_bytes = [ordinal]() -> uint64_t {
    size_t t = 0, f = 0;
    return core::DeviceMemory(ordinal, &t, &f).ok() ? f : 0;
  };
  return CreateChunkedKvArena(std::move(source), budget, page_bytes, chunk_bytes);
}

absl::StatusOr<KvArenaPtr> CreateCudaKvArena(int ordinal, size_t bytes, size_t page_bytes) {
  KvArenaBudget budget;
  budget.bytes = bytes;
  return CreateCudaKvArena(ordinal, budget, page_bytes, kDefaultKvChunkBytes);
}

}  // namespace tokenmill::devices::cuda
