#include "daemon/cli/progress.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace tokenmill::cli {

std::string ProgressBarText(double fraction, int width) {
  if (!(fraction >= 0.0)) fraction = 0.0;  // NaN too
  fraction = std::min(fraction, 1.0);
  width = std::max(width, 1);
  const int filled = static_cast<int>(std::floor(fraction * width));
  char percent[16];
  std::snprintf(percent, sizeof(percent), "] %3d%%", static_cast<int>(std::floor(fraction * 100)));
  return "[" + std::string(filled, '#') + std::string(width - filled, '-') + percent;
}

std::string LoadProgress::Update(double fraction) {
  if (!(fraction >= 0.0)) fraction = 0.0;
  fraction = std::min(fraction, 1.0);
  if (terminal_) {
    std::string bar = "loading " + label_ + " " + ProgressBarText(fraction);
    if (bar == last_bar_) return "";
    last_bar_ = bar;
    return "\r" + bar;
  }
  const int decile = static_cast<int>(std::floor(fraction * 10));
  if (decile <= last_decile_) return "";
  last_decile_ = decile;
  return "loading " + label_ + ": " + std::to_string(decile * 10) + "%\n";
}

std::string LoadProgress::Finish(bool ready) {
  std::string out;
  if (ready) out = Update(1.0);
  if (terminal_ && !last_bar_.empty()) out += "\n";
  return out;
}

}  // namespace tokenmill::cli
