// Device plugins: shared libraries built on devices/plugin/tokenmill_device.h
// alone, loaded with dlopen and served through DeviceBackend like the
// compiled-in CPU and CUDA backends. A plugin's devices are "KIND:N" where
// KIND is the kind its function table names.
//
// Who can reach this: the plugin paths come from the node config, which only
// the operator writes; a library runs with the daemon's privileges, so the
// loader refuses one that anyone else could have replaced (see
// CheckPluginPathTrusted).
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <functional>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "devices/backend.h"

namespace tokenmill::devices {

struct PluginLoadOptions {
  // Users that may own the library and every directory above it; empty:
  // root and the daemon's effective user.
  std::vector<uid_t> trusted_owners;
  // Where the plugin's log lines go (level: 0 debug .. 3 error), from any
  // thread; unset: dropped.
  std::function<void(int level, std::string_view message)> log;
};

// OK when `path` resolves (symlinks followed) to a regular file that it and
// every directory above it are owned by a trusted owner and writable by no
// one else (not by others, nor by a group other than root's), except that a
// sticky directory (such as /tmp) may be writable when the entry reached
// through it is trusted-owned, since others cannot rename or remove it. The
// directories holding the configured name are checked the same way.
// kPermissionDenied naming the offending file or directory; kNotFound when
// the path does not resolve.
absl::Status CheckPluginPathTrusted(const std::filesystem::path& path,
                                    const std::vector<uid_t>& trusted_owners);

// Loads the plugin at `path`: checks the path, dlopens the resolved file,
// resolves the one entry point, checks the ABI (major equal to ours, a table
// at least as large as ABI 1.0's, a valid kind that is not "cpu" or "cuda")
// and opens the plugin (plugin_create). kFailedPrecondition with a message
// naming the library for a wrong ABI, a missing entry point or a refused
// path; the caller logs it and goes on without the plugin.
absl::StatusOr<DeviceBackendPtr> LoadDevicePlugin(const std::filesystem::path& path,
                                                  PluginLoadOptions options = {});

}  // namespace tokenmill::devices
