// DaemonProcess: the real tokenmilld binary started on a temp dir, a temp
// socket and port 0, with a notify socket so readiness is what systemd sees.
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "tests/integration/process_util.h"
#include "tests/support/http_client.h"

namespace tokenmill::testing {

std::string TokenmilldPath();    // the built daemon
std::string TokenmillCliPath();  // the built CLI

struct DaemonOptions {
  std::string name = "itest";             // [node] name
  std::string node_toml = "";             // extra lines in [node]
  std::string metrics_toml = "";          // extra lines in [metrics]
  std::string api_toml = "";              // extra lines in [api]
  std::string extra_toml = "";            // appended to the generated config
  std::chrono::microseconds watchdog{0};  // WATCHDOG_USEC when > 0
  std::filesystem::path data_dir = {};    // default: <dir>/data
  std::filesystem::path socket = {};      // default: <dir>/tokenmill.sock
  std::vector<std::string> extra_args = {};
  std::string idle_timeout = "1s";  // [api] idle_timeout
  std::string binary = "";          // default: TokenmilldPath()
};

class DaemonProcess {
 public:
  // dir holds the config, data, socket, notify socket and logs.
  DaemonProcess(const std::filesystem::path& dir, DaemonOptions options = {});

  // Starts the daemon and waits for READY=1 (false if it exits or times out).
  bool Start(std::chrono::milliseconds timeout = std::chrono::seconds(30));
  // SIGTERM, then the exit status.
  std::optional<int> Stop(std::chrono::milliseconds timeout = std::chrono::seconds(30));

  CurlResult Control(const std::string& method, const std::string& path,
                     const std::string& body = "");
  // "127.0.0.1:PORT" of /metrics, read from /control/v1/node.
  std::string MetricsAddress();
  // The bound port of the [api] tcp listener ("" when off).
  std::string ApiTcpPort();
  // Polls /control/v1/models/ID until its state is "ready".
  bool WaitModelReady(const std::string& id,
                      std::chrono::milliseconds timeout = std::chrono::seconds(30));

  Subprocess& process() { return *process_; }
  NotifySocket& notify() { return *notify_; }
  const std::filesystem::path& config_path() const { return config_path_; }
  const std::filesystem::path& socket_path() const { return options_.socket; }
  const std::filesystem::path& data_dir() const { return options_.data_dir; }
  std::string Stderr() const;
  // The config text this daemon was started with (without extra_toml).
  std::string BaseConfig() const;

 private:
  std::filesystem::path dir_;
  DaemonOptions options_;
  std::filesystem::path config_path_;
  std::unique_ptr<NotifySocket> notify_;
  std::unique_ptr<Subprocess> process_;
};

}  // namespace tokenmill::testing
