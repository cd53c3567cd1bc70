// GgufFile: a GGUF (v2 or v3) file parsed in place from a read-only mapping.
// Header, metadata and tensor infos are checked against the file size as they
// are read, so a truncated, corrupt or hostile file yields an error naming
// the file, the key or tensor and what is wrong, never a crash or a huge
// allocation. Tensor data is not copied: GgufTensorInfo::data points into the
// mapping, which the GgufFile (and whoever holds mapping()) keeps alive.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "runtime/model/gguf_value.h"
#include "runtime/model/mapped_file.h"

namespace tokenmill::model {

inline constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF" read as little-endian u32
inline constexpr uint32_t kGgufDefaultAlignment = 32;

class GgufCursor;  // gguf_file.cc: bounds-checked reads

struct GgufTensorInfo {
  std::string name;
  uint32_t ggml_type = 0;
  std::vector<uint64_t> ne;  // innermost dimension first, as the file stores it
  uint64_t offset = 0;       // from the start of the data section
  uint64_t bytes = 0;
  const uint8_t* data = nullptr;  // inside the mapping

  // Outermost first (PyTorch order), the reverse of ne.
  std::vector<int64_t> Shape() const;
};

class GgufFile {
 public:
  // Maps and parses `path`. kNotFound when absent, kInvalidArgument when
  // corrupt, kUnimplemented for versions other than 2/3 and tensor types whose
  // layout tokenmill does not know.
  static absl::StatusOr<std::unique_ptr<GgufFile>> Open(const std::filesystem::path& path);
  // Parses an existing mapping.
  static absl::StatusOr<std::unique_ptr<GgufFile>> Parse(std::shared_ptr<const MappedFile> file);

  const std::filesystem::path& path() const { return file_->path(); }
  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }
  const std::shared_ptr<const MappedFile>& mapping() const { return file_; }

  // Metadata in file order.
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return metadata_; }
  // The value of `key`, or null.
  const GgufValue* Find(std::string_view key) const;

  // Tensor infos in file order.
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  // The tensor named `name`, or null.
  const GgufTensorInfo* FindTensor(std::string_view name) const;

 private:
  explicit GgufFile(std::shared_ptr<const MappedFile> file) : file_(std::move(file)) {}
  absl::Status ParseAll();
  absl::Status ParseMetadata(GgufCursor& cursor, uint64_t count);
  absl::Status ParseTensorInfos(GgufCursor& cursor, uint64_t count);
  absl::Status PlaceTensors();

  std::shared_ptr<const MappedFile> file_;
  uint32_t version_ = 0;
  uint32_t alignment_ = kGgufDefaultAlignment;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  absl::flat_hash_map<std::string, size_t> metadata_index_;
  std::vector<GgufTensorInfo> tensors_;
  absl::flat_hash_map<std::string, size_t> tensor_index_;
};

}  // namespace tokenmill::model
