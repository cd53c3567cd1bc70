#include "runtime/chat/jinja_parser.h"

#include <cstdlib>
#include <initializer_list>
#include <string_view>
#include <utility>

#include "absl/strings/str_cat.h"
#include "runtime/chat/jinja_value.h"

namespace tokenmill::chat::jinja {
namespace {

NodePtr MakeNode(NodeType type, size_t pos) {
  auto node = std::make_unique<Node>();
  node->type = type;
  node->pos = pos;
  return node;
}

bool IsSpecialArgument(const std::string& name) {
  return name == "caller" || name == "kwargs" || name == "varargs";
}

// Which special names a macro or call block body reads (HF's
// findAccessedSpecialMacroArguments, simplified: any identifier use that is
// not a parameter of the same name).
void FindSpecialUses(const Node* node, const std::vector<std::string>& declared, Node* owner) {
  if (node == nullptr) return;
  if (node->type == NodeType::kIdentifier && IsSpecialArgument(node->str)) {
    for (const std::string& d : declared) {
      if (d == node->str) return;
    }
    if (node->str == "caller") owner->uses_caller = true;
    if (node->str == "varargs") owner->uses_varargs = true;
    if (node->str == "kwargs") owner->uses_kwargs = true;
    return;
  }
  for (const Node* child : {node->x.get(), node->y.get(), node->z.get()}) {
    FindSpecialUses(child, declared, owner);
  }
  for (const auto& child : node->a) FindSpecialUses(child.get(), declared, owner);
  for (const auto& child : node->b) FindSpecialUses(child.get(), declared, owner);
}

class Parser {
 public:
  Parser(const std::vector<Token>& tokens, int max_depth)
      : tokens_(tokens), max_depth_(max_depth) {}

  NodePtr ParseProgram() {
    NodePtr program = MakeNode(NodeType::kProgram, 0);
    while (current_ < tokens_.size()) {
      NodePtr node = ParseAny();
      if (node) program->a.push_back(std::move(node));
    }
    return program;
  }

 private:
  struct DepthGuard {
    explicit DepthGuard(Parser* p) : parser(p) {
      if (++parser->depth_ > parser->max_depth_) {
        throw JinjaError(absl::StrCat("template nests deeper than ", parser->max_depth_, " levels"),
                         parser->Pos());
      }
    }
    ~DepthGuard() { --parser->depth_; }
    Parser* parser;
  };

  size_t Pos() const {
    if (current_ < tokens_.size()) return tokens_[current_].pos;
    return tokens_.empty() ? 0 : tokens_.back().pos;
  }
  [[noreturn]] void Fail(std::string message) const { throw JinjaError(std::move(message), Pos()); }
  const Token& Peek() const {
    if (current_ >= tokens_.size()) Fail("Unexpected end of template");
    return tokens_[current_];
  }
  const Token& Next() {
    const Token& token = Peek();
    ++current_;
    return token;
  }
  const Token& Expect(TokenType type, std::string_view error) {
    if (current_ >= tokens_.size() || tokens_[current_].type != type) {
      Fail(absl::StrCat("Parser Error: ", std::string(error)));
    }
    return tokens_[current_++];
  }
  bool Is(TokenType type, size_t offset = 0) const {
    return current_ + offset < tokens_.size() && tokens_[current_ + offset].type == type;
  }
  bool IsIdentifier(std::string_view name, size_t offset = 0) const {
    return Is(TokenType::kIdentifier, offset) && tokens_[current_ + offset].value == name;
  }
  bool IsStatement(std::initializer_list<std::string_view> names) const {
    if (!Is(TokenType::kOpenStatement) || !Is(TokenType::kIdentifier, 1)) return false;
    for (std::string_view name : names) {
      if (tokens_[current_ + 1].value == name) return true;
    }
    return false;
  }
  void ExpectIdentifier(std::string_view name) {
    if (!IsIdentifier(name)) Fail(absl::StrCat("Expected ", std::string(name)));
    ++current_;
  }
  void ExpectEnd(std::string_view name) {
    Expect(TokenType::kOpenStatement, "Expected {% token");
    ExpectIdentifier(name);
    Expect(TokenType::kCloseStatement, "Expected %} token");
  }
  // Statements until one of `names` opens (not consumed).
  std::vector<NodePtr> ParseUntil(std::initializer_list<std::string_view> names) {
    std::vector<NodePtr> body;
    while (!IsStatement(names)) {
      if (current_ >= tokens_.size()) {
        Fail(absl::StrCat("Unexpected end of template: expected {% ", std::string(*names.begin()),
                          " %}"));
      }
      NodePtr node = ParseAny();
      if (node) body.push_back(std::move(node));
    }
    return body;
  }

