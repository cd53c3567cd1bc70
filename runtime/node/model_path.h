// Model paths: what a load may open. A path is resolved to its canonical
// form (absolute, symlinks and ".." resolved) before anything else, so the
// path kept and shown is the file that was opened. Paths from the control
// API must resolve inside a model root; paths the operator wrote in the
// config are trusted. Only regular files (a GGUF) or directories of regular
// files (safetensors) are accepted, never a device, FIFO or socket, so that
// a load never blocks opening a FIFO or reads /dev/zero forever.
//
// Runs on the caller's thread (the HTTP loop): a few stat() calls, no open().
#pragma once

#include <filesystem>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"

namespace tokenmill::runtime {

struct ModelPathPolicy {
  // Directories API loads must resolve into (each resolved itself; roots
  // that do not exist are skipped). nullopt: no root check (config models).
  std::optional<std::vector<std::filesystem::path>> roots;
};

// The canonical path of a model file or safetensors directory, or:
// kInvalidArgument for a NUL byte, a relative path, or a file that is not a
// regular file or directory (naming its type); kNotFound when it does not
// exist or, under roots, when it does not resolve inside one: the two give
// the same message, so that an API caller cannot learn which files exist
// outside the roots. Inside a directory, each entry must be a regular file
// or a directory resolving inside the roots too.
absl::StatusOr<std::filesystem::path> ResolveModelPath(const std::filesystem::path& path,
                                                       const ModelPathPolicy& policy);

}  // namespace tokenmill::runtime
