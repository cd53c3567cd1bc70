#include "runtime/chat/jinja_lexer.h"

#include <array>
#include <utility>

#include "absl/strings/str_cat.h"
#include "runtime/chat/jinja_value.h"

namespace tokenmill::chat::jinja {
namespace {

bool IsWord(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}
bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// Whether s[pos] starts a line in the sense of a multiline JavaScript `^`.
bool AtLineStart(std::string_view s, size_t pos) {
  if (pos == 0) return true;
  if (s[pos - 1] == '\n' || s[pos - 1] == '\r') return true;
  // U+2028 / U+2029: E2 80 A8 / A9.
  return pos >= 3 && s[pos - 3] == '\xe2' && s[pos - 2] == '\x80' &&
         (s[pos - 1] == '\xa8' || s[pos - 1] == '\xa9');
}

// One-character whitespace test on ASCII (\s restricted to what the
// {% generation %} pattern sees in practice).
bool IsAsciiSpace(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

struct Rule {
  std::string_view seq;
  TokenType type;
};

// HF's ORDERED_MAPPING_TABLE, in order.
constexpr std::array<Rule, 29> kRules = {{
    {"{%", TokenType::kOpenStatement},
    {"%}", TokenType::kCloseStatement},
    {"{{", TokenType::kOpenExpression},
    {"}}", TokenType::kCloseExpression},
    {"(", TokenType::kOpenParen},
    {")", TokenType::kCloseParen},
    {"{", TokenType::kOpenCurlyBracket},
    {"}", TokenType::kCloseCurlyBracket},
    {"[", TokenType::kOpenSquareBracket},
    {"]", TokenType::kCloseSquareBracket},
    {",", TokenType::kComma},
    {".", TokenType::kDot},
    {":", TokenType::kColon},
    {"|", TokenType::kPipe},
    {"<=", TokenType::kComparisonBinaryOperator},
    {">=", TokenType::kComparisonBinaryOperator},
    {"==", TokenType::kComparisonBinaryOperator},
    {"!=", TokenType::kComparisonBinaryOperator},
    {"<", TokenType::kComparisonBinaryOperator},
    {">", TokenType::kComparisonBinaryOperator},
    {"+", TokenType::kAdditiveBinaryOperator},
    {"-", TokenType::kAdditiveBinaryOperator},
    {"~", TokenType::kAdditiveBinaryOperator},
    {"**", TokenType::kExponentiationBinaryOperator},
    {"*", TokenType::kMultiplicativeBinaryOperator},
    {"//", TokenType::kMultiplicativeBinaryOperator},
    {"/", TokenType::kMultiplicativeBinaryOperator},
    {"%", TokenType::kMultiplicativeBinaryOperator},
    {"=", TokenType::kEquals},
}};

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xc0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 63)));
  } else {
    out->push_back(static_cast<char>(0xe0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 63)));
    out->push_back(static_cast<char>(0x80 | (cp & 63)));
  }
}

}  // namespace

size_t WhitespaceAt(std::string_view s, size_t pos) {
  if (pos >= s.size()) return 0;
  const unsigned char c = static_cast<unsigned char>(s[pos]);
  if (c < 0x80) return (c == ' ' || (c >= 9 && c <= 13)) ? 1 : 0;
  auto byte = [&](size_t i) -> unsigned char {
    return i < s.size() ? static_cast<unsigned char>(s[i]) : 0;
  };
  if (c == 0xc2 && byte(pos + 1) == 0xa0) return 2;                           // U+00A0
  if (c == 0xe1 && byte(pos + 1) == 0x9a && byte(pos + 2) == 0x80) return 3;  // U+1680
  if (c == 0xe2 && byte(pos + 1) == 0x80) {
    const unsigned char d = byte(pos + 2);
    if ((d >= 0x80 && d <= 0x8a) || d == 0xa8 || d == 0xa9 || d == 0xaf) return 3;
  }
  if (c == 0xe2 && byte(pos + 1) == 0x81 && byte(pos + 2) == 0x9f) return 3;  // U+205F
  if (c == 0xe3 && byte(pos + 1) == 0x80 && byte(pos + 2) == 0x80) return 3;  // U+3000
  if (c == 0xef && byte(pos + 1) == 0xbb && byte(pos + 2) == 0xbf) return 3;  // U+FEFF
  return 0;
}