  NodePtr ParseAny() {
    DepthGuard guard(this);
    const Token& token = Peek();
    switch (token.type) {
      case TokenType::kComment:
        ++current_;
        return nullptr;  // renders nothing
      case TokenType::kText: {
        NodePtr node = MakeNode(NodeType::kStringLiteral, token.pos);
        node->str = token.value;
        ++current_;
        return node;
      }
      case TokenType::kOpenStatement:
        return ParseStatement();
      case TokenType::kOpenExpression: {
        ++current_;
        NodePtr expression = ParseExpression();
        Expect(TokenType::kCloseExpression, "Expected closing expression token");
        return expression;
      }
      default:
        Fail("Unexpected token type");
    }
  }

  NodePtr ParseStatement() {
    Expect(TokenType::kOpenStatement, "Expected opening statement token");
    if (!Is(TokenType::kIdentifier)) Fail("Unknown statement");
    const Token& name_token = Next();
    const std::string name = name_token.value;
    const size_t pos = name_token.pos;
    if (name == "set") return ParseSet(pos);
    if (name == "if") {
      NodePtr node = ParseIf(pos);
      ExpectEnd("endif");
      return node;
    }
    if (name == "macro") {
      NodePtr node = MakeNode(NodeType::kMacro, pos);
      NodePtr macro_name = ParsePrimary();
      if (macro_name->type != NodeType::kIdentifier) {
        Fail("Expected identifier following macro statement");
      }
      node->str = macro_name->str;
      node->a = ParseArgs(/*parameters=*/true);
      Expect(TokenType::kCloseStatement, "Expected closing statement token");
      node->b = ParseUntil({"endmacro"});
      ExpectEnd("endmacro");
      MarkSpecialUses(node.get());
      return node;
    }
    if (name == "for") {
      NodePtr node = ParseFor(pos);
      ExpectEnd("endfor");
      return node;
    }
    if (name == "call") {
      NodePtr node = MakeNode(NodeType::kCallStatement, pos);
      if (Is(TokenType::kOpenParen)) node->a = ParseArgs(/*parameters=*/true);
      NodePtr callee = ParsePrimary();
      if (callee->type != NodeType::kIdentifier) {
        Fail("Expected identifier following call statement");
      }
      NodePtr call = MakeNode(NodeType::kCall, callee->pos);
      call->x = std::move(callee);
      call->a = ParseArgs(/*parameters=*/false);
      node->x = std::move(call);
      Expect(TokenType::kCloseStatement, "Expected closing statement token");
      node->b = ParseUntil({"endcall"});
      ExpectEnd("endcall");
      MarkSpecialUses(node.get());
      return node;
    }
    if (name == "break" || name == "continue") {
      Expect(TokenType::kCloseStatement, "Expected closing statement token");
      return MakeNode(name == "break" ? NodeType::kBreak : NodeType::kContinue, pos);
    }
    if (name == "filter") {
      NodePtr node = MakeNode(NodeType::kFilterStatement, pos);
      NodePtr filter = ParsePrimary();
      if (filter->type == NodeType::kIdentifier && Is(TokenType::kOpenParen)) {
        filter = ParseCall(std::move(filter));
      }
      node->y = std::move(filter);
      Expect(TokenType::kCloseStatement, "Expected closing statement token");
      node->a = ParseUntil({"endfilter"});
      ExpectEnd("endfilter");
      return node;
    }
    throw JinjaError(absl::StrCat("Unknown statement type: ", name), pos);
  }

