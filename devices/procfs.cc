#include "devices/procfs.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace tokenmill::devices {

absl::StatusOr<std::string> ReadTextFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::in | std::ios::binary);
  if (!in.is_open()) {
    const int err = errno;
    const std::string what = absl::StrCat("cannot open ", path.string(), ": ", std::strerror(err));
    if (err == ENOENT || err == ENOTDIR) return absl::NotFoundError(what);
    if (err == EACCES || err == EPERM) return absl::PermissionDeniedError(what);
    return absl::UnavailableError(what);
  }
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return absl::UnavailableError(absl::StrCat("cannot read ", path.string()));
  return text;
}

absl::StatusOr<std::string> ReadFirstLine(const std::filesystem::path& path) {
  absl::StatusOr<std::string> text = ReadTextFile(path);
  if (!text.ok()) return text.status();
  absl::string_view view = *text;
  view = view.substr(0, view.find('\n'));
  return std::string(absl::StripAsciiWhitespace(view));
}

absl::StatusOr<uint64_t> ReadUint64File(const std::filesystem::path& path) {
  absl::StatusOr<std::string> line = ReadFirstLine(path);
  if (!line.ok()) return line.status();
  uint64_t value = 0;
  if (!absl::SimpleAtoi(*line, &value)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path.string(), ": expected an unsigned number, got '", *line, "'"));
  }
  return value;
}

absl::StatusOr<int64_t> ReadInt64File(const std::filesystem::path& path) {
  absl::StatusOr<std::string> line = ReadFirstLine(path);
  if (!line.ok()) return line.status();
  int64_t value = 0;
  if (!absl::SimpleAtoi(*line, &value)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path.string(), ": expected a number, got '", *line, "'"));
  }
  return value;
}

}  // namespace tokenmill::devices