std::string_view TrimStart(std::string_view s) {
  size_t pos = 0;
  while (size_t n = WhitespaceAt(s, pos)) pos += n;
  return s.substr(pos);
}

std::string_view TrimEnd(std::string_view s) {
  size_t end = 0;  // one past the last non-whitespace character
  for (size_t pos = 0; pos < s.size();) {
    if (size_t n = WhitespaceAt(s, pos)) {
      pos += n;
    } else {
      // Step over one UTF-8 character.
      ++pos;
      while (pos < s.size() && (static_cast<unsigned char>(s[pos]) & 0xc0) == 0x80) ++pos;
      end = pos;
    }
  }
  return s.substr(0, end);
}

std::string LineColumn(std::string_view source, size_t pos) {
  if (pos > source.size()) pos = source.size();
  size_t line = 1;
  size_t column = 1;
  for (size_t i = 0; i < pos; ++i) {
    if (source[i] == '\n') {
      ++line;
      column = 1;
    } else {
      ++column;
    }
  }
  return absl::StrCat("line ", line, ", column ", column);
}

std::string Preprocess(std::string_view source, std::vector<size_t>* origin) {
  // Each step copies kept bytes of `t` to `out` and their origins alongside.
  std::string t(source);
  std::vector<size_t> at(t.size());
  for (size_t i = 0; i < at.size(); ++i) at[i] = i;
  std::string out;
  std::vector<size_t> out_at;
  auto keep = [&](size_t i) {
    out.push_back(t[i]);
    out_at.push_back(at[i]);
  };
  auto next_step = [&] {
    t = std::move(out);
    at = std::move(out_at);
    out.clear();
    out_at.clear();
  };
  if (!t.empty() && t.back() == '\n') {
    t.pop_back();
    at.pop_back();
  }
  // lstrip_blocks: /^[ \t]*({[#%-])/gm -> "$1"
  for (size_t i = 0; i < t.size();) {
    if (AtLineStart(t, i)) {
      size_t j = i;
      while (j < t.size() && (t[j] == ' ' || t[j] == '\t')) ++j;
      if (j + 1 < t.size() && t[j] == '{' &&
          (t[j + 1] == '#' || t[j + 1] == '%' || t[j + 1] == '-')) {
        i = j;  // drop the blanks
      }
    }
    keep(i);
    ++i;
  }
  next_step();
  // trim_blocks: /([#%-]})\n/g -> "$1"
  for (size_t i = 0; i < t.size(); ++i) {
    keep(i);
    if (t[i] == '}' && i > 0 && (t[i - 1] == '#' || t[i - 1] == '%' || t[i - 1] == '-') &&
        i + 1 < t.size() && t[i + 1] == '\n') {
      ++i;  // skip the newline
    }
  }
  next_step();
  // {%-? (end)?generation -?%} tags (transformers-only) are removed.
  size_t last = 0;
  auto keep_range = [&](size_t from, size_t to) {
    for (size_t k = from; k < to; ++k) keep(k);
  };
  for (size_t i = t.find("{%"); i != std::string::npos; i = t.find("{%", i + 1)) {
    if (i < last) continue;
    size_t j = i + 2;
    const bool lstrip = j < t.size() && t[j] == '-';
    if (lstrip) ++j;
    while (j < t.size() && IsAsciiSpace(t[j])) ++j;
    if (t.compare(j, 3, "end") == 0) j += 3;
    if (t.compare(j, 10, "generation") != 0) continue;
    j += 10;
    while (j < t.size() && IsAsciiSpace(t[j])) ++j;
    const bool rstrip = j < t.size() && t[j] == '-';
    if (rstrip) ++j;
    if (t.compare(j, 2, "%}") != 0) continue;
    j += 2;
    size_t after_end = j;
    while (after_end < t.size() && IsAsciiSpace(t[after_end])) ++after_end;
    size_t end_index = i;
    while (lstrip && end_index > last && IsAsciiSpace(t[end_index - 1])) --end_index;
    keep_range(last, end_index);
    if (!rstrip) keep_range(j, after_end);
    last = after_end;
    i = after_end - 1;
  }
  keep_range(last, t.size());
  next_step();
  if (origin != nullptr) {
    *origin = std::move(at);
    origin->push_back(source.size());
  }
  return t;
}

