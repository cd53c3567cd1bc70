// GgufWriter: writes a GGUF v3 file whose tensors are produced one at a time
// by a callback, so a multi-gigabyte model never has to be in memory at once.
// The file is written to "<path>.tmp" and renamed into place when complete.
#pragma once

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "runtime/model/gguf_value.h"

namespace tokenmill::model {

// Where a tensor's bytes go; counts them so the writer can check each tensor
// got exactly its declared size.
class GgufTensorSink {
 public:
  GgufTensorSink(std::FILE* file, std::string path) : file_(file), path_(std::move(path)) {}
  absl::Status Append(const void* data, size_t bytes);
  uint64_t written() const { return written_; }

 private:
  std::FILE* file_;
  std::string path_;
  uint64_t written_ = 0;
};

class GgufWriter {
 public:
  // `alignment` places the data section and every tensor; add a matching
  // "general.alignment" key when it is not 32.
  explicit GgufWriter(uint32_t alignment = 32) : alignment_(alignment) {}

  void AddMetadata(std::string key, GgufValue value);
  // Declares a tensor of `shape` (outermost first) in ggml type `ggml_type`;
  // its bytes size is derived from the type. Tensors are written in the order
  // they are added.
  void AddTensor(std::string name, uint32_t ggml_type, std::vector<int64_t> shape);

  // Fills tensor `index` by appending exactly its bytes to the sink.
  using TensorFill = std::function<absl::Status(size_t index, GgufTensorSink& sink)>;
  // Writes the file. Fails with kInvalidArgument when a tensor's type is
  // unknown or the fill wrote a different number of bytes, kInternal on I/O
  // errors (the partial file is removed).
  absl::Status Write(const std::filesystem::path& path, const TensorFill& fill) const;

  // The header bytes (magic through tensor infos, unpadded).
  std::string EncodeHeader() const;

 private:
  struct Tensor {
    std::string name;
    uint32_t ggml_type = 0;
    std::vector<int64_t> shape;
    uint64_t bytes = 0;
    uint64_t offset = 0;
  };

  uint32_t alignment_;
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::vector<Tensor> tensors_;
  uint64_t data_bytes_ = 0;
  bool bad_type_ = false;
};

}  // namespace tokenmill::model
