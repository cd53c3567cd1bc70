#include "runtime/chat/jinja_interpreter.h"

#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

namespace tokenmill::chat::jinja {
namespace {

struct BreakSignal {};
struct ContinueSignal {};

class DepthGuard {
 public:
  DepthGuard(int* depth, int max, const Interpreter& interpreter, size_t pos) : depth_(depth) {
    if (++*depth_ > max) {
      --*depth_;
      throw JinjaError(absl::StrCat("resource limit: evaluation nests deeper than ", max,
                                    " levels (recursive macro?)"),
                       pos);
    }
    (void)interpreter;
  }
  ~DepthGuard() { --*depth_; }

 private:
  int* depth_;
};

}  // namespace

Value Environment::Lookup(const std::string& name) const {
  for (const Environment* env = this; env != nullptr; env = env->parent_.get()) {
    auto it = env->variables_.find(name);
    if (it != env->variables_.end()) return it->second;
  }
  return Value();
}

const Value* Environment::FindOwn(const std::string& name) const {
  auto it = variables_.find(name);
  return it == variables_.end() ? nullptr : &it->second;
}

void TextBuilder::Check(size_t more) const {
  if (text_.size() + more > max_bytes_) {
    throw JinjaError(absl::StrCat("resource limit: a string would exceed ", max_bytes_, " bytes"));
  }
  *budget_ -= static_cast<int64_t>(more);
  if (*budget_ < 0) {
    throw JinjaError("resource limit: the render built too much text");
  }
}

void TextBuilder::Append(const Value& v) {
  Check(v.str().size());
  const size_t offset = text_.size();
  for (const InputSpan& span : v.input()) {
    if (!spans_.empty() && spans_.back().end == offset + span.begin) {
      spans_.back().end = offset + span.end;
    } else {
      spans_.push_back({offset + span.begin, offset + span.end});
    }
  }
  text_ += v.str();
}

void TextBuilder::AppendPlain(std::string_view text) {
  Check(text.size());
  text_ += text;
}

void TextBuilder::AppendInput(std::string_view text) {
  AppendPlain(text);
  if (text.empty()) return;
  const size_t begin = text_.size() - text.size();
  if (!spans_.empty() && spans_.back().end == begin) {
    spans_.back().end = text_.size();
  } else {
    spans_.push_back({begin, text_.size()});
  }
}

Value TextBuilder::Take() { return Value::String(std::move(text_), std::move(spans_)); }

bool ContainsInput(const Value& value, int depth) {
  if (depth > 128) return true;
  switch (value.kind()) {
    case Kind::kString:
      return value.has_input();
    case Kind::kArray:
      for (const Value& item : value.array()) {
        if (ContainsInput(item, depth + 1)) return true;
      }
      return false;
    case Kind::kObject:
    case Kind::kNamespace:
      if (value.input_keys() && !value.object().empty()) return true;
      for (const auto& [key, item] : value.object()) {
        if (ContainsInput(item, depth + 1)) return true;
      }
      return false;
    default:
      return false;
  }
}

Interpreter::~Interpreter() {
  for (Value& ns : namespaces_) ns.object().clear();
}

Value Interpreter::MakeString(std::string s, bool input) {
  if (s.size() > limits_.max_string_bytes) {
    Fail(
        absl::StrCat("resource limit: a string would exceed ", limits_.max_string_bytes, " bytes"));
  }
  bytes_budget_ -= static_cast<int64_t>(s.size());
  if (bytes_budget_ < 0) Fail("resource limit: the render built too much text");
  return input ? Value::InputString(std::move(s)) : Value::String(std::move(s));
}

Value Interpreter::Derived(std::string s, std::initializer_list<const Value*> sources) {
  bool input = false;
  for (const Value* source : sources) input = input || ContainsInput(*source);
  return MakeString(std::move(s), input);
}

void Interpreter::CountIterations(int64_t n) {
  iterations_ += n;
  if (iterations_ > limits_.max_loop_iterations) {
    Fail(absl::StrCat("resource limit: more than ", limits_.max_loop_iterations,
                      " loop iterations"));
  }
}

void Interpreter::Fail(std::string message, size_t pos) const {
  throw JinjaError(std::move(message), pos);
}

Value Interpreter::RenderToString(const std::vector<NodePtr>& statements, const EnvPtr& env) {
  TextBuilder out = Builder();
  RenderBlock(statements, env, &out);
  return out.Take();
}

void Interpreter::RenderBlock(const std::vector<NodePtr>& statements, const EnvPtr& env,
                              TextBuilder* out) {
  for (const NodePtr& statement : statements) {
    switch (statement->type) {
      case NodeType::kStringLiteral:
        out->AppendPlain(statement->str);
        break;
      case NodeType::kIf: {
        DepthGuard guard(&depth_, limits_.max_depth, *this, statement->pos);
        const bool test = Evaluate(statement->x.get(), env).Truthy();
        RenderBlock(test ? statement->a : statement->b, env, out);
        break;
      }
      case NodeType::kFor: {
        DepthGuard guard(&depth_, limits_.max_depth, *this, statement->pos);
        RenderFor(statement.get(), env, out);
        break;
      }
      case NodeType::kSet:
        ExecuteSet(statement.get(), env);
        break;
      case NodeType::kComment:
        break;
      default: {
        Value value = Evaluate(statement.get(), env);
        if (value.is_null() || value.is_undefined()) break;
        if (value.is_string()) {
          out->Append(value);
        } else if (ContainsInput(value)) {
          out->AppendInput(value.Print());
        } else {
          out->AppendPlain(value.Print());
        }
      }
    }
  }
}

Value Interpreter::Evaluate(const Node* node, const EnvPtr& env) {
  if (node == nullptr) return Value();
  DepthGuard guard(&depth_, limits_.max_depth, *this, node->pos);
  try {
    switch (node->type) {
      case NodeType::kIdentifier:
        return env->Lookup(node->str);
      case NodeType::kIntegerLiteral:
        return Value::Int(node->ival);
      case NodeType::kFloatLiteral:
        return Value::Float(node->fval);
      case NodeType::kStringLiteral:
        return Value::String(node->str);
      case NodeType::kBinary:
        return EvaluateBinary(node, env);
      case NodeType::kMember:
        return EvaluateMember(node, env);
      case NodeType::kCall:
        return EvaluateCall(node, env);
      case NodeType::kFilter: {
        Value operand = Evaluate(node->x.get(), env);
        return ApplyFilter(operand, node->y.get(), env);
      }
      case NodeType::kTest: {
        Value operand = Evaluate(node->x.get(), env);
        const bool result = ApplyTest(node->str, operand, node->pos);
        return Value::Bool(node->flag ? !result : result);
      }
      case NodeType::kTernary:
        return Evaluate(node->x.get(), env).Truthy() ? Evaluate(node->y.get(), env)
                                                     : Evaluate(node->z.get(), env);
      case NodeType::kUnary:
        return EvaluateUnary(node, env);
      case NodeType::kArrayLiteral:
      case NodeType::kTupleLiteral: {
        Array items;
        for (const NodePtr& item : node->a) items.push_back(Evaluate(item.get(), env));
        return Value::MakeArray(std::move(items), node->type == NodeType::kTupleLiteral);
      }
      case NodeType::kObjectLiteral: {
        Value object = Value::MakeObject({});
        for (size_t i = 0; i < node->a.size(); ++i) {
          Value key = Evaluate(node->a[i].get(), env);
          if (!key.is_string()) {
            Fail(absl::StrCat("Object keys must be strings: got ", key.TypeName()), node->pos);
          }
          object.Set(key.str(), Evaluate(node->b[i].get(), env));
        }
        return object;
      }
      case NodeType::kSelect:
        if (!Evaluate(node->y.get(), env).Truthy()) return Value();
        return Evaluate(node->x.get(), env);
      case NodeType::kIf:
      case NodeType::kFor: {
        TextBuilder out = Builder();
        if (node->type == NodeType::kIf) {
          RenderBlock(Evaluate(node->x.get(), env).Truthy() ? node->a : node->b, env, &out);
        } else {
          RenderFor(node, env, &out);
        }
        return out.Take();
      }
      case NodeType::kSet:
        ExecuteSet(node, env);
        return Value::Null();
      case NodeType::kMacro:
        return DefineMacro(node, env);
      case NodeType::kCallStatement:
        return EvaluateCallStatement(node, env);
      case NodeType::kFilterStatement: {
        Value rendered = RenderToString(node->a, env);
        return ApplyFilter(rendered, node->y.get(), env);
      }
      case NodeType::kComment:
        return Value::Null();
      case NodeType::kBreak:
        throw BreakSignal();
      case NodeType::kContinue:
        throw ContinueSignal();
      case NodeType::kProgram:
        return RenderToString(node->a, env);
      default:
        Fail("Unknown node type", node->pos);
    }
  } catch (JinjaError& e) {
    if (e.pos == std::string::npos) e.pos = node->pos;
    throw;
  }
}

Value Interpreter::EvaluateUnary(const Node* node, const EnvPtr& env) {
  Value argument = Evaluate(node->x.get(), env);
  if (node->str == "not") return Value::Bool(!argument.Truthy());
  const double sign = node->str == "-" ? -1 : 1;
  if (argument.is(Kind::kFloat)) return Value::Float(sign * argument.number());
  if (argument.is(Kind::kInt)) {
    return Value::Int(node->str == "-" ? -argument.integer() : argument.integer());
  }
  if (argument.is(Kind::kBool)) return Value::Int(static_cast<int64_t>(sign * argument.number()));
  Fail(absl::StrCat("Unknown operator \"", node->str, "\" for ", argument.TypeName()), node->pos);
}

Value Interpreter::EvaluateBinary(const Node* node, const EnvPtr& env) {
  const std::string& op = node->str;
  Value left = Evaluate(node->x.get(), env);
  if (op == "and") return left.Truthy() ? Evaluate(node->y.get(), env) : left;
  if (op == "or") return left.Truthy() ? left : Evaluate(node->y.get(), env);
  Value right = Evaluate(node->y.get(), env);
  if (op == "==") return Value::Bool(LooseEquals(left, right));
  if (op == "!=") return Value::Bool(!LooseEquals(left, right));

  if (left.is_number() && right.is_number() && op != "~" && op != "**") {
    const bool is_float = left.is(Kind::kFloat) || right.is(Kind::kFloat);
    const double a = left.number(), b = right.number();
    if (op == "+" || op == "-" || op == "*") {
      if (!is_float) {
        const int64_t x = left.integer(), y = right.integer();
        int64_t r = 0;
        const bool overflow = op == "+"   ? __builtin_add_overflow(x, y, &r)
                              : op == "-" ? __builtin_sub_overflow(x, y, &r)
                                          : __builtin_mul_overflow(x, y, &r);
        if (!overflow) return Value::Int(r);
      }
      const double r = op == "+" ? a + b : op == "-" ? a - b : a * b;
      return is_float ? Value::Float(r) : Value::Int(static_cast<int64_t>(r));
    }
    if (op == "/") return Value::Float(a / b);
    if (op == "//") {
      if (!is_float) {
        if (right.integer() == 0) Fail("integer division by zero", node->pos);
        return Value::Int(static_cast<int64_t>(std::floor(a / b)));
      }
      return Value::Float(std::floor(a / b));
    }
    if (op == "%") {
      if (!is_float) {
        if (right.integer() == 0) Fail("integer modulo by zero", node->pos);
        if (right.integer() == -1) return Value::Int(0);
        return Value::Int(left.integer() % right.integer());  // JS: sign of the dividend
      }
      return Value::Float(std::fmod(a, b));
    }
    if (op == "<") return Value::Bool(a < b);
    if (op == ">") return Value::Bool(a > b);
    if (op == ">=") return Value::Bool(a >= b);
    if (op == "<=") return Value::Bool(a <= b);
  } else if (left.is_undefined() || right.is_undefined()) {
    if (right.is_undefined() && (op == "in" || op == "not in")) {
      return Value::Bool(op == "not in");
    }
    if (op == "~" && !left.is_null() && !right.is_null()) {
      TextBuilder out = Builder();
      if (!left.is_undefined())
        out.Append(left.is_string() ? left : Derived(left.JsString(), {&left}));
      if (!right.is_undefined()) {
        out.Append(right.is_string() ? right : Derived(right.JsString(), {&right}));
      }
      return out.Take();
    }
    Fail(absl::StrCat("Cannot perform operation ", op, " on undefined values"), node->pos);
  } else if (left.is_null() || right.is_null()) {
    Fail("Cannot perform operation on null values", node->pos);
  } else if (op == "~") {
    TextBuilder out = Builder();
    out.Append(left.is_string() ? left : Derived(left.JsString(), {&left}));
    out.Append(right.is_string() ? right : Derived(right.JsString(), {&right}));
    return out.Take();
  } else if (op == "**" && left.is_numeric_like() && right.is_numeric_like()) {
    const double a = left.number(), b = right.number();
    if (a == 0 && b < 0) Fail("0.0 cannot be raised to a negative power", node->pos);
    const double r = std::pow(a, b);
    if (!std::isfinite(r)) Fail("Exponentiation result is not a finite real number", node->pos);
    const bool is_float = left.is(Kind::kFloat) || right.is(Kind::kFloat) || b < 0;
    if (!is_float && std::fabs(r) < 9e18) return Value::Int(static_cast<int64_t>(r));
    return Value::Float(r);
  } else if (left.is_array() && right.is_array()) {
    if (op == "+") {
      Array items = left.array();
      CountIterations(static_cast<int64_t>(right.array().size()));
      items.insert(items.end(), right.array().begin(), right.array().end());
      return Value::MakeArray(std::move(items));
    }
  } else if (right.is_array()) {
    bool member = false;
    for (const Value& item : right.array()) {
      if (StrictEquals(item, left)) {
        member = true;
        break;
      }
    }
    if (op == "in") return Value::Bool(member);
    if (op == "not in") return Value::Bool(!member);
  }
  if ((left.is_string() || right.is_string()) && op == "+") {
    TextBuilder out = Builder();
    out.Append(left.is_string() ? left : Derived(left.JsString(), {&left}));
    out.Append(right.is_string() ? right : Derived(right.JsString(), {&right}));
    return out.Take();
  }
  if (left.is_string() && right.is_string()) {
    const bool found = right.str().find(left.str()) != std::string::npos;
    if (op == "in") return Value::Bool(found);
    if (op == "not in") return Value::Bool(!found);
  }
  if (left.is_string() && right.is_object()) {
    const bool found = right.Find(left.str()) != nullptr;
    if (op == "in") return Value::Bool(found);
    if (op == "not in") return Value::Bool(!found);
  }
  Fail(absl::StrCat("Unknown operator \"", op, "\" between ", left.TypeName(), " and ",
                    right.TypeName()),
       node->pos);
}

Value Interpreter::EvaluateCall(const Node* node, const EnvPtr& env) {
  std::vector<Value> args = EvaluateCallArguments(node->a, env);
  Value fn = Evaluate(node->x.get(), env);
  if (!fn.is(Kind::kFunction)) {
    Fail(absl::StrCat("Cannot call something that is not a function: got ", fn.TypeName()),
         node->pos);
  }
  return fn.function()(args, *env);
}

Value Interpreter::EvaluateSlice(const Value& object, const Node* slice, const EnvPtr& env) {
  if (!object.is_array() && !object.is_string()) Fail("Slice object must be an array or string");
  Value start = Evaluate(slice->x.get(), env);
  Value stop = Evaluate(slice->y.get(), env);
  Value step = Evaluate(slice->z.get(), env);
  for (const Value* v : {&start, &stop, &step}) {
    if (!v->is(Kind::kInt) && !v->is_undefined()) Fail("Slice indices must be integers");
  }
  std::vector<std::string> chars;
  const int64_t length = object.is_array()
                             ? static_cast<int64_t>(object.array().size())
                             : static_cast<int64_t>((chars = CodePoints(object.str())).size());
  const int64_t st = step.is_undefined() ? 1 : step.integer();
  if (st == 0) Fail("slice step cannot be zero");
  int64_t b, e;
  if (st > 0) {
    b = start.is_undefined() ? 0 : start.integer();
    b = b < 0 ? std::max<int64_t>(length + b, 0) : std::min(b, length);
    e = stop.is_undefined() ? length : stop.integer();
    e = e < 0 ? std::max<int64_t>(length + e, 0) : std::min(e, length);
  } else {
    b = start.is_undefined() ? length - 1 : start.integer();
    b = b < 0 ? std::max<int64_t>(length + b, -1) : std::min(b, length - 1);
    e = stop.is_undefined() ? -1 : stop.integer();
    e = e < -1 ? std::max<int64_t>(length + e, -1) : std::min(e, length - 1);
  }
  Array items;
  std::string text;
  for (int64_t i = b; st > 0 ? i < e : i > e; i += st) {
    if (object.is_array()) {
      items.push_back(object.array()[static_cast<size_t>(i)]);
    } else {
      text += chars[static_cast<size_t>(i)];
    }
  }
  if (object.is_array()) return Value::MakeArray(std::move(items));
  return Derived(std::move(text), {&object});
}

Value Interpreter::EvaluateMember(const Node* node, const EnvPtr& env) {
  Value object = Evaluate(node->x.get(), env);
  Value property;
  if (node->flag) {
    if (node->y->type == NodeType::kSlice) return EvaluateSlice(object, node->y.get(), env);
    property = Evaluate(node->y.get(), env);
  } else if (node->y->type == NodeType::kIntegerLiteral) {
    property = Value::Int(node->y->ival);
  } else {
    property = Value::String(node->y->str);
  }
  if (object.is_attribute_container()) {
    if (!property.is_string()) {
      Fail(absl::StrCat("Cannot access property with non-string: got ", property.TypeName()),
           node->pos);
    }
    if (Value* found = object.Find(property.str())) return *found;
    if (object.is_object()) return Builtin(object, property.str());
    return Value();
  }
  if (object.is_array() || object.is_string()) {
    if (property.is(Kind::kInt)) {
      int64_t i = property.integer();
      if (object.is_array()) {
        const int64_t n = static_cast<int64_t>(object.array().size());
        if (i < 0) i += n;
        if (i < 0 || i >= n) return Value();
        return object.array()[static_cast<size_t>(i)];
      }
      std::vector<std::string> chars = CodePoints(object.str());
      const int64_t n = static_cast<int64_t>(chars.size());
      if (i < 0) i += n;
      if (i < 0 || i >= n) return Value();
      return Derived(chars[static_cast<size_t>(i)], {&object});
    }
    if (property.is_string()) return Builtin(object, property.str());
    Fail(absl::StrCat("Cannot access property with non-string/non-number: got ",
                      property.TypeName()),
         node->pos);
  }
  if (!property.is_string()) {
    Fail(absl::StrCat("Cannot access property with non-string: got ", property.TypeName()),
         node->pos);
  }
  return Builtin(object, property.str());
}

void Interpreter::ExecuteSet(const Node* node, const EnvPtr& env) {
  Value rhs = node->y ? Evaluate(node->y.get(), env) : RenderToString(node->a, env);
  const Node* assignee = node->x.get();
  if (assignee->type == NodeType::kIdentifier) {
    env->Set(assignee->str, std::move(rhs));
  } else if (assignee->type == NodeType::kTupleLiteral) {
    if (!rhs.is_array()) {
      Fail(absl::StrCat("Cannot unpack non-iterable type in set: ", rhs.TypeName()), node->pos);
    }
    if (rhs.array().size() != assignee->a.size()) {
      Fail(absl::StrCat("Too ", assignee->a.size() > rhs.array().size() ? "few" : "many",
                        " items to unpack in set"),
           node->pos);
    }
    for (size_t i = 0; i < assignee->a.size(); ++i) {
      if (assignee->a[i]->type != NodeType::kIdentifier) {
        Fail("Cannot unpack to non-identifier in set", node->pos);
      }
      env->Set(assignee->a[i]->str, rhs.array()[i]);
    }
  } else if (assignee->type == NodeType::kMember) {
    Value object = Evaluate(assignee->x.get(), env);
    if (!object.is(Kind::kNamespace)) {
      Fail("cannot assign attribute on non-namespace object", node->pos);
    }
    if (assignee->y->type != NodeType::kIdentifier) {
      Fail("Cannot assign to member with non-identifier property", node->pos);
    }
    object.Set(assignee->y->str, std::move(rhs));
  } else {
    Fail("Invalid LHS inside assignment expression", node->pos);
  }
}

void Interpreter::RenderFor(const Node* node, const EnvPtr& env, TextBuilder* out) {
  auto scope = std::make_shared<Environment>(env);
  const Node* test = nullptr;
  Value iterable;
  if (node->y->type == NodeType::kSelect) {
    iterable = Evaluate(node->y->x.get(), scope);
    test = node->y->y.get();
  } else {
    iterable = Evaluate(node->y.get(), scope);
  }
  if (!iterable.is_array() && !iterable.is_object()) {
    Fail(absl::StrCat("Expected iterable or object type in for loop: got ", iterable.TypeName()),
         node->pos);
  }
  if (iterable.is_object()) {
    Array keys;
    for (const auto& [key, value] : iterable.object()) keys.push_back(iterable.KeyString(key));
    iterable = Value::MakeArray(std::move(keys));
  }
  const Node* loopvar = node->x.get();
  auto bind = [&](const Value& current, Environment& target) {
    if (loopvar->type == NodeType::kIdentifier) {
      target.Set(loopvar->str, current);
      return;
    }
    for (size_t j = 0; j < loopvar->a.size(); ++j) {
      if (loopvar->a[j]->type != NodeType::kIdentifier) {
        Fail("Cannot unpack non-identifier type", node->pos);
      }
      Value item = current.is_array() && j < current.array().size() ? current.array()[j] : Value();
      target.Set(loopvar->a[j]->str, std::move(item));
    }
  };
  const Array candidates = iterable.array();  // a copy: the body may not see later changes
  Array items;
  for (const Value& current : candidates) {
    CountIterations(1);
    if (loopvar->type == NodeType::kTupleLiteral) {
      if (!current.is_array()) {
        Fail(absl::StrCat("Cannot unpack non-iterable type: ", current.TypeName()), node->pos);
      }
      if (current.array().size() != loopvar->a.size()) {
        Fail(absl::StrCat("Too ", loopvar->a.size() > current.array().size() ? "few" : "many",
                          " items to unpack"),
             node->pos);
      }
    }
    if (test != nullptr) {
      auto loop_scope = std::make_shared<Environment>(scope);
      bind(current, *loop_scope);
      if (!Evaluate(test, loop_scope).Truthy()) continue;
    }
    items.push_back(current);
  }
  bool no_iteration = true;
  const int64_t n = static_cast<int64_t>(items.size());
  for (int64_t i = 0; i < n; ++i) {
    CountIterations(1);
    Object loop = {
        {"index", Value::Int(i + 1)},
        {"index0", Value::Int(i)},
        {"revindex", Value::Int(n - i)},
        {"revindex0", Value::Int(n - i - 1)},
        {"first", Value::Bool(i == 0)},
        {"last", Value::Bool(i == n - 1)},
        {"length", Value::Int(n)},
        {"previtem", i > 0 ? items[i - 1] : Value()},
        {"nextitem", i < n - 1 ? items[i + 1] : Value()},
    };
    scope->Set("loop", Value::MakeObject(std::move(loop)));
    bind(items[i], *scope);
    TextBuilder body = Builder(limits_.max_string_bytes - out->size() + 1);
    try {
      RenderBlock(node->a, scope, &body);
    } catch (const ContinueSignal&) {
      continue;
    } catch (const BreakSignal&) {
      break;
    }
    out->Append(body.Take());
    no_iteration = false;
  }
  if (no_iteration) RenderBlock(node->b, scope, out);
}

}  // namespace tokenmill::chat::jinja
