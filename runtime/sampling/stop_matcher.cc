#include "runtime/sampling/stop_matcher.h"

#include <algorithm>
#include <utility>

namespace tokenmill::sampling {

StopMatcher::StopMatcher(std::vector<std::string> stops) : stops_(std::move(stops)) {
  for (const std::string& s : stops_) longest_stop_ = std::max(longest_stop_, s.size());
  pending_.reserve(2 * longest_stop_ + 64);
  emitted_.reserve(2 * longest_stop_ + 64);
}

StopMatch StopMatcher::Feed(std::string_view piece) {
  if (stopped_) return StopMatch{.text = {}, .stopped = true, .stop_index = stop_index_};
  pending_.append(piece);
  // Everything emitted so far could not start a stop, so the earliest match lies in pending_.
  size_t first = std::string::npos;
  int index = -1;
  for (size_t i = 0; i < stops_.size(); ++i) {
    if (stops_[i].empty()) continue;
    const size_t at = pending_.find(stops_[i]);
    if (at < first) {
      first = at;
      index = static_cast<int>(i);
    }
  }
  if (index >= 0) {
    stopped_ = true;
    stop_index_ = index;
    StopMatch match = Emit(first, true, index);
    pending_.clear();
    return match;
  }
  return Emit(pending_.size() - HoldbackLength(), false, -1);
}

StopMatch StopMatcher::Flush() {
  if (stopped_) return StopMatch{.text = {}, .stopped = true, .stop_index = stop_index_};
  return Emit(pending_.size(), false, -1);
}

size_t StopMatcher::HoldbackLength() const {
  const std::string_view text(pending_);
  const size_t limit = std::min(text.size(), longest_stop_ == 0 ? 0 : longest_stop_ - 1);
  for (size_t len = limit; len > 0; --len) {
    const std::string_view suffix = text.substr(text.size() - len);
    for (const std::string& s : stops_) {
      if (s.size() > len && std::string_view(s).substr(0, len) == suffix) return len;
    }
  }
  return 0;
}

StopMatch StopMatcher::Emit(size_t bytes, bool stopped, int stop_index) {
  emitted_.assign(pending_, 0, bytes);
  pending_.erase(0, bytes);
  return StopMatch{.text = emitted_, .stopped = stopped, .stop_index = stop_index};
}

}  // namespace tokenmill::sampling