  void MarkSpecialUses(Node* node) {
    std::vector<std::string> declared;
    for (const NodePtr& param : node->a) {
      declared.push_back(param->type == NodeType::kIdentifier ? param->str : param->str);
    }
    for (const NodePtr& child : node->b) FindSpecialUses(child.get(), declared, node);
    if (node->type == NodeType::kCallStatement) FindSpecialUses(node->x.get(), declared, node);
  }

  NodePtr ParseSet(size_t pos) {
    NodePtr node = MakeNode(NodeType::kSet, pos);
    node->x = ParseExpressionSequence(false);
    if (Is(TokenType::kEquals)) {
      ++current_;
      node->y = ParseExpressionSequence(false);
    } else {
      Expect(TokenType::kCloseStatement, "Expected %} token");
      node->a = ParseUntil({"endset"});
      Expect(TokenType::kOpenStatement, "Expected {% token");
      ExpectIdentifier("endset");
    }
    Expect(TokenType::kCloseStatement, "Expected closing statement token");
    return node;
  }

  NodePtr ParseIf(size_t pos) {
    DepthGuard guard(this);
    NodePtr node = MakeNode(NodeType::kIf, pos);
    node->x = ParseExpression();
    Expect(TokenType::kCloseStatement, "Expected closing statement token");
    node->a = ParseUntil({"elif", "else", "endif"});
    if (IsStatement({"elif"})) {
      current_ += 2;
      node->b.push_back(ParseIf(tokens_[current_ - 1].pos));
    } else if (IsStatement({"else"})) {
      current_ += 2;
      Expect(TokenType::kCloseStatement, "Expected closing statement token");
      node->b = ParseUntil({"endif"});
    }
    return node;
  }

  NodePtr ParseFor(size_t pos) {
    NodePtr node = MakeNode(NodeType::kFor, pos);
    node->x = ParseExpressionSequence(true);
    if (node->x->type != NodeType::kIdentifier && node->x->type != NodeType::kTupleLiteral) {
      Fail("Expected identifier/tuple for the loop variable");
    }
    if (!IsIdentifier("in")) Fail("Expected `in` keyword following loop variable");
    ++current_;
    node->y = ParseExpression();
    Expect(TokenType::kCloseStatement, "Expected closing statement token");
    node->a = ParseUntil({"endfor", "else"});
    if (IsStatement({"else"})) {
      current_ += 2;
      Expect(TokenType::kCloseStatement, "Expected closing statement token");
      node->b = ParseUntil({"endfor"});
    }
    return node;
  }

  NodePtr ParseExpressionSequence(bool primary) {
    const size_t pos = Pos();
    NodePtr first = primary ? ParsePrimary() : ParseExpression();
    if (!Is(TokenType::kComma)) return first;
    NodePtr tuple = MakeNode(NodeType::kTupleLiteral, pos);
    tuple->a.push_back(std::move(first));
    while (Is(TokenType::kComma)) {
      ++current_;
      tuple->a.push_back(primary ? ParsePrimary() : ParseExpression());
    }
    return tuple;
  }

  NodePtr ParseExpression() {
    DepthGuard guard(this);
    NodePtr a = ParseOr();
    if (IsIdentifier("if")) {
      const size_t pos = Pos();
      ++current_;
      NodePtr test = ParseOr();
      if (IsIdentifier("else")) {
        ++current_;
        NodePtr node = MakeNode(NodeType::kTernary, pos);
        node->x = std::move(test);
        node->y = std::move(a);
        node->z = ParseExpression();
        return node;
      }
      NodePtr node = MakeNode(NodeType::kSelect, pos);
      node->x = std::move(a);
      node->y = std::move(test);
      return node;
    }
    return a;
  }

  NodePtr Binary(std::string op, size_t pos, NodePtr left, NodePtr right) {
    NodePtr node = MakeNode(NodeType::kBinary, pos);
    node->str = std::move(op);
    node->x = std::move(left);
    node->y = std::move(right);
    return node;
  }

