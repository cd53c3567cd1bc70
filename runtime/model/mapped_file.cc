#include "runtime/model/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace tokenmill::model {
namespace {

// Closes a file descriptor on scope exit; the mapping outlives it.
class FdCloser {
 public:
  explicit FdCloser(int fd) : fd_(fd) {}
  ~FdCloser() {
    if (fd_ >= 0) ::close(fd_);
  }
  FdCloser(const FdCloser&) = delete;
  FdCloser& operator=(const FdCloser&) = delete;

 private:
  int fd_;
};

bool RangeInside(const uint8_t* begin, size_t size, const void* p, size_t bytes) {
  // Compare as integers: pointers into different objects are not ordered.
  const auto lo = reinterpret_cast<uintptr_t>(begin);
  const auto q = reinterpret_cast<uintptr_t>(p);
  return q >= lo && q - lo <= size && bytes <= size - (q - lo);
}

}  // namespace

absl::StatusOr<std::shared_ptr<const MappedFile>> MappedFile::Open(
    const std::filesystem::path& path) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused below).
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    const int err = errno;
    const std::string message = absl::StrCat(path.string(), ": cannot open: ", std::strerror(err));
    return err == ENOENT ? absl::NotFoundError(message) : absl::InvalidArgumentError(message);
  }
  FdCloser closer(fd);
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    return absl::InternalError(absl::StrCat(path.string(), ": fstat: ", std::strerror(errno)));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(path.string(), ": not a regular file"));
  }
  if (st.st_size == 0) {
    return absl::InvalidArgumentError(absl::StrCat(path.string(), ": file is empty"));
  }
  const auto size = static_cast<size_t>(st.st_size);
  void* data = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  if (data == MAP_FAILED) {
    return absl::InternalError(absl::StrCat(path.string(), ": mmap: ", std::strerror(errno)));
  }
  return std::shared_ptr<const MappedFile>(
      new MappedFile(path, static_cast<const uint8_t*>(data), size));
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
}

bool MappedFile::Contains(const void* p, size_t bytes) const {
  return RangeInside(data_, size_, p, bytes);
}

bool ModelBacking::InMappedFile(const void* p, size_t bytes) const {
  for (const auto& file : files) {
    if (file->Contains(p, bytes)) return true;
  }
  return false;
}

uint8_t* ModelBacking::NewBuffer(size_t bytes) {
  buffers.emplace_back(bytes);
  return buffers.back().data();
}

const ModelBacking* BackingOf(const devices::ModelSpec& spec) {
  return static_cast<const ModelBacking*>(spec.backing.get());
}

}  // namespace tokenmill::model
