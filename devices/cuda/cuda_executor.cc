#include "devices/cuda/cuda_executor.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"

namespace tokenmill::devices::cuda {
namespace {

constexpr uint32_t kNoPage = UINT32_MAX;

core::LogitsMode ModeOf(LogitsWanted wanted) {
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
  return core::LogitsMode::kLast;
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
  core::EngineOptions eo;
  eo.device = ordinal;
  eo.block_tokens = options.block_tokens;
  eo.kv_type = options.kv_type;
  eo.kv_blocks = options.kv_blocks;
  eo.max_batch_tokens = options.max_batch_tokens;
  if (options.kv_arena != nullptr) {
    // Pages hold whole blocks; the id space covers whole pages, as on the CPU.
    const size_t page_bytes = options.kv_arena->page_bytes();
    const size_t block_bytes =
        KvLayoutFor(spec, options.block_tokens, options.kv_type).BlockBytes();
    const size_t per_page = block_bytes == 0 ? 0 : page_bytes / block_bytes;
    if (per_page == 0 || per_page > UINT32_MAX) {
      return absl::InvalidArgumentError(absl::StrCat("a KV arena page of ", page_bytes,
                                                     " bytes cannot hold KV blocks of ",
                                                     block_bytes, " bytes"));
    }
    const uint64_t rounded = (uint64_t{options.kv_blocks} + per_page - 1) / per_page * per_page;
    if (rounded > UINT32_MAX) {
      return absl::InvalidArgumentError(absl::StrCat(
          options.kv_blocks, " KV blocks do not fit a 32-bit id space in whole pages"));
    }
    eo.kv_blocks = static_cast<uint32_t>(rounded);
    eo.blocks_per_page = static_cast<uint32_t>(per_page);
  }
  std::unique_ptr<core::Engine> engine;
  if (core::GpuStatus s = core::Engine::Create(spec, eo, &engine); !s.ok()) {
    return ToAbslStatus(s);
  }
  return std::unique_ptr<CudaExecutor>(new CudaExecutor(spec, options.kv_arena, std::move(engine)));
}

CudaExecutor::CudaExecutor(const ModelSpec& spec, KvArena* arena,
                           std::unique_ptr<core::Engine> engine)
    : spec_(spec), arena_(arena), engine_(std::move(engine)) {
  const uint32_t per_page = engine_->options().blocks_per_page;
  if (per_page > 0) slot_page_.assign(engine_->kv_blocks() / per_page, kNoPage);
}

absl::StatusOr<StepOutput> CudaExecutor::Forward(const Batch& batch) {
  const auto start = std::chrono::steady_clock::now();
  seqs_.clear();
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
    c.logits = ModeOf(s.logits);
    seqs_.push_back(c);
  }
  if (core::GpuStatus s =
          engine_->Step(seqs_.data(), seqs_.size(), copy_logits, want_argmax, &result_);
      !s.ok()) {
    return ToAbslStatus(s);
  }
  StepOutput out;
  out.vocab_size = spec_.hp.vocab_size;
  out.logits = std::move(result_.logits);
  if (want_argmax) {
    // result_.argmax has one entry per computed row; keep the kArgmax rows'.
    size_t row = 0;
    for (const SequenceStep& s : batch.seqs) {
      if (s.logits == LogitsWanted::kArgmax) out.argmax.push_back(result_.argmax[row]);
      row += s.logits == LogitsWanted::kAll    ? s.tokens.size()
             : s.logits == LogitsWanted::kNone ? 0
                                               : 1;
    }
  }
  out.device_time = std::chrono::duration_cast<std::chrono::nanoseconds>(
      std::chrono::steady_clock::now() - start);
  return out;
}

absl::Status CudaExecutor::MapKvPage(uint32_t slot, uint32_t arena_page) {
  if (arena_ == nullptr) {
    return absl::InvalidArgumentError("the executor owns its KV memory: no arena pages to map");
  }
  if (slot >= slot_page_.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV page slot ", slot, " past the ", slot_page_.size(), " slots"));
  }
  if (slot_page_[slot] != kNoPage) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV page slot ", slot, " already holds arena page ", slot_page_[slot]));
  }
  void* address = arena_->PageAddress(arena_page);
  if (address == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("no KV arena page ", arena_page));
  }
  if (auto it = std::find(slot_page_.begin(), slot_page_.end(), arena_page);
      it != slot_page_.end()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KV arena page ", arena_page, " is already mapped in slot ", it - slot_page_.begin()));
  }
  if (absl::Status s = ToAbslStatus(engine_->MapPage(slot, address)); !s.ok()) return s;
  slot_page_[slot] = arena_page;
  return absl::OkStatus();
}

absl::Status CudaExecutor::UnmapKvPage(uint32_t slot) {
  if (arena_ == nullptr || slot >= slot_page_.size() || slot_page_[slot] == kNoPage) {
    return absl::InvalidArgumentError(absl::StrCat("KV page slot ", slot, " has no arena page"));
  }
  if (absl::Status s = ToAbslStatus(engine_->UnmapPage(slot)); !s.ok()) return s;
  slot_page_[slot] = kNoPage;
  return absl::OkStatus();
}

absl::StatusOr<ExecutorPtr> CreateCudaExecutor(const ModelSpec& spec,
                                               const ExecutorOptions& options, int ordinal) {
  absl::StatusOr<std::unique_ptr<CudaExecutor>> e = CudaExecutor::Create(spec, options, ordinal);
  if (!e.ok()) return e.status();
  return ExecutorPtr(std::move(*e));
}

absl::StatusOr<KvArenaPtr> CreateCudaKvArena(int ordinal, size_t bytes, size_t page_bytes) {
  if (page_bytes == 0 || bytes < page_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV arena of ", bytes, " bytes holds no page of ", page_bytes));
  }
  const size_t pages = std::min<size_t>(bytes / page_bytes, UINT32_MAX);
  void* base = nullptr;
  if (core::GpuStatus s = core::AllocateDeviceRegion(ordinal, pages * page_bytes, &base); !s.ok()) {
    return ToAbslStatus(s);
  }
  KvRegion region;
  region.base = base;
  // A returned page keeps its bytes: the next instance overwrites every
  // position before attention reads it (a block is written before use).
  region.release = [](void* p) { core::FreeDeviceRegion(p); };
  return CreateKvArenaOver(std::move(region), page_bytes, static_cast<uint32_t>(pages));
}

}  // namespace tokenmill::devices::cuda
