// UTF-8 scanning and the Unicode character classes that the pre-tokenizers
// need. Invalid UTF-8 is never an error here: each byte that does not start a
// valid sequence becomes one unit of its own, so every input byte is covered
// exactly once and byte-level tokenizers can round-trip any input.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

namespace tokenmill::tokenizer {

// Code point of a unit made of one invalid byte.
inline constexpr int32_t kInvalidCodePoint = -1;

// Character class bits (Unicode general categories L*, N*, M*, P*, S*, and
// the White_Space property, which no L/N/M/P/S character has). A unit has at
// most one of them; none means a control, format, private-use or unassigned
// character that is not white space, or an invalid byte.
enum CharClass : uint8_t {
  kLetter = 1,
  kNumber = 2,
  kSpace = 4,
  kMark = 8,
  kPunctuation = 16,
  kSymbol = 32,
};

// One code point of text (or one invalid byte) and where it lies.
struct TextUnit {
  int32_t cp = 0;      // code point, or kInvalidCodePoint
  uint8_t cls = 0;     // CharClass bits
  uint8_t length = 0;  // bytes in the text, 1..4
  size_t offset = 0;   // byte offset in the text
};

// Decodes the sequence at text[pos] (pos < text.size()): returns its length
// (1..4) and sets *cp, or returns 1 and sets *cp = kInvalidCodePoint when the
// byte does not start a well-formed sequence (overlong forms, surrogates and
// values past U+10FFFF are not well-formed).
int DecodeUtf8(std::string_view text, size_t pos, int32_t* cp);

// CharClass bits of a code point (0 for kInvalidCodePoint).
uint8_t ClassifyCodePoint(int32_t cp);

// Decodes all of `text` into `units` (cleared first; reused to save allocations).
void DecodeText(std::string_view text, std::vector<TextUnit>* units);

// Unicode Normalization Form C of `text` into *out (cleared first), as
// Hugging Face's NFC normaliser gives it. Invalid UTF-8 bytes are kept as
// they are and split the text into runs normalised one by one. Returns false,
// leaving *out empty, when text is already NFC (the common case; pure ASCII
// and text below U+0300 are decided without ICU), and for text over 256 MiB
// (ICU's int32_t lengths; far beyond any request body).
bool NormalizeNfc(std::string_view text, std::string* out);

// Appends the UTF-8 encoding of a valid code point.
void AppendUtf8(int32_t cp, std::string* out);

// Length of the longest prefix of `bytes` that does not end inside a sequence
// that the following bytes could still complete. Streaming output holds the
// rest back; bytes that can never become valid are not held back.
size_t CompleteUtf8Prefix(std::string_view bytes);

}  // namespace tokenmill::tokenizer
