#include "runtime/tokenizer/special_tokens.h"

#include <algorithm>
#include <utility>

namespace tokenmill::tokenizer {

void SpecialTokenMatcher::Add(std::string text, int32_t id, bool control) {
  if (text.empty()) return;
  const uint8_t first = static_cast<uint8_t>(text[0]);
  by_first_byte_[first].push_back(Entry{std::move(text), id, control});
  ++count_;
}

void SpecialTokenMatcher::Finish() {
  for (auto& entries : by_first_byte_) {
    // Longest first; among equal texts the lowest id wins.
    std::stable_sort(entries.begin(), entries.end(),
                     [](const Entry& a, const Entry& b) { return a.text.size() > b.text.size(); });
  }
}

SpecialTokenMatcher::Match SpecialTokenMatcher::MatchAt(std::string_view text, size_t pos,
                                                        bool include_control) const {
  const std::string_view rest = text.substr(pos);
  for (const Entry& entry : by_first_byte_[static_cast<uint8_t>(rest[0])]) {
    if (entry.control && !include_control) continue;
    if (rest.starts_with(entry.text)) return Match{entry.id, entry.text.size()};
  }
  return Match{};
}

}  // namespace tokenmill::tokenizer
