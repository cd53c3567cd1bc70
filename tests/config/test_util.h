// Helpers shared by the config tests.
#pragma once

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "config/node_config.h"

namespace tokenmill::config::testing {

// The source name every test text is parsed under.
inline constexpr std::string_view kSource = "t.toml";

// The error message of parsing `text`, or "OK" when it parses.
inline std::string ErrorsOf(std::string_view text) {
  absl::StatusOr<NodeConfig> config = ParseConfig(text, kSource);
  if (config.ok()) return "OK";
  return std::string(config.status().message());
}

// A fresh directory under /tmp, removed with its contents at scope exit.
class TempDir {
 public:
  TempDir() {
    std::string pattern = "/tmp/tokenmill-config-test-XXXXXX";
    path_ = mkdtemp(pattern.data()) ? pattern : "";
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ignored;
    if (!path_.empty()) std::filesystem::remove_all(path_, ignored);
  }
  const std::filesystem::path& path() const { return path_; }

  // Writes `text` to `name` inside the directory and returns its path.
  std::filesystem::path Write(const std::string& name, std::string_view text) const {
    const std::filesystem::path file = path_ / name;
    std::ofstream(file, std::ios::binary) << text;
    return file;
  }

 private:
  std::filesystem::path path_;
};

}  // namespace tokenmill::config::testing