  NodePtr ParseOr() {
    NodePtr left = ParseAnd();
    while (IsIdentifier("or")) {
      const size_t pos = Next().pos;
      left = Binary("or", pos, std::move(left), ParseAnd());
    }
    return left;
  }

  NodePtr ParseAnd() {
    NodePtr left = ParseNot();
    while (IsIdentifier("and")) {
      const size_t pos = Next().pos;
      left = Binary("and", pos, std::move(left), ParseNot());
    }
    return left;
  }

  NodePtr ParseNot() {
    if (IsIdentifier("not")) {
      DepthGuard guard(this);
      NodePtr node = MakeNode(NodeType::kUnary, Next().pos);
      node->str = "not";
      node->x = ParseNot();
      return node;
    }
    return ParseComparison();
  }

  NodePtr ParseComparison() {
    NodePtr left = ParseAdditive();
    while (true) {
      std::string op;
      const size_t pos = Pos();
      if (IsIdentifier("not") && IsIdentifier("in", 1)) {
        op = "not in";
        current_ += 2;
      } else if (IsIdentifier("in")) {
        op = "in";
        ++current_;
      } else if (Is(TokenType::kComparisonBinaryOperator)) {
        op = Next().value;
      } else {
        break;
      }
      left = Binary(std::move(op), pos, std::move(left), ParseAdditive());
    }
    return left;
  }

  NodePtr ParseAdditive() {
    NodePtr left = ParseMultiplicative();
    while (Is(TokenType::kAdditiveBinaryOperator)) {
      const Token& op = Next();
      left = Binary(op.value, op.pos, std::move(left), ParseMultiplicative());
    }
    return left;
  }

  NodePtr ParseMultiplicative() {
    NodePtr left = ParsePower();
    while (Is(TokenType::kMultiplicativeBinaryOperator)) {
      const Token& op = Next();
      left = Binary(op.value, op.pos, std::move(left), ParsePower());
    }
    return left;
  }

  NodePtr ParsePower() {
    NodePtr left = ParseTest();
    while (Is(TokenType::kExponentiationBinaryOperator)) {
      const Token& op = Next();
      left = Binary(op.value, op.pos, std::move(left), ParseTest());
    }
    return left;
  }

  NodePtr ParseTest() {
    NodePtr operand = ParseFilter();
    while (IsIdentifier("is")) {
      const size_t pos = Next().pos;
      const bool negate = IsIdentifier("not");
      if (negate) ++current_;
      NodePtr test = ParsePrimary();
      if (test->type != NodeType::kIdentifier) Fail("Expected identifier for the test");
      NodePtr node = MakeNode(NodeType::kTest, pos);
      node->x = std::move(operand);
      node->str = test->str;
      node->flag = negate;
      operand = std::move(node);
    }
    return operand;
  }

  NodePtr ParseFilter() {
    NodePtr operand = ParseUnarySign();
    while (Is(TokenType::kPipe)) {
      const size_t pos = Next().pos;
      NodePtr filter = ParsePrimary();
      if (filter->type != NodeType::kIdentifier) Fail("Expected identifier for the filter");
      if (Is(TokenType::kOpenParen)) filter = ParseCall(std::move(filter));
      NodePtr node = MakeNode(NodeType::kFilter, pos);
      node->x = std::move(operand);
      node->y = std::move(filter);
      operand = std::move(node);
    }
    return operand;
  }

  NodePtr ParseUnarySign() {
    if ((Is(TokenType::kUnaryOperator) || Is(TokenType::kAdditiveBinaryOperator)) &&
        (Peek().value == "-" || Peek().value == "+")) {
      DepthGuard guard(this);
      const Token& op = Next();
      NodePtr node = MakeNode(NodeType::kUnary, op.pos);
      node->str = op.value;
      node->x = ParseUnarySign();
      return node;
    }
    NodePtr member = ParseMember(ParsePrimary());
    if (Is(TokenType::kOpenParen)) return ParseCall(std::move(member));
    return member;
  }

