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
  // units[begin, end) as a text of its own: a regex applied to one piece
  // sees the piece's end as the end of the text.
  UnitScanner(const std::vector<TextUnit>& units, size_t begin, size_t end)
      : units_(units.data() + begin), size_(end - begin) {}

  size_t size() const { return size_; }
  int32_t cp(size_t i) const { return i < size_ ? units_[i].cp : kInvalidCodePoint; }
  bool Letter(size_t i) const { return i < size_ && (units_[i].cls & kLetter); }
  bool Number(size_t i) const { return i < size_ && (units_[i].cls & kNumber); }
  bool Space(size_t i) const { return i < size_ && (units_[i].cls & kSpace); }
  // [^\s\p{L}\p{N}]
  bool Other(size_t i) const {
    return i < size_ && (units_[i].cls & (kLetter | kNumber | kSpace)) == 0;
  }
  // [\p{L}\p{M}]
  bool LetterOrMark(size_t i) const { return i < size_ && (units_[i].cls & (kLetter | kMark)); }
  // [\p{P}\p{S}]
  bool PunctOrSymbol(size_t i) const {
    return i < size_ && (units_[i].cls & (kPunctuation | kSymbol));
  }
  bool AsciiLetter(size_t i) const {
    const int32_t c = cp(i);
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
  }
  // [!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~]: ASCII punctuation and symbols.
  bool AsciiPunct(size_t i) const {
    const int32_t c = cp(i);
    return (c >= '!' && c <= '/') || (c >= ':' && c <= '@') || (c >= '[' && c <= '`') ||
           (c >= '{' && c <= '~');
  }
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

// DeepSeek-V3's third rule at i: the end of the match, or 0 when no
// alternative matches there.
size_t MatchDeepSeekV3(const UnitScanner& s, size_t i) {
  // [!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+
  if (s.AsciiPunct(i) && s.AsciiLetter(i + 1)) {
    size_t end = i + 1;
    while (s.AsciiLetter(end)) ++end;
    return end;
  }
  // [^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+ : a mark taken as the optional
  // prefix ends the match where the run from it would.
  auto letter_marks = [&](size_t k) {
    while (s.LetterOrMark(k)) ++k;
    return k;
  };
  if (s.LetterOrMark(i)) return letter_marks(i);
  if (i < s.size() && !s.Newline(i) && !s.PunctOrSymbol(i) && s.LetterOrMark(i + 1)) {
    return letter_marks(i + 1);
  }
  // ` ?[\p{P}\p{S}]+[\r\n]*`
  const size_t j = s.cp(i) == ' ' && s.PunctOrSymbol(i + 1) ? i + 1 : i;
  if (s.PunctOrSymbol(j)) {
    size_t end = j;
    while (s.PunctOrSymbol(end)) ++end;
    while (s.Newline(end)) ++end;
    return end;
  }
  if (!s.Space(i)) return 0;
  // \s*[\r\n]+|\s+(?!\S)|\s+
  const size_t run_end = s.SpaceRun(i);
  for (size_t k = run_end; k > i; --k) {
    if (s.Newline(k - 1)) return k;
  }
  return s.TrailingSpace(i);
}

// Appends units[begin, end) as one word.
void AppendWord(std::string_view text, const std::vector<TextUnit>& units, size_t begin, size_t end,
                std::vector<std::string_view>* words) {
  if (begin >= end) return;
  const size_t begin_byte = units[begin].offset;
  const size_t end_byte = end < units.size() ? units[end].offset : text.size();
  words->push_back(text.substr(begin_byte, end_byte - begin_byte));
}

// The third rule over units[begin, end): matches and the text between them.
void SplitDeepSeekV3Rest(std::string_view text, const std::vector<TextUnit>& units, size_t begin,
                         size_t end, std::vector<std::string_view>* words) {
  const UnitScanner s(units, begin, end);
  size_t gap = 0;
  for (size_t i = 0; i < s.size();) {
    const size_t match_end = MatchDeepSeekV3(s, i);
    if (match_end == 0) {
      ++i;
      continue;
    }
    AppendWord(text, units, begin + gap, begin + i, words);
    AppendWord(text, units, begin + i, begin + match_end, words);
    i = gap = match_end;
  }
  AppendWord(text, units, begin + gap, end, words);
}

bool IsDeepSeekCjk(int32_t cp) {
  return (cp >= 0x4E00 && cp <= 0x9FA5) || (cp >= 0x3040 && cp <= 0x309F) ||
         (cp >= 0x30A0 && cp <= 0x30FF);
}

void SplitDeepSeekV3(std::string_view text, const std::vector<TextUnit>& units,
                     std::vector<std::string_view>* words) {
  const size_t n = units.size();
  auto is_number = [&](size_t i) { return (units[i].cls & kNumber) != 0; };
  for (size_t i = 0; i < n;) {
    if (is_number(i)) {  // \p{N}{1,3}
      const size_t end = std::min(n, i + 3);
      size_t k = i;
      while (k < end && is_number(k)) ++k;
      AppendWord(text, units, i, k, words);
      i = k;
      continue;
    }
    size_t stretch_end = i;  // up to the next number: the second rule's input
    while (stretch_end < n && !is_number(stretch_end)) ++stretch_end;
    for (size_t k = i; k < stretch_end;) {
      size_t cjk_end = k;
      while (cjk_end < stretch_end && IsDeepSeekCjk(units[cjk_end].cp)) ++cjk_end;
      if (cjk_end > k) {
        AppendWord(text, units, k, cjk_end, words);
        k = cjk_end;
        continue;
      }
      size_t rest_end = k;
      while (rest_end < stretch_end && !IsDeepSeekCjk(units[rest_end].cp)) ++rest_end;
      SplitDeepSeekV3Rest(text, units, k, rest_end, words);
      k = rest_end;
    }
    i = stretch_end;
  }
}

}  // namespace

void SplitWords(std::string_view text, PreTokenizer kind, std::vector<TextUnit>* units,
                std::vector<std::string_view>* words) {
  DecodeText(text, units);
  if (kind == PreTokenizer::kDeepSeekV3) {
    SplitDeepSeekV3(text, *units, words);
    return;
  }
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
      case PreTokenizer::kDeepSeekV3:
        break;  // split above
    }
    end = std::max(end, i + 1);  // every alternative consumes; guard the loop anyway
    const size_t begin_byte = (*units)[i].offset;
    const size_t end_byte = end < scanner.size() ? (*units)[end].offset : text.size();
    words->push_back(text.substr(begin_byte, end_byte - begin_byte));
    i = end;
  }
}

}  // namespace tokenmill::tokenizer
