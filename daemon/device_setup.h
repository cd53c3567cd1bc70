// The node's device backends: the compiled-in CPU and CUDA and the device
// plugins the config names ([node] device_plugins), in one registry that
// the composition root (daemon/node.cc) owns and passes to discovery, the
// instance manager and the control API.
#pragma once

#include <memory>

#include "config/node_config.h"
#include "devices/backend.h"

namespace tokenmill::daemon {

// The registry with the compiled-in backends and every plugin that loads.
// A plugin that is refused (untrusted path, wrong ABI major, no entry point,
// plugin_create failed, a kind already taken) is logged with the reason
// (`device_plugin_refused`) and left out: the node starts without it.
std::unique_ptr<devices::BackendRegistry> MakeBackendRegistry(const config::NodeConfig& config);

}  // namespace tokenmill::daemon