  NodePtr ParseCall(NodePtr callee) {
    DepthGuard guard(this);
    NodePtr node = MakeNode(NodeType::kCall, callee->pos);
    node->x = std::move(callee);
    node->a = ParseArgs(/*parameters=*/false);
    NodePtr expression = ParseMember(std::move(node));
    if (Is(TokenType::kOpenParen)) return ParseCall(std::move(expression));
    return expression;
  }

  std::vector<NodePtr> ParseArgs(bool parameters) {
    Expect(TokenType::kOpenParen, "Expected opening parenthesis for arguments list");
    std::vector<NodePtr> args;
    std::vector<std::string> names;
    bool saw_keyword = false;
    bool saw_spread = false;
    while (!Is(TokenType::kCloseParen)) {
      const size_t pos = Pos();
      const bool keyword_spread = Is(TokenType::kExponentiationBinaryOperator);
      const bool positional_spread =
          Is(TokenType::kMultiplicativeBinaryOperator) && Peek().value == "*";
      if (parameters && (keyword_spread || positional_spread)) {
        Fail("Argument unpacking is not allowed in parameter declarations");
      }
      if (keyword_spread) {
        ++current_;
        NodePtr node = MakeNode(NodeType::kKeywordSpread, pos);
        node->x = ParseExpression();
        args.push_back(std::move(node));
        if (Is(TokenType::kComma)) ++current_;
        if (!Is(TokenType::kCloseParen)) {
          Fail("Expected closing parenthesis: `**` must be applied to the final argument");
        }
        break;
      }
      NodePtr argument;
      if (positional_spread) {
        if (saw_spread) Fail("Only one `*` argument unpacking is allowed");
        saw_spread = true;
        ++current_;
        argument = MakeNode(NodeType::kSpread, pos);
        argument->x = ParseExpression();
      } else {
        argument = ParseExpression();
        if (Is(TokenType::kEquals)) {
          ++current_;
          if (argument->type != NodeType::kIdentifier) {
            Fail(parameters ? "Expected identifier for parameter declaration"
                            : "Expected identifier for keyword argument");
          }
          NodePtr kw = MakeNode(NodeType::kKeywordArgument, pos);
          kw->str = argument->str;
          kw->x = ParseExpression();
          argument = std::move(kw);
        }
        if (parameters) {
          if (argument->type != NodeType::kIdentifier &&
              argument->type != NodeType::kKeywordArgument) {
            Fail("Expected identifier for parameter declaration");
          }
          for (const std::string& name : names) {
            if (name == argument->str) Fail(absl::StrCat("Duplicate parameter name: ", name));
          }
          names.push_back(argument->str);
        }
        if (argument->type == NodeType::kKeywordArgument) {
          saw_keyword = true;
        } else if (saw_keyword) {
          Fail(parameters ? "Non-default argument follows default argument"
                          : "Positional arguments must come before keyword arguments");
        } else if (saw_spread) {
          Fail("Positional arguments must not follow `*` argument unpacking");
        }
      }
      args.push_back(std::move(argument));
      if (Is(TokenType::kComma)) ++current_;
      if (current_ >= tokens_.size()) Fail("Unexpected end of template in arguments");
    }
    Expect(TokenType::kCloseParen, "Expected closing parenthesis for arguments list");
    return args;
  }

  NodePtr ParseMemberArguments(size_t pos) {
    std::vector<NodePtr> slices;
    bool is_slice = false;
    while (!Is(TokenType::kCloseSquareBracket)) {
      if (current_ >= tokens_.size()) Fail("Unexpected end of template in [...]");
      if (Is(TokenType::kColon)) {
        slices.push_back(nullptr);
        ++current_;
        is_slice = true;
      } else {
        slices.push_back(ParseExpression());
        if (Is(TokenType::kColon)) {
          ++current_;
          is_slice = true;
        }
      }
    }
    if (slices.empty()) Fail("Expected at least one argument for member/slice expression");
    if (!is_slice) return std::move(slices[0]);
    if (slices.size() > 3) Fail("Expected 0-3 arguments for slice expression");
    NodePtr node = MakeNode(NodeType::kSlice, pos);
    node->x = std::move(slices[0]);
    if (slices.size() > 1) node->y = std::move(slices[1]);
    if (slices.size() > 2) node->z = std::move(slices[2]);
    return node;
  }

