#include "daemon/device_setup.h"

#include <string>
#include <utility>

#include "devices/plugin/plugin_backend.h"
#include "runtime/node/device_backends.h"
#include "spdlog/spdlog.h"

namespace tokenmill::daemon {

std::unique_ptr<devices::BackendRegistry> MakeBackendRegistry(const config::NodeConfig& config) {
  auto registry = std::make_unique<devices::BackendRegistry>();
  // Two fixed, distinct kinds into an empty registry: cannot collide.
  (void)runtime::AddBuiltinBackends(*registry);
  for (const std::filesystem::path& path : config.node.device_plugins) {
    devices::PluginLoadOptions options;
    const std::string name = path.filename().string();
    options.log = [name](int level, std::string_view message) {
      const auto spd = level >= 3   ? spdlog::level::err
                       : level == 2 ? spdlog::level::warn
                       : level == 1 ? spdlog::level::info
                                    : spdlog::level::debug;
      spdlog::log(spd, "device_plugin_log plugin={} message=\"{}\"", name, message);
    };
    absl::StatusOr<devices::DeviceBackendPtr> backend =
        devices::LoadDevicePlugin(path, std::move(options));
    if (!backend.ok()) {
      spdlog::error("device_plugin_refused path={} reason=\"{}\"", path.string(),
                    std::string(backend.status().message()));
      continue;
    }
    const std::string kind = (*backend)->kind();
    if (absl::Status s = registry->Add(std::move(*backend)); !s.ok()) {
      spdlog::error("device_plugin_refused path={} reason=\"{}\"", path.string(),
                    std::string(s.message()));
      continue;
    }
    spdlog::info("device_plugin_loaded path={} kind={}", path.string(), kind);
  }
  return registry;
}

}  // namespace tokenmill::daemon
