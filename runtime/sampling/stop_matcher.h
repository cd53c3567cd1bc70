// Streams decoded text while watching for stop strings, so a client never sees any part of one.
#ifndef TOKENMILL_RUNTIME_SAMPLING_STOP_MATCHER_H_
#define TOKENMILL_RUNTIME_SAMPLING_STOP_MATCHER_H_

#include <string>
#include <string_view>
#include <vector>

namespace tokenmill::sampling {

// What a Feed or Flush lets the caller emit.
struct StopMatch {
  // Text safe to send now; valid until the next call on the StopMatcher.
  std::string_view text;
  // True once a stop string was found: `text` ends right before it and generation should end.
  bool stopped = false;
  // Index into the stop strings of the one that matched (earliest start, then list order); -1.
  int stop_index = -1;
};

// Holds back only the longest suffix of the text that could still begin a stop string; everything
// before it is emitted. The earliest-starting stop wins. Empty stop strings are ignored.
// Not thread-safe; one per sequence. Buffers are reused, so steady streaming does not allocate.
class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stops);

  // Adds the next decoded piece. After a stop was hit, returns empty text and stopped = true.
  StopMatch Feed(std::string_view piece);

  // End of generation without a stop: returns the held-back text.
  StopMatch Flush();

  // Bytes currently held back.
  size_t held_bytes() const { return pending_.size(); }
  bool stopped() const { return stopped_; }

 private:
  // Length of the longest suffix of pending_ that is a proper prefix of some stop string.
  size_t HoldbackLength() const;
  StopMatch Emit(size_t bytes, bool stopped, int stop_index);

  std::vector<std::string> stops_;
  size_t longest_stop_ = 0;
  std::string pending_;  // text not yet emitted
  std::string emitted_;  // backing store of the last returned text
  bool stopped_ = false;
  int stop_index_ = -1;
};

}  // namespace tokenmill::sampling

#endif  // TOKENMILL_RUNTIME_SAMPLING_STOP_MATCHER_H_
