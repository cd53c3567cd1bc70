#include "storage/wal_marker.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "storage/wal_scan.h"

namespace tokenmill::storage {
namespace {

constexpr char kMagic[] = "TMWALMK1";
constexpr size_t kMagicBytes = 8;
constexpr size_t kMarkerBytes = kMagicBytes + 3 * 8 + 4;

void PutFixed64(char* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(v >> (8 * i));
}

uint64_t GetFixed64(const char* in) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(static_cast<uint8_t>(in[i])) << (8 * i);
  return v;
}

std::string Encode(const WalMarker& m) {
  std::string out(kMarkerBytes, '\0');
  std::memcpy(out.data(), kMagic, kMagicBytes);
  PutFixed64(out.data() + 8, m.wal_number);
  PutFixed64(out.data() + 16, m.previous_sequence);
  PutFixed64(out.data() + 24, m.sequence);
  const uint32_t crc = Crc32c(0, std::string_view(out.data(), 32));
  for (int i = 0; i < 4; ++i) out[32 + i] = static_cast<char>(crc >> (8 * i));
  return out;
}

absl::Status Errno(const char* what, const std::filesystem::path& path) {
  const int e = errno;
  return absl::InternalError(absl::StrCat(what, " ", path.string(), ": ", std::strerror(e)));
}

}  // namespace

absl::StatusOr<std::optional<WalMarker>> ReadWalMarker(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return std::nullopt;
    return Errno("cannot open", path);
  }
  char buf[kMarkerBytes + 1];
  ssize_t n;
  do {
    n = ::pread(fd, buf, sizeof(buf), 0);
  } while (n < 0 && errno == EINTR);
  const int read_errno = errno;
  ::close(fd);
  if (n < 0) {
    errno = read_errno;
    return Errno("cannot read", path);
  }
  const auto bad = [&](const std::string& why) {
    return absl::DataLossError(
        absl::StrCat("the WAL marker ", path.string(), " is damaged (", why, ")"));
  };
  if (static_cast<size_t>(n) != kMarkerBytes) {
    return bad(absl::StrCat(n, " bytes instead of ", kMarkerBytes));
  }
  if (std::memcmp(buf, kMagic, kMagicBytes) != 0) return bad("not a marker");
  uint32_t crc = 0;
  for (int i = 0; i < 4; ++i)
    crc |= static_cast<uint32_t>(static_cast<uint8_t>(buf[32 + i])) << (8 * i);
  if (crc != Crc32c(0, std::string_view(buf, 32))) return bad("checksum mismatch");
  WalMarker m;
  m.wal_number = GetFixed64(buf + 8);
  m.previous_sequence = GetFixed64(buf + 16);
  m.sequence = GetFixed64(buf + 24);
  return m;
}

absl::StatusOr<std::unique_ptr<WalMarkerFile>> WalMarkerFile::Open(
    const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0640);
  if (fd < 0) return Errno("cannot open", path);
  return std::unique_ptr<WalMarkerFile>(new WalMarkerFile(fd, path));
}

WalMarkerFile::~WalMarkerFile() { ::close(fd_); }

absl::Status WalMarkerFile::Write(const WalMarker& marker) {
  const std::string bytes = Encode(marker);
  ssize_t n;
  do {
    n = ::pwrite(fd_, bytes.data(), bytes.size(), 0);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return Errno("cannot write", path_);
  if (static_cast<size_t>(n) != bytes.size()) {
    return absl::InternalError(absl::StrCat("short write to ", path_.string()));
  }
  return absl::OkStatus();
}

absl::Status WalMarkerFile::WriteAndSync(const WalMarker& marker) {
  if (absl::Status s = Write(marker); !s.ok()) return s;
  if (::fdatasync(fd_) != 0) return Errno("cannot sync", path_);
  return absl::OkStatus();
}

}  // namespace tokenmill::storage
