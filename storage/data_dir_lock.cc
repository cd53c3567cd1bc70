#include "storage/data_dir_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <string>
#include <system_error>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "storage/store_layout.h"

namespace tokenmill::storage {
namespace {

absl::Status ErrnoError(int err, const char* what, const std::filesystem::path& path) {
  const std::string message = absl::StrCat(what, " ", path.string(), ": ", std::strerror(err));
  switch (err) {
    case EACCES:
    case EPERM:
    case EROFS:
      return absl::PermissionDeniedError(message);
    case ENOSPC:
    case EDQUOT:
      return absl::ResourceExhaustedError(message);
    case ENOTDIR:
    case EEXIST:
      return absl::FailedPreconditionError(message);
    default:
      return absl::InternalError(message);
  }
}

absl::Status CreateDataDir(const std::filesystem::path& dir) {
  std::error_code ec;
  if (dir.has_parent_path()) {
    std::filesystem::create_directories(dir.parent_path(), ec);
    if (ec) return ErrnoError(ec.value(), "cannot create the parent of data dir", dir);
  }
  if (::mkdir(dir.c_str(), 0750) != 0 && errno != EEXIST) {
    return ErrnoError(errno, "cannot create data dir", dir);
  }
  if (!std::filesystem::is_directory(dir, ec)) {
    return absl::FailedPreconditionError(
        absl::StrCat("data dir ", dir.string(), " exists and is not a directory"));
  }
  return absl::OkStatus();
}

long ParsePid(std::string_view text) {
  while (!text.empty() && absl::ascii_isspace(static_cast<unsigned char>(text.back()))) {
    text.remove_suffix(1);
  }
  long pid = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), pid);
  if (ec != std::errc() || end != text.data() + text.size() || pid <= 0) return 0;
  return pid;
}

long ReadPid(int fd) {
  char buf[32];
  const ssize_t n = ::pread(fd, buf, sizeof(buf), 0);
  if (n <= 0) return 0;
  return ParsePid(std::string_view(buf, static_cast<size_t>(n)));
}

}  // namespace

absl::Status DataDirInUseError(const std::filesystem::path& data_dir, long pid) {
  std::string message =
      absl::StrCat("data dir ", data_dir.string(), " is in use by another tokenmilld");
  if (pid > 0) absl::StrAppend(&message, " (pid ", pid, ")");
  return absl::FailedPreconditionError(message);
}

long ReadLockHolderPid(const std::filesystem::path& data_dir) {
  const std::filesystem::path path = data_dir / kLockFileName;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  const long pid = ReadPid(fd);
  ::close(fd);
  return pid;
}

absl::StatusOr<std::unique_ptr<DataDirLock>> DataDirLock::Acquire(
    const std::filesystem::path& data_dir) {
  if (absl::Status created = CreateDataDir(data_dir); !created.ok()) return created;
  const std::filesystem::path path = data_dir / kLockFileName;
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0640);
  if (fd < 0) return ErrnoError(errno, "cannot open lock file", path);
  // Owned from here on, so every return below closes it.
  std::unique_ptr<DataDirLock> lock(new DataDirLock(fd));
  int rc;
  do {
    rc = ::flock(fd, LOCK_EX | LOCK_NB);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    if (errno == EWOULDBLOCK) return DataDirInUseError(data_dir, ReadPid(fd));
    return ErrnoError(errno, "cannot lock", path);
  }
  // Truncate after locking: the file may hold a dead owner's longer pid.
  const std::string pid = absl::StrCat(::getpid(), "\n");
  if (::ftruncate(fd, 0) != 0) return ErrnoError(errno, "cannot truncate", path);
  const ssize_t written = ::pwrite(fd, pid.data(), pid.size(), 0);
  if (written != static_cast<ssize_t>(pid.size())) {
    return ErrnoError(written < 0 ? errno : EIO, "cannot write the pid into", path);
  }
  return lock;
}

DataDirLock::~DataDirLock() { ::close(fd_); }

}  // namespace tokenmill::storage
