// The CLI's metering commands: `tokenmill usage`, the store's usage by hour,
// day or in total as a table, CSV or JSON; and `tokenmill top`, live rates per
// model and tenant from two scrapes of the daemon's /metrics.
#pragma once

#include <string>

#include "CLI/CLI.hpp"
#include "daemon/cli/control_client.h"
#include "daemon/cli/usage_view.h"

namespace tokenmill::cli {

class UsageCommands {
 public:
  // Adds the subcommands to app; app must outlive this object.
  explicit UsageCommands(CLI::App& app);

  // Runs whichever of the commands was parsed and returns its exit status
  // (0 done, 1 failed, 2 bad flags), or -1 when none of them was. as_json:
  // print the daemon's JSON instead of a table (usage only).
  int Run(ControlClient& client, bool as_json, long timeout_ms);

 private:
  int Usage(ControlClient& client, bool as_json);
  int Top(ControlClient& client, long timeout_ms);

  UsageFlags usage_;
  std::string interval_ = "1s";
  std::string metrics_address_;  // --metrics; default: the node's metrics.listen
  bool once_ = false;

  CLI::App* usage_cmd_ = nullptr;
  CLI::App* top_cmd_ = nullptr;
};

}  // namespace tokenmill::cli
