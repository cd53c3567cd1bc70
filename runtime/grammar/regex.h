// Code point sets, their UTF-8 automata, and the regular expression subset
// that JSON Schema `pattern` and the built-in `format`s compile from.
#pragma once

#include <cstdint>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/grammar/automaton.h"

namespace tokenmill::grammar {

// A set of Unicode scalar values as sorted, disjoint, non-adjacent ranges.
class CodepointSet {
 public:
  CodepointSet() = default;
  static CodepointSet Range(uint32_t lo, uint32_t hi);
  static CodepointSet Of(uint32_t cp) { return Range(cp, cp); }

  void Add(uint32_t lo, uint32_t hi);
  void AddSet(const CodepointSet& other);
  // All scalar values (0..0x10FFFF without surrogates) not in this set.
  CodepointSet Complement() const;
  CodepointSet Intersect(const CodepointSet& other) const;
  CodepointSet Union(const CodepointSet& other) const;
  bool empty() const { return ranges_.empty(); }
  const std::vector<std::pair<uint32_t, uint32_t>>& ranges() const { return ranges_; }

 private:
  std::vector<std::pair<uint32_t, uint32_t>> ranges_;
};

// One character of `set`, UTF-8 encoded.
NfaBuilder::Frag Utf8Set(NfaBuilder* nfa, const CodepointSet& set);

// The code points a JSON string may hold unescaped: U+0020 and above except
// '"' and '\'.
CodepointSet JsonPlainChars();

// Compiles an ECMAScript (`u` flag) regular expression, searched as JSON
// Schema's `pattern` is (unanchored unless it starts with ^ / ends with $),
// into a fragment matching the UTF-8 strings of characters from `alphabet`
// that it matches. Supported: literals, `.`, classes `[...]` / `[^...]` with
// ranges, escapes \d \D \w \W \s \S \t \n \r \f \v \0 \xHH \uHHHH \u{H..}
// and escaped punctuation, groups `(...)` / `(?:...)`, `|`, quantifiers
// * + ? {n} {n,} {n,m} (lazy forms match the same strings), ^ only at the
// start and $ only at the end. Anything else (backreferences, lookaround,
// \b, \p{..}, named groups, anchors elsewhere, counts over 1000) is
// kInvalidArgument saying what.
absl::StatusOr<NfaBuilder::Frag> CompilePattern(std::string_view pattern,
                                                const CodepointSet& alphabet, NfaBuilder* nfa);

// The strings of `body` (a fragment of byte and epsilon edges only, as
// CompilePattern builds, each character its own UTF-8 sequence) that hold
// min_chars to max_chars characters (max_chars < 0: no upper bound): body's
// states paired with a character count (a byte outside 0x80-0xBF starts a
// character), built anew. About states(body) x (bound + 1) new states;
// kInvalidArgument when body calls a rule or no string fits.
absl::StatusOr<NfaBuilder::Frag> LimitCharacters(NfaBuilder::Frag body, int32_t min_chars,
                                                 int32_t max_chars, NfaBuilder* nfa);

}  // namespace tokenmill::grammar
