// Supervisor: the daemon's main thread after start-up. Waits for signals and
// drives the lifecycle with systemd: READY, RELOADING, STOPPING and WATCHDOG
// notifications, SIGHUP reloads, SIGTERM/SIGINT drain and stop.
#pragma once

#include <csignal>
#include <string>

#include "daemon/node.h"

namespace tokenmill::daemon {

// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread (and in every
// thread it starts later), so that only the supervisor's sigtimedwait sees
// them. Call first thing in main, before any thread exists.
void BlockLifecycleSignals();

// Runs until SIGTERM/SIGINT; returns the process exit status (0 after a clean
// drain). config_path is re-read on SIGHUP.
int Supervise(Node& node, const std::string& config_path);

}  // namespace tokenmill::daemon
