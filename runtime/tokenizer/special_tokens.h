// SpecialTokenMatcher: finds control and user-defined token text in input, so
// that it is encoded as that one token rather than through BPE.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tokenmill::tokenizer {

class SpecialTokenMatcher {
 public:
  // One token to look for. `control`: matched only when the caller parses
  // special tokens; user-defined tokens always match.
  void Add(std::string text, int32_t id, bool control);
  // Call once after the last Add.
  void Finish();

  struct Match {
    int32_t id = -1;
    size_t length = 0;
  };
  // The longest token whose text starts at text[pos], or {-1, 0}.
  Match MatchAt(std::string_view text, size_t pos, bool include_control) const;
  // Whether a token may start with byte b: a cheap filter before MatchAt.
  bool MayStartWith(uint8_t b) const { return !by_first_byte_[b].empty(); }
  bool empty() const { return count_ == 0; }

 private:
  struct Entry {
    std::string text;
    int32_t id = -1;
    bool control = false;
  };
  std::array<std::vector<Entry>, 256> by_first_byte_;  // longest text first
  size_t count_ = 0;
};

}  // namespace tokenmill::tokenizer
