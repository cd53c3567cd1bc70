// GGUF metadata values and ggml tensor type facts shared by the GGUF reader
// and writer (GGUF v2/v3 file format, little-endian).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace tokenmill::model {

// Metadata value types as GGUF numbers them.
enum class GgufType : uint32_t {
  kU8 = 0,
  kI8 = 1,
  kU16 = 2,
  kI16 = 3,
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kU64 = 10,
  kI64 = 11,
  kF64 = 12,
};
inline constexpr uint32_t kGgufTypeCount = 13;
const char* GgufTypeName(GgufType type);

// One metadata value. Scalars keep the file's type and are widened into one
// of u / i / f / b; arrays hold items of one scalar or string type, packed by
// kind (strings, integers and bools in `ints`, floats in `floats`) so that a
// large array costs at most 8 bytes per item over its text. Nested arrays are
// refused by the reader, as llama.cpp does.
struct GgufValue {
  GgufType type = GgufType::kU8;
  uint64_t u = 0;  // kU8, kU16, kU32, kU64
  int64_t i = 0;   // kI8, kI16, kI32, kI64
  double f = 0;    // kF32, kF64
  bool b = false;  // kBool
  std::string s;   // kString
  // kArray: items of item_type in exactly one of these.
  GgufType item_type = GgufType::kU8;
  std::vector<std::string> strings;  // kString items
  std::vector<int64_t> ints;         // integer and bool items (u64 stored as its bits)
  std::vector<double> floats;        // kF32 / kF64 items

  static GgufValue U32(uint32_t v);
  static GgufValue I32(int32_t v);
  static GgufValue U64(uint64_t v);
  static GgufValue F32(float v);
  static GgufValue Bool(bool v);
  static GgufValue String(std::string v);
  static GgufValue StringArray(std::vector<std::string> items);
  static GgufValue IntArray(GgufType item_type, std::vector<int64_t> items);
  static GgufValue FloatArray(GgufType item_type, std::vector<double> items);

  bool is_integer() const;
  bool is_number() const;  // integer or float
  // Items of an array (0 for scalars).
  size_t array_size() const;
  // The value as a signed integer when it is an integer that fits.
  std::optional<int64_t> AsInt() const;
  // The value as a double when it is a number.
  std::optional<double> AsDouble() const;
  // Scalars as text (numbers, bools, strings); nullopt for arrays.
  std::optional<std::string> AsText() const;
};

// Facts about a ggml tensor type: name, elements per block, bytes per block
// (0 when tokenmill does not know the layout; such tensors are refused).
struct GgmlTypeInfo {
  const char* name = nullptr;  // null: not a ggml type id
  uint32_t block_elements = 0;
  uint32_t block_bytes = 0;
};
GgmlTypeInfo GgmlType(uint32_t type);

}  // namespace tokenmill::model
