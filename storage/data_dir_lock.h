// Single ownership of a data dir between processes: an flock on
// <dir>/tokenmilld.lock that holds the owner's pid.
#pragma once

#include <filesystem>
#include <memory>

#include "absl/status/statusor.h"

namespace tokenmill::storage {

// Holds an exclusive flock on a lock file for its lifetime. The kernel drops
// the lock when the owner dies, so a stale file from a crashed daemon never
// blocks a restart. flock locks belong to the open file, so a second
// DataDirLock on the same file is refused even within one process. Not
// thread-safe; it is only constructed and destroyed.
class DataDirLock {
 public:
  // Creates data_dir (mode 0750) and its parents if missing, locks
  // <data_dir>/tokenmilld.lock without waiting and writes our pid into it. A
  // lock held elsewhere is kFailedPrecondition "data dir D is in use by
  // another tokenmilld (pid P)", the pid as the holder wrote it (omitted when
  // unreadable).
  static absl::StatusOr<std::unique_ptr<DataDirLock>> Acquire(
      const std::filesystem::path& data_dir);

  ~DataDirLock();  // closes the file, which releases the lock
  DataDirLock(const DataDirLock&) = delete;
  DataDirLock& operator=(const DataDirLock&) = delete;

 private:
  explicit DataDirLock(int fd) : fd_(fd) {}
  int fd_;
};

// The message of a refused data dir, shared with the store's mapping of
// RocksDB's own LOCK failure. pid <= 0 omits the pid.
absl::Status DataDirInUseError(const std::filesystem::path& data_dir, long pid);

// The pid written in <data_dir>/tokenmilld.lock, or 0 when there is none.
long ReadLockHolderPid(const std::filesystem::path& data_dir);

}  // namespace tokenmill::storage
