#include "runtime/tokenizer/pre_tokenizer.h"

#include <algorithm>

namespace tokenmill::tokenizer {
namespace {

// Read-only view of decoded text with the class queries the regexes use.
// Positions past the end answer false, which is what a regex sees there.
class UnitScanner {
 public:
  explicit UnitScanner(const std::vector<TextUnit>& units)
      : units_(units.data()), size_(units.size()) {}

  size_t size() const { return size_; }
  int32_t cp(size_t i) const { return i < size_ ? units_[i].cp : kInvalidCodePoint; }
  bool Letter(size_t i) const { return i < size_ && (units_[i].cls & kLetter); }
  bool Number(size_t i) const { return i < size_ && (units_[i].cls & kNumber); }
  bool Space(size_t i) const { return i < size_ && (units_[i].cls & kSpace); }
  // [^\s\p{L}\p{N}]
  bool Other(size_t i) const { return i < size_ && units_[i].cls == 0; }
  bool Newline(size_t i) const { return cp(i) == '\r' || cp(i) == '\n'; }

  size_t LetterRun(size_t i) const {
    while (Letter(i)) ++i;
    return i;
  }
  size_t NumberRun(size_t i) const {
    while (Number(i)) ++i;
    return i;
  }
  size_t OtherRun(size_t i) const {
    while (Other(i)) ++i;
    return i;
  }
  size_t SpaceRun(size_t i) const {
    while (Space(i)) ++i;
    return i;
  }

  // 's|'t|'re|'ve|'m|'ll|'d at i: the end of the match, or 0 for none.
  size_t Contraction(size_t i, bool ignore_case) const {
    if (cp(i) != '\'') return 0;
    const int32_t a = Fold(cp(i + 1), ignore_case);
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
    const int32_t b = Fold(cp(i + 2), ignore_case);
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
    return 0;
  }

  // \s+(?!\S)|\s+ at i (i is white space): a run followed by a non-space gives
  // up its last character to the next piece, unless that would leave nothing.
  size_t TrailingSpace(size_t i) const {
    const size_t end = SpaceRun(i);
    if (end == size_ || end - 1 == i) return end;
    return end - 1;
  }

 private:
  static int32_t Fold(int32_t c, bool ignore_case) {
    return ignore_case && c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c;
  }

  const TextUnit* units_;
  size_t size_;
};

size_t MatchGpt2(const UnitScanner& s, size_t i) {
  if (size_t end = s.Contraction(i, /*ignore_case=*/false)) return end;
  // ` ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+`: classes are disjoint, so the
  // optional space is taken exactly when the next character starts a run.
  const size_t j = s.cp(i) == ' ' ? i + 1 : i;
  if (s.Letter(j)) return s.LetterRun(j);
  if (s.Number(j)) return s.NumberRun(j);
  if (s.Other(j)) return s.OtherRun(j);
  // i is white space here: a lone space was not followed by a run above.
  return s.TrailingSpace(i);
}

size_t MatchLlama3(const UnitScanner& s, size_t i, size_t max_digits) {
  if (size_t end = s.Contraction(i, /*ignore_case=*/true)) return end;
  // [^\r\n\p{L}\p{N}]?\p{L}+
  if (s.Letter(i)) return s.LetterRun(i);
  if (!s.Number(i) && !s.Newline(i) && s.Letter(i + 1)) return s.LetterRun(i + 1);
  // \p{N}{1,3} (Qwen2: \p{N})
  if (s.Number(i)) return std::min(s.NumberRun(i), i + max_digits);
  // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
  const size_t j = s.cp(i) == ' ' && s.Other(i + 1) ? i + 1 : i;
  if (s.Other(j)) {
    size_t end = s.OtherRun(j);
    while (s.Newline(end)) ++end;
    return end;
  }
  // \s*[\r\n]+ : backtracking ends the match right after the run's last newline.
  const size_t run_end = s.SpaceRun(i);
  for (size_t k = run_end; k > i; --k) {
    if (s.Newline(k - 1)) return k;
  }
  return s.TrailingSpace(i);
}

}  // namespace

void SplitWords(std::string_view text, PreTokenizer kind, std::vector<TextUnit>* units,
                std::vector<std::string_view>* words) {
  DecodeText(text, units);
  const UnitScanner scanner(*units);
  size_t i = 0;
  while (i < scanner.size()) {
    size_t end = 0;
    switch (kind) {
      case PreTokenizer::kGpt2:
        end = MatchGpt2(scanner, i);
        break;
      case PreTokenizer::kLlama3:
        end = MatchLlama3(scanner, i, 3);
        break;
      case PreTokenizer::kQwen2:
        end = MatchLlama3(scanner, i, 1);
        break;
    }
    end = std::max(end, i + 1);  // every alternative consumes; guard the loop anyway
    const size_t begin_byte = (*units)[i].offset;
    const size_t end_byte = end < scanner.size() ? (*units)[end].offset : text.size();
    words->push_back(text.substr(begin_byte, end_byte - begin_byte));
    i = end;
  }
}

}  // namespace tokenmill::tokenizer
