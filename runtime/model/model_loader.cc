#include "runtime/model/model_loader.h"

#include <fstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "runtime/model/gguf_loader.h"
#include "runtime/model/safetensors_loader.h"

namespace tokenmill::model {

absl::StatusOr<LoadedModel> LoadModel(const std::filesystem::path& path) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(status)) {
    return absl::NotFoundError(absl::StrCat(path.string(), ": no such file or directory"));
  }
  if (std::filesystem::is_directory(status)) return LoadSafetensorsModel(path);
  char magic[4] = {};
  std::ifstream in(path, std::ios::binary);
  if (!in.read(magic, sizeof(magic)) || std::string(magic, 4) != "GGUF") {
    return absl::InvalidArgumentError(absl::StrCat(
        path.string(), ": not a model (expected a GGUF file or a safetensors directory)"));
  }
  return LoadGgufModel(path);
}

}  // namespace tokenmill::model
