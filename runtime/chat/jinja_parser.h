// Jinja parser: tokens to a syntax tree, following @huggingface/jinja's
// parser (the statements, operators and precedence it accepts, and nothing
// else, so that a template either renders as Hugging Face renders it or is
// refused at load).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/chat/jinja_lexer.h"

namespace tokenmill::chat::jinja {

enum class NodeType {
  kProgram,  // a: body
  kIf,       // x: test, a: body, b: alternate
  kFor,      // x: loop variable, y: iterable, a: body, b: else block
  kBreak,
  kContinue,
  kSet,    // x: assignee, y: value (or null), a: block body
  kMacro,  // str: name, a: parameters, b: body
  kComment,
  kMember,           // x: object, y: property, flag: computed ([...])
  kCall,             // x: callee, a: arguments
  kIdentifier,       // str
  kIntegerLiteral,   // ival
  kFloatLiteral,     // fval
  kStringLiteral,    // str (also template text)
  kArrayLiteral,     // a
  kTupleLiteral,     // a
  kObjectLiteral,    // a: keys, b: values
  kBinary,           // str: operator, x, y
  kFilter,           // x: operand, y: filter (identifier or call)
  kFilterStatement,  // y: filter, a: body
  kSelect,           // x: value, y: test (`a if b` without else)
  kTest,             // x: operand, str: test name, flag: negated
  kUnary,            // str: operator, x
  kSlice,            // x: start, y: stop, z: step (each may be null)
  kKeywordArgument,  // str: key, x: value
  kSpread,           // x (*args)
  kKeywordSpread,    // x (**kwargs)
  kCallStatement,    // x: call, a: caller parameters, b: body
  kTernary,          // x: condition, y: if true, z: if false
};

struct Node;
using NodePtr = std::unique_ptr<Node>;

struct Node {
  NodeType type = NodeType::kProgram;
  size_t pos = 0;  // byte offset in the preprocessed source
  std::string str;
  int64_t ival = 0;
  double fval = 0;
  bool flag = false;
  NodePtr x, y, z;
  std::vector<NodePtr> a, b;
  // Macros and call blocks: which of caller / varargs / kwargs the body reads.
  bool uses_caller = false, uses_varargs = false, uses_kwargs = false;
};

// The program for `tokens`. Throws JinjaError (with the token's position).
// Nesting deeper than `max_depth` is an error rather than a deep stack.
NodePtr Parse(const std::vector<Token>& tokens, int max_depth);

}  // namespace tokenmill::chat::jinja
