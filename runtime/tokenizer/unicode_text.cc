#include "runtime/tokenizer/unicode_text.h"

#include <unicode/uchar.h>
#include <unicode/unorm2.h>
#include <unicode/ustring.h>

#include <array>
#include <string>

namespace tokenmill::tokenizer {
namespace {

bool IsContinuation(uint8_t b) { return (b & 0xC0) == 0x80; }

// Bytes a sequence starting with `lead` has (0: not a lead byte), and the range
// its second byte must lie in (this excludes overlong forms, surrogates and
// code points past U+10FFFF).
struct LeadInfo {
  int length = 0;
  uint8_t second_min = 0x80;
  uint8_t second_max = 0xBF;
};

LeadInfo InfoForLead(uint8_t lead) {
  if (lead >= 0xC2 && lead <= 0xDF) return {2, 0x80, 0xBF};
  if (lead == 0xE0) return {3, 0xA0, 0xBF};
  if (lead == 0xED) return {3, 0x80, 0x9F};
  if (lead >= 0xE1 && lead <= 0xEF) return {3, 0x80, 0xBF};
  if (lead == 0xF0) return {4, 0x90, 0xBF};
  if (lead >= 0xF1 && lead <= 0xF3) return {4, 0x80, 0xBF};
  if (lead == 0xF4) return {4, 0x80, 0x8F};
  return {};
}

uint8_t ClassifyWithIcu(int32_t cp) {
  switch (u_charType(cp)) {
    case U_UPPERCASE_LETTER:
    case U_LOWERCASE_LETTER:
    case U_TITLECASE_LETTER:
    case U_MODIFIER_LETTER:
    case U_OTHER_LETTER:
      return kLetter;
    case U_DECIMAL_DIGIT_NUMBER:
    case U_LETTER_NUMBER:
    case U_OTHER_NUMBER:
      return kNumber;
    case U_NON_SPACING_MARK:
    case U_ENCLOSING_MARK:
    case U_COMBINING_SPACING_MARK:
      return kMark;
    case U_DASH_PUNCTUATION:
    case U_START_PUNCTUATION:
    case U_END_PUNCTUATION:
    case U_CONNECTOR_PUNCTUATION:
    case U_OTHER_PUNCTUATION:
    case U_INITIAL_PUNCTUATION:
    case U_FINAL_PUNCTUATION:
      return kPunctuation;
    case U_MATH_SYMBOL:
    case U_CURRENCY_SYMBOL:
    case U_MODIFIER_SYMBOL:
    case U_OTHER_SYMBOL:
      return kSymbol;
    default:
      // White_Space, as \s means in the Unicode regex engines tokenizers use.
      return u_isUWhiteSpace(cp) ? kSpace : 0;
  }
}

// Normalises one run of valid UTF-8 and appends it.
bool AppendNfc(const UNormalizer2* nfc, std::string_view run, std::string* out) {
  UErrorCode status = U_ZERO_ERROR;
  int32_t utf16_length = 0;
  u_strFromUTF8(nullptr, 0, &utf16_length, run.data(), static_cast<int32_t>(run.size()), &status);
  if (status != U_BUFFER_OVERFLOW_ERROR && U_FAILURE(status)) return false;
  std::u16string utf16(static_cast<size_t>(utf16_length), u'\0');
  status = U_ZERO_ERROR;
  u_strFromUTF8(utf16.data(), utf16_length, nullptr, run.data(), static_cast<int32_t>(run.size()),
                &status);
  if (U_FAILURE(status)) return false;
  // NFC never grows a string by more than a factor of 3 (Unicode UAX #15).
  std::u16string normalized(utf16.size() * 3 + 1, u'\0');
  const int32_t length = unorm2_normalize(nfc, utf16.data(), utf16_length, normalized.data(),
                                          static_cast<int32_t>(normalized.size()), &status);
  if (U_FAILURE(status)) return false;
  int32_t utf8_length = 0;
  status = U_ZERO_ERROR;
  u_strToUTF8(nullptr, 0, &utf8_length, normalized.data(), length, &status);
  if (status != U_BUFFER_OVERFLOW_ERROR && U_FAILURE(status)) return false;
  const size_t at = out->size();
  out->resize(at + static_cast<size_t>(utf8_length));
  status = U_ZERO_ERROR;
  u_strToUTF8(out->data() + at, utf8_length, nullptr, normalized.data(), length, &status);
  if (U_FAILURE(status)) {
    out->resize(at);
    return false;
  }
  return true;
}

// ASCII classes computed once: the pre-tokenizers see mostly ASCII.
std::array<uint8_t, 128> BuildAsciiClasses() {
  std::array<uint8_t, 128> classes{};
  for (int32_t c = 0; c < 128; ++c) classes[c] = ClassifyWithIcu(c);
  return classes;
}

const std::array<uint8_t, 128>& AsciiClasses() {
  static const std::array<uint8_t, 128> classes = BuildAsciiClasses();
  return classes;
}

}  // namespace

int DecodeUtf8(std::string_view text, size_t pos, int32_t* cp) {
  const auto* bytes = reinterpret_cast<const uint8_t*>(text.data());
  const uint8_t lead = bytes[pos];
  if (lead < 0x80) {
    *cp = lead;
    return 1;
  }
  const LeadInfo info = InfoForLead(lead);
  if (info.length == 0 || pos + info.length > text.size()) {
    *cp = kInvalidCodePoint;
    return 1;
  }
  const uint8_t second = bytes[pos + 1];
  if (second < info.second_min || second > info.second_max) {
    *cp = kInvalidCodePoint;
    return 1;
  }
  int32_t value = lead & (0xFF >> (info.length + 1));
  for (int i = 1; i < info.length; ++i) {
    const uint8_t b = bytes[pos + i];
    if (!IsContinuation(b)) {
      *cp = kInvalidCodePoint;
      return 1;
    }
    value = (value << 6) | (b & 0x3F);
  }
  *cp = value;
  return info.length;
}

uint8_t ClassifyCodePoint(int32_t cp) {
  if (cp < 0) return 0;
  if (cp < 128) return AsciiClasses()[cp];
  return ClassifyWithIcu(cp);
}

void DecodeText(std::string_view text, std::vector<TextUnit>* units) {
  units->clear();
  units->reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    TextUnit unit;
    unit.offset = pos;
    unit.length = static_cast<uint8_t>(DecodeUtf8(text, pos, &unit.cp));
    unit.cls = ClassifyCodePoint(unit.cp);
    units->push_back(unit);
    pos += unit.length;
  }
}

