// Binding a tensor found in a model file to its ModelSpec slot: shape and
// type checks, and the conversion of norms and biases to f32.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "devices/model_spec.h"
#include "runtime/model/mapped_file.h"
#include "runtime/model/model_layout.h"

namespace tokenmill::model {

// A tensor as a file holds it; data lives in a mapping the backing keeps.
struct SourceTensor {
  std::string name;  // as the file names it
  devices::TensorType type = devices::TensorType::kF32;
  std::vector<int64_t> shape;  // outermost first
  const uint8_t* data = nullptr;
  size_t bytes = 0;
};

// Checks src against slot (shape; matrices any weight type with whole blocks
// per row, norms/biases/rope factors f32, f16 or bf16) and points slot.view at
// it: weights stay in the mapping; f16/bf16 norms and biases (and f32 ones
// not 4-byte aligned) are converted into a buffer owned by `backing`.
// `file` names the file in messages.
absl::Status BindTensor(const TensorSlot& slot, const SourceTensor& src, const std::string& file,
                        ModelBacking* backing);

}  // namespace tokenmill::model
