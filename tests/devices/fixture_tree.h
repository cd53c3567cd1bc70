// Test helpers: a writable copy of a fixture tree, and a clock tests move.
#pragma once

#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>

#include "devices/power_meter.h"
#include "gtest/gtest.h"

namespace tokenmill::devices::testing {

// A copy of tests/devices/fixtures/<name> in a fresh directory under /tmp,
// removed with the object, so tests may rewrite counters in it.
class FixtureTree {
 public:
  explicit FixtureTree(const std::string& name) {
    std::string dir = "/tmp/tokenmill_devices_XXXXXX";
    EXPECT_NE(mkdtemp(dir.data()), nullptr);
    root_ = dir;
    if (!name.empty()) {
      std::filesystem::copy(
          std::filesystem::path(TOKENMILL_SOURCE_DIR) / "tests/devices/fixtures" / name, root_,
          std::filesystem::copy_options::recursive);
    }
  }
  ~FixtureTree() {
    std::error_code ec;
    std::filesystem::remove_all(root_, ec);
  }
  FixtureTree(const FixtureTree&) = delete;
  FixtureTree& operator=(const FixtureTree&) = delete;

  const std::filesystem::path& root() const { return root_; }

  // Replaces the file at `relative` (creating folders) with `text`.
  void Write(const std::filesystem::path& relative, const std::string& text) const {
    const std::filesystem::path path = root_ / relative;
    std::filesystem::create_directories(path.parent_path());
    std::ofstream(path, std::ios::trunc) << text;
  }

  void Remove(const std::filesystem::path& relative) const {
    std::filesystem::remove_all(root_ / relative);
  }

 private:
  std::filesystem::path root_;
};

// Steady time that only moves when the test says so.
class FakeClock {
 public:
  SteadyClock AsClock() {
    return [this] { return now_; };
  }
  void Advance(std::chrono::milliseconds ms) { now_ += ms; }

 private:
  std::chrono::steady_clock::time_point now_{std::chrono::hours(1)};
};

}  // namespace tokenmill::devices::testing