std::vector<Token> Tokenize(const std::string& src) {
  std::vector<Token> tokens;
  const size_t length = src.size();
  size_t cursor = 0;
  int curly_depth = 0;
  auto at = [&](size_t i) -> char { return i < length ? src[i] : '\0'; };
  auto consume_while = [&](auto predicate) {
    const size_t start = cursor;
    while (true) {
      size_t n = predicate(cursor);
      if (n == 0) break;
      cursor += n;
      if (cursor >= length) throw JinjaError("Unexpected end of input", cursor);
    }
    return src.substr(start, cursor - start);
  };
  auto is_ws = [&](size_t i) { return WhitespaceAt(src, i); };
  auto is_digit = [&](size_t i) -> size_t { return IsDigit(at(i)) ? 1 : 0; };
  auto is_word = [&](size_t i) -> size_t { return i < length && IsWord(src[i]) ? 1 : 0; };
  auto push = [&](std::string value, TokenType type, size_t pos) {
    tokens.push_back(Token{std::move(value), type, pos});
  };
  auto strip_trailing_whitespace = [&] {
    if (!tokens.empty() && tokens.back().type == TokenType::kText) {
      tokens.back().value = std::string(TrimEnd(tokens.back().value));
      if (tokens.back().value.empty()) tokens.pop_back();
    }
  };
  auto skip_leading_whitespace = [&] {
    while (cursor < length) {
      size_t n = WhitespaceAt(src, cursor);
      if (n == 0) break;
      cursor += n;
    }
  };
  auto consume_string = [&](char quote) {
    std::string str;
    size_t start = cursor;
    while (true) {
      if (cursor >= length) throw JinjaError("Unexpected end of input", cursor);
      const char c = src[cursor];
      if (c == quote) break;
      ++cursor;
      if (c != '\\') continue;
      str.append(src, start, cursor - 1 - start);
      if (cursor >= length) throw JinjaError("Unexpected end of input", cursor);
      const char escaped = src[cursor++];
      if (escaped == 'x' || escaped == 'u') {
        const size_t hex_length = escaped == 'x' ? 2 : 4;
        uint32_t cp = 0;
        for (size_t k = 0; k < hex_length; ++k) {
          const char h = at(cursor + k);
          int digit = h >= '0' && h <= '9'   ? h - '0'
                      : h >= 'a' && h <= 'f' ? h - 'a' + 10
                      : h >= 'A' && h <= 'F' ? h - 'A' + 10
                                             : -1;
          if (digit < 0) throw JinjaError("Invalid hexadecimal escape sequence", cursor);
          cp = cp * 16 + static_cast<uint32_t>(digit);
        }
        AppendUtf8(cp, &str);
        cursor += hex_length;
      } else {
        switch (escaped) {
          case 'n':
            str += '\n';
            break;
          case 't':
            str += '\t';
            break;
          case 'r':
            str += '\r';
            break;
          case 'b':
            str += '\b';
            break;
          case 'f':
            str += '\f';
            break;
          case 'v':
            str += '\v';
            break;
          case '\'':
          case '"':
          case '\\':
            str += escaped;
            break;
          default:
            throw JinjaError(
                absl::StrCat("Unexpected escaped character: ", std::string(1, escaped)),
                cursor - 1);
        }
      }
      start = cursor;
    }
    str.append(src, start, cursor - start);
    return str;
  };

  while (cursor < length) {
    const bool have_last = !tokens.empty();
    const TokenType last_type = have_last ? tokens.back().type : TokenType::kText;
    if (!have_last || last_type == TokenType::kCloseStatement ||
        last_type == TokenType::kCloseExpression || last_type == TokenType::kComment) {
      size_t end = cursor;
      while (true) {
        end = src.find('{', end);
        if (end == std::string::npos) {
          end = length;
          break;
        }
        const char next = at(end + 1);
        if (next == '%' || next == '{' || next == '#') break;
        ++end;
      }
      if (end > cursor) {
        push(src.substr(cursor, end - cursor), TokenType::kText, cursor);
        cursor = end;
        continue;
      }
    }
    if (src[cursor] == '{') {
      const char next = at(cursor + 1);
      if (next == '#') {
        const size_t open = cursor;
        cursor += 2;
        const bool strip_before = at(cursor) == '-';
        if (strip_before) ++cursor;
        const size_t end = src.find("#}", cursor);
        if (end == std::string::npos) throw JinjaError("Missing end of comment tag", open);
        std::string comment = src.substr(cursor, end - cursor);
        const bool strip_after = !comment.empty() && comment.back() == '-';
        if (strip_after) comment.pop_back();
        if (strip_before) strip_trailing_whitespace();
        push(std::move(comment), TokenType::kComment, open);
        cursor = end + 2;
        if (strip_after) skip_leading_whitespace();
        continue;
      }
      if (at(cursor + 2) == '-') {
        if (next == '%') {
          strip_trailing_whitespace();
          push("{%", TokenType::kOpenStatement, cursor);
          cursor += 3;
          continue;
        }
        if (next == '{') {
          strip_trailing_whitespace();
          push("{{", TokenType::kOpenExpression, cursor);
          curly_depth = 0;
          cursor += 3;
          continue;
        }
      }
    }
    consume_while(is_ws);
    const char c = src[cursor];
    const size_t pos = cursor;
    if (c == '-' && at(cursor + 2) == '}') {
      const char next = at(cursor + 1);
      if (next == '%') {
        push("%}", TokenType::kCloseStatement, pos);
        cursor += 3;
        skip_leading_whitespace();
        continue;
      }
      if (next == '}') {
        push("}}", TokenType::kCloseExpression, pos);
        cursor += 3;
        skip_leading_whitespace();
        continue;
      }
    }
    if (c == '-' || c == '+') {
      const TokenType lt = tokens.empty() ? TokenType::kText : tokens.back().type;
      if (tokens.empty() || lt == TokenType::kText) {
        throw JinjaError(absl::StrCat("Unexpected character: ", std::string(1, c)), pos);
      }
      switch (lt) {
        case TokenType::kIdentifier:
        case TokenType::kNumericLiteral:
        case TokenType::kStringLiteral:
        case TokenType::kCloseParen:
        case TokenType::kCloseSquareBracket:
          break;
        default: {
          ++cursor;
          std::string num = consume_while(is_digit);
          if (!num.empty() && at(cursor) == '.' && IsDigit(at(cursor + 1))) {
            ++cursor;
            num += "." + consume_while(is_digit);
          }
          push(std::string(1, c) + num,
               num.empty() ? TokenType::kUnaryOperator : TokenType::kNumericLiteral, pos);
          continue;
        }
      }
    }
    bool matched = false;
    for (const Rule& rule : kRules) {
      if (rule.seq[0] != c) continue;
      if (rule.seq == "}}" && curly_depth > 0) continue;
      if (src.compare(cursor, rule.seq.size(), rule.seq) == 0) {
        push(std::string(rule.seq), rule.type, pos);
        if (rule.type == TokenType::kOpenExpression) {
          curly_depth = 0;
        } else if (rule.type == TokenType::kOpenCurlyBracket) {
          ++curly_depth;
        } else if (rule.type == TokenType::kCloseCurlyBracket) {
          --curly_depth;
        }
        cursor += rule.seq.size();
        matched = true;
        break;
      }
    }
    if (matched) continue;
    if (c == '\'' || c == '"') {
      ++cursor;
      std::string str = consume_string(c);
      push(std::move(str), TokenType::kStringLiteral, pos);
      ++cursor;
      continue;
    }
    if (IsDigit(c)) {
      std::string num = consume_while(is_digit);
      const TokenType lt = tokens.empty() ? TokenType::kText : tokens.back().type;
      if (!(have_last && lt == TokenType::kDot) && at(cursor) == '.' && IsDigit(at(cursor + 1))) {
        ++cursor;
        num += "." + consume_while(is_digit);
      }
      push(std::move(num), TokenType::kNumericLiteral, pos);
      continue;
    }
    if (IsWord(c)) {
      push(consume_while(is_word), TokenType::kIdentifier, pos);
      continue;
    }
    throw JinjaError(absl::StrCat("Unexpected character: ", std::string(1, c)), pos);
  }
  return tokens;
}

}  // namespace tokenmill::chat::jinja
