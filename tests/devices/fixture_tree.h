// Test helpers: a writable copy of a fixture tree, and a clock tests move.
#pragma once

#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>

#include "devices/power_meter.h"
#include "gtest/gtest.h"
#include "tests/support/temp_dir.h"

namespace tokenmill::devices::testing {

// A copy of tests/devices/fixtures/<name> in a fresh directory under /tmp,
// removed with the object, so tests may rewrite counters in it.
class FixtureTree {
 public:
  explicit FixtureTree(const std::string& name) {
    if (!name.empty()) {
      std::filesystem::copy(
          std::filesystem::path(TOKENMILL_SOURCE_DIR) / "tests/devices/fixtures" / name,
          dir_.path(), std::filesystem::copy_options::recursive);
    }
  }

  const std::filesystem::path& root() const { return dir_.path(); }

  // Replaces the file at `relative` (creating folders) with `text`.
  void Write(const std::filesystem::path& relative, const std::string& text) const {
    dir_.Write(relative, text);
  }

  void Remove(const std::filesystem::path& relative) const {
    std::filesystem::remove_all(dir_.path() / relative);
  }

 private:
  ::tokenmill::testing::TempDir dir_;
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
