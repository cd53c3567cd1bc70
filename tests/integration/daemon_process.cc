#include "tests/integration/daemon_process.h"

#include <signal.h>

#include <map>

#include <thread>
#include "nlohmann/json.hpp"

namespace tokenmill::testing {

std::string TokenmilldPath() { return std::string(TOKENMILL_BINARY_DIR) + "/daemon/tokenmilld"; }
std::string TokenmillCliPath() {
  return std::string(TOKENMILL_BINARY_DIR) + "/daemon/cli/tokenmill";
}

DaemonProcess::DaemonProcess(const std::filesystem::path& dir, DaemonOptions options)
    : dir_(dir), options_(std::move(options)), config_path_(dir / "tokenmill.toml") {
  if (options_.data_dir.empty()) options_.data_dir = dir / "data";
  if (options_.socket.empty()) options_.socket = dir / "tokenmill.sock";
  WriteFile(config_path_, BaseConfig() + options_.extra_toml);
}

std::string DaemonProcess::BaseConfig() const {
  return "[node]\nname = \"" + options_.name + "\"\ndata_dir = \"" + options_.data_dir.string() +
         "\"\n" + options_.node_toml + "\n[api]\nsocket = \"" + options_.socket.string() +
         "\"\nidle_timeout = \"" + options_.idle_timeout + "\"\n" + options_.api_toml +
         "\n[metrics]\nlisten = \"127.0.0.1:0\"\n"
         "device_sample_interval = \"200ms\"\n" +
         options_.metrics_toml + "\n";
}

bool DaemonProcess::Start(std::chrono::milliseconds timeout) {
  notify_ = std::make_unique<NotifySocket>(dir_ / "notify.sock");
  std::map<std::string, std::string> env = {{"NOTIFY_SOCKET", notify_->path()}};
  if (options_.watchdog.count() > 0)
    env["WATCHDOG_USEC"] = std::to_string(options_.watchdog.count());
  std::vector<std::string> argv = {options_.binary.empty() ? TokenmilldPath() : options_.binary,
                                   "--config", config_path_.string(), "--log-target", "stderr"};
  argv.insert(argv.end(), options_.extra_args.begin(), options_.extra_args.end());
  process_ = std::make_unique<Subprocess>(argv, env, dir_ / "stdout.log", dir_ / "stderr.log",
                                          options_.watchdog.count() > 0);
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (notify_->WaitFor("READY=1", std::chrono::milliseconds(200))) return true;
    if (!process_->running()) return false;
  }
  return false;
}

std::optional<int> DaemonProcess::Stop(std::chrono::milliseconds timeout) {
  process_->Signal(SIGTERM);
  return process_->Wait(timeout);
}

CurlResult DaemonProcess::Control(const std::string& method, const std::string& path,
                                  const std::string& body) {
  return CurlRequest("http://localhost" + path, options_.socket.string(), method, body);
}

std::string DaemonProcess::MetricsAddress() {
  auto node = Control("GET", "/control/v1/node");
  auto json = nlohmann::json::parse(node.body, nullptr, false);
  if (json.is_discarded()) return "";
  return json["metrics"].value("listen", "");
}

std::string DaemonProcess::Stderr() const { return ReadFile(dir_ / "stderr.log"); }

std::string DaemonProcess::ApiTcpPort() {
  const auto node = nlohmann::json::parse(Control("GET", "/control/v1/node").body, nullptr, false);
  if (node.is_discarded() || !node.contains("api") || !node["api"]["tcp"].is_string()) return "";
  const std::string tcp = node["api"]["tcp"];
  const size_t colon = tcp.rfind(':');
  return colon == std::string::npos ? "" : tcp.substr(colon + 1);
}

bool DaemonProcess::WaitModelReady(const std::string& id, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    auto r = Control("GET", "/control/v1/models/" + id);
    if (r.status == 200 &&
        nlohmann::json::parse(r.body, nullptr, false).value("state", "") == "ready") {
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

}  // namespace tokenmill::testing
