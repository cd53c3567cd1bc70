#include "runtime/model/tensor_binding.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "devices/cpu/kernels.h"

namespace tokenmill::model {

using devices::TensorType;

absl::Status BindTensor(const TensorSlot& slot, const SourceTensor& src, const std::string& file,
                        ModelBacking* backing) {
  const std::string where = absl::StrCat(file, ": tensor '", src.name, "'");
  if (src.shape != slot.shape) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": shape ", ShapeText(src.shape), " does not match the expected ",
                     ShapeText(slot.shape), " implied by the model's hyperparameters"));
  }
  devices::TensorView& view = *slot.view;
  view.name = src.name;
  view.shape = src.shape;
  const bool vector_role = slot.role == TensorRole::kNorm || slot.role == TensorRole::kBias ||
                           slot.role == TensorRole::kRopeFactors;
  if (!vector_role) {
    if (src.shape.back() % static_cast<int64_t>(devices::TensorTypeBlockElements(src.type)) != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": row length ", src.shape.back(), " is not a multiple of the ",
                       devices::TensorTypeName(src.type), " block size"));
    }
    view.type = src.type;
    view.data = src.data;
    view.bytes = src.bytes;
    return absl::OkStatus();
  }
  const size_t n = static_cast<size_t>(view.elements());
  view.type = TensorType::kF32;
  view.bytes = n * sizeof(float);
  if (src.type == TensorType::kF32 && reinterpret_cast<uintptr_t>(src.data) % alignof(float) == 0) {
    view.data = src.data;
    return absl::OkStatus();
  }
  if (src.type != TensorType::kF32 && src.type != TensorType::kF16 &&
      src.type != TensorType::kBF16) {
    return absl::UnimplementedError(absl::StrCat(where, ": stored as ",
                                                 devices::TensorTypeName(src.type),
                                                 "; norms and biases must be f32, f16 or bf16"));
  }
  auto* out = reinterpret_cast<float*>(backing->NewBuffer(n * sizeof(float)));
  for (size_t k = 0; k < n; ++k) {
    if (src.type == TensorType::kF32) {
      std::memcpy(&out[k], src.data + 4 * k, sizeof(float));
    } else {
      uint16_t h;
      std::memcpy(&h, src.data + 2 * k, sizeof(h));
      out[k] = src.type == TensorType::kF16 ? devices::cpu::HalfToFloat(h)
                                            : devices::cpu::Bf16ToFloat(h);
    }
  }
  view.data = out;
  return absl::OkStatus();
}

}  // namespace tokenmill::model
