// Helpers shared by the config tests.
#pragma once

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "config/node_config.h"
#include "tests/support/temp_dir.h"

namespace tokenmill::config::testing {

// The source name every test text is parsed under.
inline constexpr std::string_view kSource = "t.toml";

// The error message of parsing `text`, or "OK" when it parses.
inline std::string ErrorsOf(std::string_view text) {
  absl::StatusOr<NodeConfig> config = ParseConfig(text, kSource);
  if (config.ok()) return "OK";
  return std::string(config.status().message());
}

using ::tokenmill::testing::TempDir;

}  // namespace tokenmill::config::testing
