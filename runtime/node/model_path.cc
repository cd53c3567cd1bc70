#include "runtime/node/model_path.h"

#include <sys/stat.h>

#include <string>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace tokenmill::runtime {
namespace {

namespace fs = std::filesystem;

std::string TypeName(fs::file_type type) {
  switch (type) {
    case fs::file_type::character:
      return "a character device";
    case fs::file_type::block:
      return "a block device";
    case fs::file_type::fifo:
      return "a FIFO";
    case fs::file_type::socket:
      return "a socket";
    default:
      return "not a regular file";
  }
}

// `path` is canonical; true when it is a root or below one.
bool Inside(const fs::path& path, const std::vector<fs::path>& roots) {
  const std::string p = path.string();
  for (const fs::path& root : roots) {
    std::string r = root.string();
    if (p == r) return true;
    if (!r.ends_with('/')) r += '/';
    if (p.starts_with(r)) return true;
  }
  return false;
}

// The roots that exist, canonical. Resolved per load so that a root made
// (or re-pointed) after start counts.
std::vector<fs::path> CanonicalRoots(const std::vector<fs::path>& roots) {
  std::vector<fs::path> out;
  for (const fs::path& root : roots) {
    std::error_code ec;
    fs::path canonical = fs::canonical(root, ec);
    if (!ec) out.push_back(std::move(canonical));
  }
  return out;
}

absl::Status Unavailable(const fs::path& path, const std::vector<fs::path>& roots) {
  std::vector<std::string> names;
  for (const fs::path& r : roots) names.push_back(r.string());
  return absl::NotFoundError(
      absl::StrCat("no model file ", path.string(), " under the model roots (",
                   names.empty() ? "none configured" : absl::StrJoin(names, ", "),
                   "): it does not exist or resolves outside them ([node] model_roots)"));
}

absl::Status NotRegular(const fs::path& path, fs::file_type type) {
  return absl::InvalidArgumentError(absl::StrCat(
      "model path ", path.string(), " is ", TypeName(type),
      "; a model is a regular file (GGUF) or a directory of regular files (safetensors)"));
}

}  // namespace

absl::StatusOr<fs::path> ResolveModelPath(const fs::path& path, const ModelPathPolicy& policy) {
  const std::string& text = path.native();
  if (text.empty()) return absl::InvalidArgumentError("model path is empty");
  if (text.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError("model path must not contain NUL bytes");
  }
  if (!path.is_absolute()) {
    return absl::InvalidArgumentError(
        absl::StrCat("model path ", text,
                     " is relative; give an absolute path (the daemon's working directory is "
                     "not the caller's)"));
  }
  std::optional<std::vector<fs::path>> roots;
  if (policy.roots) roots = CanonicalRoots(*policy.roots);

  std::error_code ec;
  fs::path canonical = fs::canonical(path, ec);
  if (ec) {
    if (roots) return Unavailable(path, *policy.roots);
    return absl::NotFoundError(absl::StrCat("model file ", text, ": ", ec.message()));
  }
  if (roots && !Inside(canonical, *roots)) return Unavailable(path, *policy.roots);

  // canonical() resolved every symlink, so status() here is the file's own.
  const fs::file_status status = fs::status(canonical, ec);
  if (ec) return absl::NotFoundError(absl::StrCat("model file ", text, ": ", ec.message()));
  if (fs::is_regular_file(status)) return canonical;
  if (!fs::is_directory(status)) return NotRegular(canonical, status.type());

  // A safetensors directory: the loader opens files in it by name.
  for (const fs::directory_entry& entry : fs::directory_iterator(canonical, ec)) {
    std::error_code entry_ec;
    fs::path target = fs::canonical(entry.path(), entry_ec);
    // A link out of the roots and a dangling link get the same answer, so
    // that links cannot probe which files exist outside.
    if (roots && (entry_ec || !Inside(target, *roots))) {
      return absl::InvalidArgumentError(
          absl::StrCat("model directory entry ", entry.path().string(),
                       " does not resolve to a file inside the model roots"));
    }
    if (entry_ec) continue;  // a dangling link: the loader reports it if it needs it
    const fs::file_status s = fs::status(target, entry_ec);
    if (entry_ec) continue;
    if (!fs::is_regular_file(s) && !fs::is_directory(s)) return NotRegular(entry.path(), s.type());
  }
  if (ec) {
    return absl::NotFoundError(
        absl::StrCat("model directory ", canonical.string(), ": ", ec.message()));
  }
  return canonical;
}

}  // namespace tokenmill::runtime
