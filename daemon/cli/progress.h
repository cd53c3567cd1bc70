// LoadProgress: what `tokenmill models load` writes to stderr while a model
// loads. A terminal gets one bar redrawn in place with "\r"; a log or a pipe
// gets a line each time the load passes another 10%, so it stays readable.
#pragma once

#include <string>

namespace tokenmill::cli {

// "[##########----------]  50%": `width` cells, the fraction clamped to 0..1.
std::string ProgressBarText(double fraction, int width = 30);

// Pure: returns the text to write, so tests read it. Not thread-safe.
class LoadProgress {
 public:
  LoadProgress(std::string label, bool terminal) : label_(std::move(label)), terminal_(terminal) {}

  // The text for a new fraction (0..1), "" when nothing needs writing.
  std::string Update(double fraction);
  // The text that ends the display once the load is over ("" if none).
  std::string Finish(bool ready);

 private:
  std::string label_;
  bool terminal_ = false;
  std::string last_bar_;  // terminal: the bar last drawn
  int last_decile_ = -1;  // not a terminal: the last 10% step reported
};

}  // namespace tokenmill::cli
