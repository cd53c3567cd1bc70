#include "runtime/model/model_loader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

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
  if (!std::filesystem::is_regular_file(status)) {
    return absl::InvalidArgumentError(absl::StrCat(path.string(), ": not a regular file"));
  }
  // O_NONBLOCK and fstat: a file swapped for a FIFO since the check above
  // must not block the loader, nor a device feed it forever.
  char magic[4] = {};
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  struct stat st {};
  const bool regular = fd >= 0 && ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
  const bool read_magic = regular && ::read(fd, magic, sizeof(magic)) == sizeof(magic);
  if (fd >= 0) ::close(fd);
  if (fd < 0) {
    return absl::NotFoundError(
        absl::StrCat(path.string(), ": cannot open: ", std::strerror(errno)));
  }
  if (!regular)
    return absl::InvalidArgumentError(absl::StrCat(path.string(), ": not a regular file"));
  if (!read_magic || std::string(magic, 4) != "GGUF") {
    return absl::InvalidArgumentError(absl::StrCat(
        path.string(), ": not a model (expected a GGUF file or a safetensors directory)"));
  }
  return LoadGgufModel(path);
}

}  // namespace tokenmill::model
