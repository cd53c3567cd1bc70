#include "runtime/model/gguf_value.h"

#include <limits>

#include "absl/strings/str_cat.h"

namespace tokenmill::model {

const char* GgufTypeName(GgufType type) {
  static constexpr const char* kNames[kGgufTypeCount] = {"u8",  "i8",  "u16",  "i16",    "u32",
                                                         "i32", "f32", "bool", "string", "array",
                                                         "u64", "i64", "f64"};
  const auto index = static_cast<uint32_t>(type);
  return index < kGgufTypeCount ? kNames[index] : "unknown";
}

GgufValue GgufValue::U32(uint32_t v) {
  GgufValue value;
  value.type = GgufType::kU32;
  value.u = v;
  return value;
}

GgufValue GgufValue::I32(int32_t v) {
  GgufValue value;
  value.type = GgufType::kI32;
  value.i = v;
  return value;
}

GgufValue GgufValue::U64(uint64_t v) {
  GgufValue value;
  value.type = GgufType::kU64;
  value.u = v;
  return value;
}

GgufValue GgufValue::F32(float v) {
  GgufValue value;
  value.type = GgufType::kF32;
  value.f = v;
  return value;
}

GgufValue GgufValue::Bool(bool v) {
  GgufValue value;
  value.type = GgufType::kBool;
  value.b = v;
  return value;
}

GgufValue GgufValue::String(std::string v) {
  GgufValue value;
  value.type = GgufType::kString;
  value.s = std::move(v);
  return value;
}

GgufValue GgufValue::StringArray(std::vector<std::string> items) {
  GgufValue value;
  value.type = GgufType::kArray;
  value.item_type = GgufType::kString;
  value.strings = std::move(items);
  return value;
}

GgufValue GgufValue::IntArray(GgufType item_type, std::vector<int64_t> items) {
  GgufValue value;
  value.type = GgufType::kArray;
  value.item_type = item_type;
  value.ints = std::move(items);
  return value;
}

GgufValue GgufValue::FloatArray(GgufType item_type, std::vector<double> items) {
  GgufValue value;
  value.type = GgufType::kArray;
  value.item_type = item_type;
  value.floats = std::move(items);
  return value;
}

size_t GgufValue::array_size() const {
  if (type != GgufType::kArray) return 0;
  return strings.size() + ints.size() + floats.size();
}

bool GgufValue::is_integer() const {
  switch (type) {
    case GgufType::kU8:
    case GgufType::kI8:
    case GgufType::kU16:
    case GgufType::kI16:
    case GgufType::kU32:
    case GgufType::kI32:
    case GgufType::kU64:
    case GgufType::kI64:
      return true;
    default:
      return false;
  }
}

bool GgufValue::is_number() const {
  return is_integer() || type == GgufType::kF32 || type == GgufType::kF64;
}

std::optional<int64_t> GgufValue::AsInt() const {
  switch (type) {
    case GgufType::kU8:
    case GgufType::kU16:
    case GgufType::kU32:
    case GgufType::kU64:
      if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
      return static_cast<int64_t>(u);
    case GgufType::kI8:
    case GgufType::kI16:
    case GgufType::kI32:
    case GgufType::kI64:
      return i;
    default:
      return std::nullopt;
  }
}

std::optional<double> GgufValue::AsDouble() const {
  if (type == GgufType::kF32 || type == GgufType::kF64) return f;
  if (type == GgufType::kU8 || type == GgufType::kU16 || type == GgufType::kU32 ||
      type == GgufType::kU64) {
    return static_cast<double>(u);
  }
  if (is_integer()) return static_cast<double>(i);
  return std::nullopt;
}

std::optional<std::string> GgufValue::AsText() const {
  switch (type) {
    case GgufType::kString:
      return s;
    case GgufType::kBool:
      return std::string(b ? "true" : "false");
    case GgufType::kF32:
      return absl::StrCat(static_cast<float>(f));
    case GgufType::kF64:
      return absl::StrCat(f);
    case GgufType::kArray:
      return std::nullopt;
    default:
      if (type == GgufType::kU8 || type == GgufType::kU16 || type == GgufType::kU32 ||
          type == GgufType::kU64) {
        return absl::StrCat(u);
      }
      return absl::StrCat(i);
  }
}

GgmlTypeInfo GgmlType(uint32_t type) {
  // Block layouts from ggml (public format facts). Types whose layout we do
  // not carry have block_bytes 0: the reader names them and refuses.
  switch (type) {
    case 0:
      return {"f32", 1, 4};
    case 1:
      return {"f16", 1, 2};
    case 2:
      return {"q4_0", 32, 18};
    case 3:
      return {"q4_1", 32, 20};
    case 6:
      return {"q5_0", 32, 22};
    case 7:
      return {"q5_1", 32, 24};
    case 8:
      return {"q8_0", 32, 34};
    case 9:
      return {"q8_1", 32, 36};
    case 10:
      return {"q2_K", 256, 84};
    case 11:
      return {"q3_K", 256, 110};
    case 12:
      return {"q4_K", 256, 144};
    case 13:
      return {"q5_K", 256, 176};
    case 14:
      return {"q6_K", 256, 210};
    case 15:
      return {"q8_K", 256, 292};
    case 16:
      return {"iq2_xxs", 0, 0};
    case 17:
      return {"iq2_xs", 0, 0};
    case 18:
      return {"iq3_xxs", 0, 0};
    case 19:
      return {"iq1_s", 0, 0};
    case 20:
      return {"iq4_nl", 0, 0};
    case 21:
      return {"iq3_s", 0, 0};
    case 22:
      return {"iq2_s", 0, 0};
    case 23:
      return {"iq4_xs", 0, 0};
    case 24:
      return {"i8", 1, 1};
    case 25:
      return {"i16", 1, 2};
    case 26:
      return {"i32", 1, 4};
    case 27:
      return {"i64", 1, 8};
    case 28:
      return {"f64", 1, 8};
    case 29:
      return {"iq1_m", 0, 0};
    case 30:
      return {"bf16", 1, 2};
    case 34:
      return {"tq1_0", 0, 0};
    case 35:
      return {"tq2_0", 0, 0};
    default:
      return {};
  }
}

}  // namespace tokenmill::model
