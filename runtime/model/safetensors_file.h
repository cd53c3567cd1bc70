// SafetensorsFile: one .safetensors file mapped read-only and its JSON header
// checked: 8-byte little-endian header length (at most 100 MiB), then
// {name: {dtype, shape, data_offsets}} ("__metadata__" ignored). Every
// tensor's byte range is checked against the data section, its size against
// its shape and dtype, and ranges may not overlap.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "runtime/model/mapped_file.h"

namespace tokenmill::model {

inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100ull << 20;

struct SafetensorsTensor {
  std::string name;
  std::string dtype;  // "F32", "F16", "BF16", "I64", ...
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // inside the mapping
  size_t bytes = 0;
};

class SafetensorsFile {
 public:
  // kNotFound when absent, kInvalidArgument when corrupt.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::filesystem::path& path);

  const std::filesystem::path& path() const { return file_->path(); }
  const std::shared_ptr<const MappedFile>& mapping() const { return file_; }
  const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }
  const SafetensorsTensor* Find(std::string_view name) const;

 private:
  explicit SafetensorsFile(std::shared_ptr<const MappedFile> file) : file_(std::move(file)) {}
  absl::Status Parse();

  std::shared_ptr<const MappedFile> file_;
  std::vector<SafetensorsTensor> tensors_;
  absl::flat_hash_map<std::string, size_t> index_;
};

// Bytes per element of a safetensors dtype, 0 when unknown.
size_t SafetensorsDtypeBytes(std::string_view dtype);

}  // namespace tokenmill::model