  NodePtr ParseMember(NodePtr object) {
    while (Is(TokenType::kDot) || Is(TokenType::kOpenSquareBracket)) {
      DepthGuard guard(this);
      const Token& op = Next();
      NodePtr node = MakeNode(NodeType::kMember, op.pos);
      node->flag = op.type == TokenType::kOpenSquareBracket;
      if (node->flag) {
        node->y = ParseMemberArguments(op.pos);
        Expect(TokenType::kCloseSquareBracket, "Expected closing square bracket");
      } else {
        node->y = ParsePrimary();
        if (node->y->type != NodeType::kIdentifier && node->y->type != NodeType::kIntegerLiteral) {
          Fail("Expected identifier or integer following dot operator");
        }
      }
      node->x = std::move(object);
      object = std::move(node);
    }
    return object;
  }

  NodePtr ParsePrimary() {
    DepthGuard guard(this);
    const Token& token = Next();
    switch (token.type) {
      case TokenType::kNumericLiteral: {
        if (token.value.find('.') != std::string::npos) {
          NodePtr node = MakeNode(NodeType::kFloatLiteral, token.pos);
          node->fval = std::strtod(token.value.c_str(), nullptr);
          return node;
        }
        NodePtr node = MakeNode(NodeType::kIntegerLiteral, token.pos);
        // JavaScript Number(): big literals lose precision rather than fail.
        const double d = std::strtod(token.value.c_str(), nullptr);
        if (d > 9e18 || d < -9e18) {
          node->type = NodeType::kFloatLiteral;
          node->fval = d;
        } else {
          node->ival = std::strtoll(token.value.c_str(), nullptr, 10);
        }
        return node;
      }
      case TokenType::kStringLiteral: {
        NodePtr node = MakeNode(NodeType::kStringLiteral, token.pos);
        node->str = token.value;
        while (Is(TokenType::kStringLiteral)) node->str += Next().value;
        return node;
      }
      case TokenType::kIdentifier: {
        NodePtr node = MakeNode(NodeType::kIdentifier, token.pos);
        node->str = token.value;
        return node;
      }
      case TokenType::kOpenParen: {
        NodePtr expression = ParseExpressionSequence(false);
        Expect(TokenType::kCloseParen, "Expected closing parenthesis");
        return expression;
      }
      case TokenType::kOpenSquareBracket: {
        NodePtr node = MakeNode(NodeType::kArrayLiteral, token.pos);
        while (!Is(TokenType::kCloseSquareBracket)) {
          if (current_ >= tokens_.size()) Fail("Unexpected end of template in [...]");
          node->a.push_back(ParseExpression());
          if (Is(TokenType::kComma)) ++current_;
        }
        ++current_;
        return node;
      }
      case TokenType::kOpenCurlyBracket: {
        NodePtr node = MakeNode(NodeType::kObjectLiteral, token.pos);
        while (!Is(TokenType::kCloseCurlyBracket)) {
          if (current_ >= tokens_.size()) Fail("Unexpected end of template in {...}");
          node->a.push_back(ParseExpression());
          Expect(TokenType::kColon, "Expected colon between key and value in object literal");
          node->b.push_back(ParseExpression());
          if (Is(TokenType::kComma)) ++current_;
        }
        ++current_;
        return node;
      }
      default:
        throw JinjaError(absl::StrCat("Unexpected token: ", token.value), token.pos);
    }
  }

  const std::vector<Token>& tokens_;
  size_t current_ = 0;
  int depth_ = 0;
  const int max_depth_;
};

}  // namespace

NodePtr Parse(const std::vector<Token>& tokens, int max_depth) {
  Parser parser(tokens, max_depth);
  return parser.ParseProgram();
}

}  // namespace tokenmill::chat::jinja
