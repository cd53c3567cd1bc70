// tokenmilld: the per-node inference daemon.
//
// Exit status: 0 after a clean stop, 1 when start-up fails (store in use,
// store lost writes and --accept-store-loss not given, address taken, ...),
// 2 for a bad command line or configuration.
#include <cstdio>
#include <iostream>
#include <string>

#include "CLI/CLI.hpp"
#include "config/node_config.h"
#include "daemon/logging.h"
#include "daemon/node.h"
#include "daemon/supervisor.h"
#include "spdlog/spdlog.h"
#include "tokenmill/version.h"

int main(int argc, char** argv) {
  // Before any thread exists, so that every thread inherits the mask.
  tokenmill::daemon::BlockLifecycleSignals();

  CLI::App app{"tokenmilld: per-node inference runtime"};
  std::string config_path = "/etc/tokenmill/tokenmill.toml";
  bool check_config = false;
  bool accept_store_loss = false;
  std::string log_level = "info";
  std::string log_target = "auto";
  app.add_option("-c,--config", config_path, "configuration file")->capture_default_str();
  app.add_flag("--check-config", check_config, "validate the configuration and exit");
  app.add_flag("--accept-store-loss", accept_store_loss,
               "start even though the metering store's write-ahead log lost acknowledged "
               "writes (damaged, cut short or deleted): recover what is left and record the "
               "loss (log, tokenmill_store_accepted_losses_total, /control/v1/node store); "
               "without it such a start fails with exit status 1 naming the file and offset");
  app.add_option("--log-level", log_level, "trace|debug|info|warn|error")->capture_default_str();
  app.add_option("--log-target", log_target, "auto|stderr|journald")
      ->check(CLI::IsMember({"auto", "stderr", "journald"}))
      ->capture_default_str();
  app.set_version_flag("--version", std::string("tokenmilld ") + tokenmill::kVersion + " (" +
                                        tokenmill::kRevision + ")");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }

  auto config = tokenmill::config::LoadConfigFile(config_path);
  if (!config.ok()) {
    std::fprintf(stderr, "tokenmilld: invalid configuration:\n%s\n",
                 std::string(config.status().message()).c_str());
    return 2;
  }
  if (check_config) {
    std::printf("%s: configuration OK (sha256 %s)\n", config_path.c_str(), config->digest.c_str());
    return 0;
  }

  using tokenmill::daemon::LogTarget;
  LogTarget target = log_target == "stderr"     ? LogTarget::kStderr
                     : log_target == "journald" ? LogTarget::kJournald
                                                : LogTarget::kAuto;
  if (auto status = tokenmill::daemon::SetupLogging(log_level, target); !status.ok()) {
    std::fprintf(stderr, "tokenmilld: %s\n", std::string(status.message()).c_str());
    return 2;
  }
  spdlog::info("starting version={} revision={} config={} digest={}", tokenmill::kVersion,
               tokenmill::kRevision, config_path, config->digest);

  tokenmill::daemon::NodeStartOptions start_options;
  start_options.accept_store_loss = accept_store_loss;
  auto node = tokenmill::daemon::Node::Start(std::move(*config), start_options);
  if (!node.ok()) {
    spdlog::critical("start_failed error=\"{}\"", std::string(node.status().message()));
    std::fprintf(stderr, "tokenmilld: cannot start: %s\n",
                 std::string(node.status().message()).c_str());
    return 1;
  }
  return tokenmill::daemon::Supervise(**node, config_path);
}
