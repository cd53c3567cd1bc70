#include "runtime/model/safetensors_file.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace tokenmill::model {

size_t SafetensorsDtypeBytes(std::string_view dtype) {
  if (dtype == "F64" || dtype == "I64" || dtype == "U64") return 8;
  if (dtype == "F32" || dtype == "I32" || dtype == "U32") return 4;
  if (dtype == "F16" || dtype == "BF16" || dtype == "I16" || dtype == "U16") return 2;
  if (dtype == "I8" || dtype == "U8" || dtype == "BOOL" || dtype == "F8_E4M3" ||
      dtype == "F8_E5M2") {
    return 1;
  }
  return 0;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(
    const std::filesystem::path& path) {
  auto mapping = MappedFile::Open(path);
  if (!mapping.ok()) return mapping.status();
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile(*std::move(mapping)));
  if (absl::Status s = file->Parse(); !s.ok()) return s;
  return file;
}

const SafetensorsTensor* SafetensorsFile::Find(std::string_view name) const {
  auto it = index_.find(std::string(name));
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

absl::Status SafetensorsFile::Parse() {
  const std::string path = file_->path().string();
  auto invalid = [&](auto&&... what) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", what...));
  };
  uint64_t header_bytes = 0;
  if (file_->size() < sizeof(header_bytes)) return invalid("too short for a safetensors header");
  std::memcpy(&header_bytes, file_->data(), sizeof(header_bytes));
  if (header_bytes > kMaxSafetensorsHeaderBytes) {
    return invalid("header length ", header_bytes, " exceeds the 100 MiB limit");
  }
  if (header_bytes > file_->size() - sizeof(header_bytes)) {
    return invalid("header length ", header_bytes, " runs past the end of the file (",
                   file_->size(), " bytes)");
  }
  const char* text = reinterpret_cast<const char*>(file_->data() + sizeof(header_bytes));
  const nlohmann::json header =
      nlohmann::json::parse(text, text + header_bytes, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object()) return invalid("header is not a JSON object");
  const uint64_t data_start = sizeof(header_bytes) + header_bytes;
  const uint64_t data_size = file_->size() - data_start;
  tensors_.reserve(header.size());
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") continue;
    const std::string where = absl::StrCat("tensor '", name, "'");
    if (!entry.is_object()) return invalid(where, ": entry is not an object");
    auto dtype = entry.find("dtype");
    auto shape = entry.find("shape");
    auto offsets = entry.find("data_offsets");
    if (dtype == entry.end() || !dtype->is_string()) return invalid(where, ": missing dtype");
    if (shape == entry.end() || !shape->is_array()) return invalid(where, ": missing shape");
    if (offsets == entry.end() || !offsets->is_array() || offsets->size() != 2 ||
        !(*offsets)[0].is_number_unsigned() || !(*offsets)[1].is_number_unsigned()) {
      return invalid(where, ": data_offsets must be two unsigned integers");
    }
    SafetensorsTensor t;
    t.name = name;
    t.dtype = dtype->get<std::string>();
    const size_t element_bytes = SafetensorsDtypeBytes(t.dtype);
    if (element_bytes == 0) {
      return absl::UnimplementedError(
          absl::StrCat(path, ": ", where, ": unknown dtype '", t.dtype, "'"));
    }
    if (shape->size() > 8) return invalid(where, ": more than 8 dimensions");
    uint64_t elements = 1;
    for (const auto& d : *shape) {
      if (!d.is_number_unsigned()) return invalid(where, ": shape entries must be unsigned");
      const uint64_t n = d.get<uint64_t>();
      if (n > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
          __builtin_mul_overflow(elements, n, &elements)) {
        return invalid(where, ": shape overflows");
      }
      t.shape.push_back(static_cast<int64_t>(n));
    }
    uint64_t expected = 0;
    if (__builtin_mul_overflow(elements, uint64_t{element_bytes}, &expected)) {
      return invalid(where, ": byte size overflows");
    }
    const uint64_t begin = (*offsets)[0].get<uint64_t>();
    const uint64_t end = (*offsets)[1].get<uint64_t>();
    if (begin > end || end > data_size) {
      return invalid(where, ": data_offsets [", begin, ", ", end, "] outside the data section of ",
                     data_size, " bytes");
    }
    if (end - begin != expected) {
      return invalid(where, ": holds ", end - begin, " bytes but its shape and dtype need ",
                     expected);
    }
    t.data = file_->data() + data_start + begin;
    t.bytes = static_cast<size_t>(expected);
    index_.emplace(t.name, tensors_.size());
    tensors_.push_back(std::move(t));
  }
  std::vector<const SafetensorsTensor*> by_start;
  for (const auto& t : tensors_) by_start.push_back(&t);
  std::sort(
      by_start.begin(), by_start.end(),
      [](const SafetensorsTensor* a, const SafetensorsTensor* b) { return a->data < b->data; });
  for (size_t k = 1; k < by_start.size(); ++k) {
    if (by_start[k - 1]->data + by_start[k - 1]->bytes > by_start[k]->data) {
      return invalid("tensor '", by_start[k]->name, "' overlaps tensor '", by_start[k - 1]->name,
                     "'");
    }
  }
  return absl::OkStatus();
}

}  // namespace tokenmill::model
