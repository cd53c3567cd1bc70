// MappedFile: a whole file memory-mapped read-only (MAP_PRIVATE), so that
// model weights are paged in on demand and never copied. ModelBacking keeps
// mappings and the few buffers a loader had to convert alive for as long as a
// ModelSpec points into them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "devices/model_spec.h"

namespace tokenmill::model {

// Owns one mmap of a file; unmapped on destruction. Immutable after Open, so
// any thread may read it.
class MappedFile {
 public:
  // kNotFound when the file does not exist, kInvalidArgument when it is empty
  // or not a regular file, kInternal when mmap fails.
  static absl::StatusOr<std::shared_ptr<const MappedFile>> Open(const std::filesystem::path& path);

  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::filesystem::path& path() const { return path_; }
  // True when [p, p + bytes) lies inside the mapping.
  bool Contains(const void* p, size_t bytes) const;

 private:
  MappedFile(std::filesystem::path path, const uint8_t* data, size_t size)
      : path_(std::move(path)), data_(data), size_(size) {}

  std::filesystem::path path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// What a ModelSpec's `backing` holds for every model this folder produces
// (LoadModel, SynthesizeModel): the file mappings its views point into and
// the buffers a loader filled (norms converted to f32, synthetic weights).
struct ModelBacking {
  std::vector<std::shared_ptr<const MappedFile>> files;
  std::vector<std::vector<uint8_t>> buffers;

  // True when [p, p + bytes) lies inside one of the mapped files.
  bool InMappedFile(const void* p, size_t bytes) const;
  // A buffer of `bytes` zero bytes that lives as long as the backing.
  uint8_t* NewBuffer(size_t bytes);
};

// The ModelBacking of a spec made by this folder's loaders or synthesizer
// (null when backing is empty). Only valid for such specs: the backing of a
// spec made elsewhere may be any type.
const ModelBacking* BackingOf(const devices::ModelSpec& spec);

}  // namespace tokenmill::model
