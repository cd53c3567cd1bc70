// `tokenmill ledger export`: the per-request ledger from GET
// /control/v1/ledger to stdout, page by page, resumable with a cursor file.
#pragma once

#include <cstdint>
#include <string>

#include "CLI/CLI.hpp"
#include "daemon/cli/control_client.h"

namespace tokenmill::cli {

class LedgerCommands {
 public:
  // Adds the subcommands to app; app must outlive this object.
  explicit LedgerCommands(CLI::App& app);

  // Runs the export when it was parsed and returns its exit status (0 done,
  // 1 failed), or -1 when it was not.
  int Run(ControlClient& client);

 private:
  int Export(ControlClient& client);

  std::string tenant_;
  std::string model_;
  std::string from_;
  std::string to_;
  std::string format_ = "jsonl";
  std::string cursor_file_;
  uint64_t limit_ = 0;
  uint64_t page_records_ = 1000;
  CLI::App* export_cmd_ = nullptr;
};

}  // namespace tokenmill::cli
