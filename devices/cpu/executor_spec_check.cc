#include "devices/cpu/executor_spec_check.h"

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

namespace tokenmill::devices::cpu {
namespace {

bool KnownType(TensorType type) {
  switch (type) {
    case TensorType::kF32:
    case TensorType::kF16:
    case TensorType::kBF16:
    case TensorType::kQ8_0:
    case TensorType::kQ4_0:
    case TensorType::kQ4_K:
    case TensorType::kQ5_K:
    case TensorType::kQ6_K:
      return true;
  }
  return false;
}

}  // namespace

absl::Status CheckModelSpecForCpu(const ModelSpec& spec) {
  // The CPU kernels take every weight type a ModelSpec can hold; a value
  // outside the enum (a newer loader) is refused before the shapes.
  std::vector<const TensorView*> tensors = {&spec.token_embedding, &spec.output};
  for (const LayerWeights& l : spec.layers) {
    for (const TensorView* t : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down,
                                &l.router, &l.gate_exps, &l.up_exps, &l.down_exps}) {
      tensors.push_back(t);
    }
  }
  for (const TensorView* t : tensors) {
    if (!t->empty() && !KnownType(t->type)) {
      return absl::UnimplementedError(absl::StrCat(
          t->name, ": weight type ", static_cast<uint32_t>(t->type), " not supported"));
    }
  }
  if (std::string problem = spec.Problem(); !problem.empty()) {
    return absl::InvalidArgumentError(problem);
  }
  return absl::OkStatus();
}

absl::Status CheckExecutorOptions(const ExecutorOptions& options) {
  if (options.block_tokens <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("block_tokens must be positive, got ", options.block_tokens));
  }
  if (options.kv_blocks == 0) return absl::InvalidArgumentError("kv_blocks must be positive");
  if (options.max_batch_tokens <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_batch_tokens must be positive, got ", options.max_batch_tokens));
  }
  if (options.threads < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("threads must be 0 (one per core) or positive, got ", options.threads));
  }
  if (options.kv_type != KvType::kF16 && options.kv_type != KvType::kF32) {
    return absl::InvalidArgumentError("unknown KV type");
  }
  return absl::OkStatus();
}

}  // namespace tokenmill::devices::cpu
