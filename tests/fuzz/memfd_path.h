// MemoryFile: fuzz input as a file that the real Open(path) functions can
// map, without touching the disk: a memfd reached as /proc/self/fd/N.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace tokenmill::fuzz {

class MemoryFile {
 public:
  // Copies `size` bytes into a new memfd. Aborts when the kernel refuses a
  // memfd: the harness cannot run at all then, which is not a finding.
  MemoryFile(const uint8_t* data, size_t size);
  ~MemoryFile();
  MemoryFile(const MemoryFile&) = delete;
  MemoryFile& operator=(const MemoryFile&) = delete;

  // "/proc/self/fd/N": valid while this object lives.
  const std::string& path() const { return path_; }

 private:
  int fd_ = -1;
  std::string path_;
};

}  // namespace tokenmill::fuzz