bool NormalizeNfc(std::string_view text, std::string* out) {
  out->clear();
  // Every character below U+0300 is NFC and never combines with what
  // follows; UTF-8 lead bytes up to 0xCB encode only such characters.
  bool maybe_changes = false;
  for (char c : text) {
    if (static_cast<uint8_t>(c) >= 0xCC) {
      maybe_changes = true;
      break;
    }
  }
  // ICU counts in int32_t and NFC may triple a run: past this size (far
  // beyond any request body) the text is left as it is.
  if (!maybe_changes || text.size() > (size_t{1} << 28)) return false;
  // UAX #15 quick check, conservatively: text whose characters are all
  // NFC_Quick_Check=Yes with combining class 0 is NFC (most text, CJK
  // included), without converting it to UTF-16.
  bool quick_yes = true;
  for (size_t pos = 0; pos < text.size() && quick_yes;) {
    int32_t cp = 0;
    pos += static_cast<size_t>(DecodeUtf8(text, pos, &cp));
    if (cp < 0x300) continue;  // below U+0300, and invalid bytes (kept as they are)
    quick_yes = u_getCombiningClass(cp) == 0 &&
                u_getIntPropertyValue(cp, UCHAR_NFC_QUICK_CHECK) == UNORM_YES;
  }
  if (quick_yes) return false;
  UErrorCode status = U_ZERO_ERROR;
  const UNormalizer2* nfc = unorm2_getNFCInstance(&status);
  if (U_FAILURE(status)) return false;  // no ICU data: leave the text as it is

  out->reserve(text.size());
  size_t run_start = 0;
  auto flush = [&](size_t end) {
    const std::string_view run = text.substr(run_start, end - run_start);
    if (!run.empty() && !AppendNfc(nfc, run, out)) out->append(run);
  };
  for (size_t pos = 0; pos < text.size();) {
    int32_t cp = 0;
    const int length = DecodeUtf8(text, pos, &cp);
    if (cp == kInvalidCodePoint) {
      flush(pos);
      out->push_back(text[pos]);
      run_start = pos + 1;
    }
    pos += static_cast<size_t>(length);
  }
  flush(text.size());
  if (*out == text) {
    out->clear();
    return false;
  }
  return true;
}

void AppendUtf8(int32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

size_t CompleteUtf8Prefix(std::string_view bytes) {
  const auto* b = reinterpret_cast<const uint8_t*>(bytes.data());
  const size_t size = bytes.size();
  // The last sequence starts at most 3 bytes back; find its lead byte.
  size_t start = size;
  for (size_t back = 1; back <= 3 && back <= size; ++back) {
    if (!IsContinuation(b[size - back])) {
      start = size - back;
      break;
    }
  }
  if (start == size) return size;  // no lead byte within reach: nothing to wait for
  const LeadInfo info = InfoForLead(b[start]);
  if (info.length == 0 || start + info.length <= size) return size;
  // Incomplete: hold it back only if what is there can still become valid.
  if (start + 1 < size && (b[start + 1] < info.second_min || b[start + 1] > info.second_max)) {
    return size;
  }
  return start;
}

}  // namespace tokenmill::tokenizer
