// Jinja lexer: template text to tokens, exactly as @huggingface/jinja's
// tokenize() does with the options Hugging Face renders chat templates with
// (lstrip_blocks and trim_blocks on, one trailing newline dropped, the
// transformers-only {% generation %} tags removed, `-` whitespace control).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace tokenmill::chat::jinja {

enum class TokenType {
  kText,
  kNumericLiteral,
  kStringLiteral,
  kIdentifier,
  kEquals,
  kOpenParen,
  kCloseParen,
  kOpenStatement,
  kCloseStatement,
  kOpenExpression,
  kCloseExpression,
  kOpenSquareBracket,
  kCloseSquareBracket,
  kOpenCurlyBracket,
  kCloseCurlyBracket,
  kComma,
  kDot,
  kColon,
  kPipe,
  kAdditiveBinaryOperator,
  kMultiplicativeBinaryOperator,
  kExponentiationBinaryOperator,
  kComparisonBinaryOperator,
  kUnaryOperator,
  kComment,
};

struct Token {
  std::string value;
  TokenType type = TokenType::kText;
  size_t pos = 0;  // byte offset in the preprocessed source
};

// The source after whitespace control (what token positions refer to).
// `origin` (optional) gets, per byte of the result, its offset in `source`,
// plus source.size() at the end, so that errors name the template's lines.
std::string Preprocess(std::string_view source, std::vector<size_t>* origin = nullptr);

// Tokens of `source` (already preprocessed). Throws JinjaError.
std::vector<Token> Tokenize(const std::string& source);

// Byte length of the JavaScript whitespace character (\s) at s[pos], 0 if none.
size_t WhitespaceAt(std::string_view s, size_t pos);
// JavaScript's String.prototype.trimStart / trimEnd / trim on UTF-8.
std::string_view TrimStart(std::string_view s);
std::string_view TrimEnd(std::string_view s);

// "line L, column C" of a byte offset (1-based; columns count bytes).
std::string LineColumn(std::string_view source, size_t pos);

}  // namespace tokenmill::chat::jinja
