// Filters ({{ x | name }}, {{ x | name(args) }}) and macros / call blocks of
// the Jinja interpreter, following @huggingface/jinja's applyFilter and
// evaluateMacro / evaluateCallStatement.
#include <algorithm>
#include <cmath>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "runtime/chat/jinja_interpreter.h"
#include "runtime/chat/jinja_lexer.h"

namespace tokenmill::chat::jinja {
namespace {

Value Kw(const Object& kwargs, std::string_view key) {
  for (const auto& [k, v] : kwargs) {
    if (k == key) return v;
  }
  return Value();
}

Value First(std::initializer_list<Value> candidates) {
  for (const Value& v : candidates) {
    if (!v.is_undefined()) return v;
  }
  return Value();
}

std::optional<int64_t> ParseIntPrefix(std::string_view s) {
  s = TrimStart(s);
  bool negative = false;
  if (!s.empty() && (s[0] == '-' || s[0] == '+')) {
    negative = s[0] == '-';
    s.remove_prefix(1);
  }
  size_t n = 0;
  int64_t value = 0;
  while (n < s.size() && s[n] >= '0' && s[n] <= '9') {
    if (value < 900000000000000000) value = value * 10 + (s[n] - '0');
    ++n;
  }
  if (n == 0) return std::nullopt;
  return negative ? -value : value;
}

std::optional<double> ParseFloatPrefix(std::string_view s) {
  s = TrimStart(s);
  size_t n = 0;
  if (n < s.size() && (s[n] == '-' || s[n] == '+')) ++n;
  if (s.substr(n, 8) == "Infinity") return s[0] == '-' ? -INFINITY : INFINITY;
  bool digits = false;
  while (n < s.size() && s[n] >= '0' && s[n] <= '9') ++n, digits = true;
  if (n < s.size() && s[n] == '.') {
    ++n;
    while (n < s.size() && s[n] >= '0' && s[n] <= '9') ++n, digits = true;
  }
  if (!digits) return std::nullopt;
  if (n < s.size() && (s[n] == 'e' || s[n] == 'E')) {
    size_t m = n + 1;
    if (m < s.size() && (s[m] == '-' || s[m] == '+')) ++m;
    if (m < s.size() && s[m] >= '0' && s[m] <= '9') {
      while (m < s.size() && s[m] >= '0' && s[m] <= '9') ++m;
      n = m;
    }
  }
  return std::strtod(std::string(s.substr(0, n)).c_str(), nullptr);
}

std::string JoinPieceOf(const Value& v) {
  if (v.is_null() || v.is_undefined()) return "";
  return v.JsString();
}

Value AttributeOf(const Value& item, const std::string& path) {
  Value value = item;
  size_t start = 0;
  while (true) {
    const size_t dot = path.find('.', start);
    const std::string part = path.substr(start, dot == std::string::npos ? dot : dot - start);
    if (value.is_attribute_container()) {
      Value* found = value.Find(part);
      value = found ? *found : Value();
    } else if (value.is_array()) {
      std::optional<int64_t> index = ParseIntPrefix(part);
      if (!index || *index < 0 || *index >= static_cast<int64_t>(value.array().size())) {
        return Value();
      }
      value = value.array()[static_cast<size_t>(*index)];
    } else {
      return Value();
    }
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return value;
}

}  // namespace

Value Interpreter::ApplyFilter(const Value& operand, const Node* filter, const EnvPtr& env) {
  if (filter->type == NodeType::kIdentifier) {
    const std::string& name = filter->str;
    if (name == "safe") return operand;
    if (name == "tojson") {
      absl::StatusOr<std::string> json = ToJson(operand, {});
      if (!json.ok()) Fail(std::string(json.status().message()), filter->pos);
      return Derived(*std::move(json), {&operand});
    }
    if (operand.is_array()) {
      const Array& items = operand.array();
      if (name == "list") return operand;
      if (name == "first") return items.empty() ? Value() : items.front();
      if (name == "last") return items.empty() ? Value() : items.back();
      if (name == "length") return Value::Int(static_cast<int64_t>(items.size()));
      if (name == "reverse") return Value::MakeArray(Array(items.rbegin(), items.rend()));
      if (name == "sort") {
        Array sorted = items;
        std::stable_sort(sorted.begin(), sorted.end(), [](const Value& a, const Value& b) {
          return CompareValues(a, b, false) < 0;
        });
        return Value::MakeArray(std::move(sorted));
      }
      if (name == "join") {
        TextBuilder out = Builder();
        for (const Value& item : items) {
          if (item.is_string()) {
            out.Append(item);
          } else {
            out.Append(Derived(JoinPieceOf(item), {&item}));
          }
        }
        return out.Take();
      }
      if (name == "string") {
        absl::StatusOr<std::string> json = ToJson(operand, {}, false);
        if (!json.ok()) Fail(std::string(json.status().message()), filter->pos);
        return Derived(*std::move(json), {&operand});
      }
      if (name == "unique") {
        Array out;
        for (const Value& item : items) {
          bool seen = false;
          for (const Value& kept : out) {
            CountIterations(1);
            if (StrictEquals(kept, item)) {
              seen = true;
              break;
            }
          }
          if (!seen) out.push_back(item);
        }
        return Value::MakeArray(std::move(out));
      }
      Fail(absl::StrCat("Unknown ArrayValue filter: ", name), filter->pos);
    }
    if (operand.is_string()) {
      if (name == "length" || name == "upper" || name == "lower" || name == "title" ||
          name == "capitalize") {
        Value builtin = Builtin(operand, name);
        if (builtin.is(Kind::kFunction)) {
          std::vector<Value> none;
          return builtin.function()(none, *env);
        }
        return builtin;
      }
      if (name == "trim")
        return Derived(std::string(TrimEnd(TrimStart(operand.str()))), {&operand});
      if (name == "indent") {
        std::string out;
        size_t start = 0;
        bool first = true;
        while (true) {
          const size_t nl = operand.str().find('\n', start);
          std::string_view line =
              std::string_view(operand.str())
                  .substr(start, nl == std::string::npos ? std::string::npos : nl - start);
          if (!first) out += '\n';
          if (!first && !line.empty()) out += "    ";
          out += line;
          first = false;
          if (nl == std::string::npos) break;
          start = nl + 1;
        }
        return Derived(std::move(out), {&operand});
      }
      if (name == "join" || name == "string") return operand;
      if (name == "int") return Value::Int(ParseIntPrefix(operand.str()).value_or(0));
      if (name == "float") return Value::Float(ParseFloatPrefix(operand.str()).value_or(0));
      Fail(absl::StrCat("Unknown StringValue filter: ", name), filter->pos);
    }
    if (operand.is_number()) {
      const bool is_int = operand.is(Kind::kInt);
      if (name == "abs") {
        return is_int ? Value::Int(operand.integer() < 0 ? -operand.integer() : operand.integer())
                      : Value::Float(std::fabs(operand.number()));
      }
      if (name == "int") {
        if (is_int) return operand;
        const double t = std::trunc(operand.number());
        if (!std::isfinite(t) || std::fabs(t) > 9e18) Fail("int: value out of range", filter->pos);
        return Value::Int(static_cast<int64_t>(t));
      }
      if (name == "float") return Value::Float(operand.number());
      if (name == "string") return Value::String(operand.Print());
      Fail(absl::StrCat("Unknown NumericValue filter: ", name), filter->pos);
    }
    if (operand.is_object()) {
      if (name == "items") {
        std::vector<Value> none;
        return Builtin(operand, "items").function()(none, *env);
      }
      if (name == "length") return Value::Int(static_cast<int64_t>(operand.object().size()));
      Value builtin = Builtin(operand, name);
      if (builtin.is(Kind::kFunction)) {
        std::vector<Value> none;
        return builtin.function()(none, *env);
      }
      if (!builtin.is_undefined()) return builtin;
      Fail(absl::StrCat("Unknown ObjectValue filter: ", name), filter->pos);
    }
    if (operand.is(Kind::kBool)) {
      if (name == "bool") return operand;
      if (name == "int") return Value::Int(operand.boolean() ? 1 : 0);
      if (name == "float") return Value::Float(operand.boolean() ? 1 : 0);
      if (name == "string") return Value::String(operand.boolean() ? "true" : "false");
      Fail(absl::StrCat("Unknown BooleanValue filter: ", name), filter->pos);
    }
    Fail(absl::StrCat("Cannot apply filter \"", name, "\" to type: ", operand.TypeName()),
         filter->pos);
  }
  if (filter->type != NodeType::kCall || filter->x->type != NodeType::kIdentifier) {
    Fail("Unknown filter", filter->pos);
  }
  const std::string& name = filter->x->str;
  std::vector<Value> args;
  Object kwargs;
  if (name == "tojson") {
    EvaluateArguments(filter->a, env, &args, &kwargs);
    ToJsonOptions options;
    Value indent = Kw(kwargs, "indent");
    if (!indent.is_undefined() && !indent.is(Kind::kInt) && !indent.is_null()) {
      Fail("If set, indent must be a number", filter->pos);
    }
    if (indent.is(Kind::kInt)) {
      options.indent = static_cast<int>(std::clamp<int64_t>(indent.integer(), 0, 64));
    }
    Value ensure_ascii = Kw(kwargs, "ensure_ascii");
    if (!ensure_ascii.is_undefined() && !ensure_ascii.is(Kind::kBool)) {
      Fail("If set, ensure_ascii must be a boolean", filter->pos);
    }
    options.ensure_ascii = ensure_ascii.is(Kind::kBool) && ensure_ascii.boolean();
    Value sort_keys = Kw(kwargs, "sort_keys");
    if (!sort_keys.is_undefined() && !sort_keys.is(Kind::kBool)) {
      Fail("If set, sort_keys must be a boolean", filter->pos);
    }
    options.sort_keys = sort_keys.is(Kind::kBool) && sort_keys.boolean();
    Value separators = Kw(kwargs, "separators");
    if (separators.is_array()) {
      if (separators.array().size() != 2 || !separators.array()[0].is_string() ||
          !separators.array()[1].is_string()) {
        Fail("separators must be a tuple of two strings", filter->pos);
      }
      options.has_separators = true;
      options.item_separator = separators.array()[0].str();
      options.key_separator = separators.array()[1].str();
    } else if (!separators.is_undefined() && !separators.is_null()) {
      Fail("If set, separators must be a tuple of two strings", filter->pos);
    }
    absl::StatusOr<std::string> json = ToJson(operand, options);
    if (!json.ok()) Fail(std::string(json.status().message()), filter->pos);
    return Derived(*std::move(json), {&operand});
  }
  if (name == "join") {
    if (!operand.is_string() && !operand.is_array()) {
      Fail(absl::StrCat("Cannot apply filter \"join\" to type: ", operand.TypeName()), filter->pos);
    }
    EvaluateArguments(filter->a, env, &args, &kwargs);
    Value separator = First({args.empty() ? Value() : args[0], Kw(kwargs, "separator")});
    if (separator.is_undefined()) separator = Value::String("");
    if (!separator.is_string()) Fail("separator must be a string", filter->pos);
    TextBuilder out = Builder();
    if (operand.is_string()) {
      std::vector<std::string> chars = CodePoints(operand.str());
      std::string joined;
      for (size_t i = 0; i < chars.size(); ++i) {
        if (i > 0) joined += separator.str();
        joined += chars[i];
        if (joined.size() > limits_.max_string_bytes) MakeString(std::move(joined), false);
      }
      return Derived(std::move(joined), {&operand, &separator});
    }
    bool first = true;
    for (const Value& item : operand.array()) {
      if (!first) out.Append(separator);
      first = false;
      out.Append(item.is_string() ? item : Derived(JoinPieceOf(item), {&item}));
    }
    return out.Take();
  }
  if (name == "int" || name == "float") {
    EvaluateArguments(filter->a, env, &args, &kwargs);
    Value fallback = First({args.empty() ? Value() : args[0], Kw(kwargs, "default")});
    if (fallback.is_undefined()) fallback = name == "int" ? Value::Int(0) : Value::Float(0);
    if (operand.is_string()) {
      if (name == "int") {
        std::optional<int64_t> v = ParseIntPrefix(operand.str());
        return v ? Value::Int(*v) : fallback;
      }
      std::optional<double> v = ParseFloatPrefix(operand.str());
      return v ? Value::Float(*v) : fallback;
    }
    if (operand.is_number()) {
      if (name == "float") return Value::Float(operand.number());
      if (operand.is(Kind::kInt)) return operand;
      const double t = std::trunc(operand.number());
      if (!std::isfinite(t) || std::fabs(t) > 9e18) Fail("int: value out of range", filter->pos);
      return Value::Int(static_cast<int64_t>(t));
    }
    if (operand.is(Kind::kBool)) {
      return name == "int" ? Value::Int(operand.boolean() ? 1 : 0)
                           : Value::Float(operand.boolean() ? 1 : 0);
    }
    Fail(absl::StrCat("Cannot apply filter \"", name, "\" to type: ", operand.TypeName()),
         filter->pos);
  }
  if (name == "default") {
    EvaluateArguments(filter->a, env, &args, &kwargs);
    Value fallback = args.empty() ? Value::String("") : args[0];
    Value boolean = First({args.size() > 1 ? args[1] : Value(), Kw(kwargs, "boolean")});
    if (boolean.is_undefined()) boolean = Value::Bool(false);
    if (!boolean.is(Kind::kBool)) Fail("`default` filter flag must be a boolean", filter->pos);
    if (operand.is_undefined() || (boolean.boolean() && !operand.Truthy())) return fallback;
    return operand;
  }
  if (operand.is_array()) {
    const Array& items = operand.array();
    if (name == "sort") {
      EvaluateArguments(filter->a, env, &args, &kwargs);
      Value reverse = First({args.size() > 0 ? args[0] : Value(), Kw(kwargs, "reverse")});
      Value case_sensitive =
          First({args.size() > 1 ? args[1] : Value(), Kw(kwargs, "case_sensitive")});
      Value attribute = First({args.size() > 2 ? args[2] : Value(), Kw(kwargs, "attribute")});
      if (!reverse.is_undefined() && !reverse.is(Kind::kBool)) {
        Fail("reverse must be a boolean", filter->pos);
      }
      if (!case_sensitive.is_undefined() && !case_sensitive.is(Kind::kBool)) {
        Fail("case_sensitive must be a boolean", filter->pos);
      }
      const bool rev = reverse.is(Kind::kBool) && reverse.boolean();
      const bool cs = case_sensitive.is(Kind::kBool) && case_sensitive.boolean();
      std::string path;
      if (attribute.is_string()) path = attribute.str();
      if (attribute.is(Kind::kInt)) path = absl::StrCat(attribute.integer());
      const bool by_attribute = attribute.is_string() || attribute.is(Kind::kInt);
      Array sorted = items;
      std::stable_sort(sorted.begin(), sorted.end(), [&](const Value& a, const Value& b) {
        const int r = by_attribute ? CompareValues(AttributeOf(a, path), AttributeOf(b, path), cs)
                                   : CompareValues(a, b, cs);
        return rev ? r > 0 : r < 0;
      });
      return Value::MakeArray(std::move(sorted));
    }
    if (name == "selectattr" || name == "rejectattr") {
      const bool select = name == "selectattr";
      for (const Value& item : items) {
        if (!item.is_attribute_container()) {
          Fail(absl::StrCat("`", name, "` can only be applied to array of objects"), filter->pos);
        }
      }
      for (const NodePtr& arg : filter->a) {
        if (arg->type != NodeType::kStringLiteral) {
          Fail(absl::StrCat("arguments of `", name, "` must be strings"), filter->pos);
        }
      }
      if (filter->a.empty()) Fail(absl::StrCat("`", name, "` needs an attribute"), filter->pos);
      const std::string& attr = filter->a[0]->str;
      const std::string test = filter->a.size() > 1 ? filter->a[1]->str : "";
      const Value argument = filter->a.size() > 2 ? Value::String(filter->a[2]->str) : Value();
      Array out;
      for (const Value& item : items) {
        CountIterations(1);
        const Value* a = item.Find(attr);
        bool result = false;
        if (a != nullptr)
          result = test.empty() ? a->Truthy() : ApplyTest(test, *a, filter->pos, argument);
        if (result == select) out.push_back(item);
      }
      return Value::MakeArray(std::move(out));
    }
    if (name == "map") {
      EvaluateArguments(filter->a, env, &args, &kwargs);
      Value attr = Kw(kwargs, "attribute");
      if (attr.is_undefined()) {
        Fail("`map` expressions without `attribute` set are not currently supported.", filter->pos);
      }
      if (!attr.is_string()) Fail("attribute must be a string", filter->pos);
      Value fallback = Kw(kwargs, "default");
      Array out;
      for (const Value& item : items) {
        if (!item.is_attribute_container()) Fail("items in map must be an object", filter->pos);
        Value v = AttributeOf(item, attr.str());
        out.push_back(v.is_undefined() ? fallback : v);
      }
      return Value::MakeArray(std::move(out));
    }
    Fail(absl::StrCat("Unknown ArrayValue filter: ", name), filter->pos);
  }
  if (operand.is_string()) {
    if (name == "indent") {
      EvaluateArguments(filter->a, env, &args, &kwargs);
      Value width = First({args.size() > 0 ? args[0] : Value(), Kw(kwargs, "width")});
      if (width.is_undefined()) width = Value::Int(4);
      if (!width.is(Kind::kInt) && !width.is_string()) {
        Fail("width must be an integer or a string", filter->pos);
      }
      const bool first = First({args.size() > 1 ? args[1] : Value(), Kw(kwargs, "first")}).Truthy();
      const bool blank = First({args.size() > 2 ? args[2] : Value(), Kw(kwargs, "blank")}).Truthy();
      const std::string indent =
          width.is_string()
              ? width.str()
              : std::string(static_cast<size_t>(std::clamp<int64_t>(width.integer(), 0, 256)), ' ');
      std::string out;
      size_t start = 0;
      bool at_first = true;
      while (true) {
        const size_t nl = operand.str().find('\n', start);
        std::string_view line =
            std::string_view(operand.str())
                .substr(start, nl == std::string::npos ? std::string::npos : nl - start);
        if (!at_first) out += '\n';
        if (!((!first && at_first) || (!blank && line.empty()))) out += indent;
        out += line;
        if (out.size() > limits_.max_string_bytes) MakeString(std::move(out), false);
        at_first = false;
        if (nl == std::string::npos) break;
        start = nl + 1;
      }
      return Derived(std::move(out), {&operand, &width});
    }
    if (name == "replace") {
      EvaluateArguments(filter->a, env, &args, &kwargs);
      args.push_back(Value::MakeObject(std::move(kwargs), true));
      return Builtin(operand, "replace").function()(args, *env);
    }
    Fail(absl::StrCat("Unknown StringValue filter: ", name), filter->pos);
  }
  if (operand.is_object()) {
    Value builtin = Builtin(operand, name);
    if (builtin.is(Kind::kFunction)) {
      std::vector<Value> call_args = EvaluateCallArguments(filter->a, env);
      return builtin.function()(call_args, *env);
    }
    Fail(absl::StrCat("Unknown ObjectValue filter: ", name), filter->pos);
  }
  Fail(absl::StrCat("Cannot apply filter \"", name, "\" to type: ", operand.TypeName()),
       filter->pos);
}

void Interpreter::BindMacroArguments(const std::string& name,
                                     const std::vector<NodePtr>& parameters, const Node* owner,
                                     std::vector<Value> args, const EnvPtr& scope) {
  Object keywords;
  if (!args.empty() && args.back().is_kwargs()) {
    keywords = args.back().object();
    args.pop_back();
  }
  std::vector<std::pair<std::string, const Node*>> pending_defaults;
  for (size_t i = 0; i < parameters.size(); ++i) {
    const Node* param = parameters[i].get();
    const std::string& param_name = param->str;
    Value value = i < args.size() ? args[i] : Value();
    bool given = i < args.size();
    if (!given) {
      for (auto it = keywords.begin(); it != keywords.end(); ++it) {
        if (it->first == param_name) {
          value = it->second;
          given = true;
          keywords.erase(it);
          break;
        }
      }
    }
    if (!given && param->type == NodeType::kKeywordArgument) {
      pending_defaults.emplace_back(param_name, param->x.get());
    }
    scope->Set(param_name, value);
  }
  if (owner->uses_kwargs) {
    scope->Set("kwargs", Value::MakeObject(std::move(keywords)));
  } else if (!keywords.empty()) {
    Fail(absl::StrCat("macro ", name, " takes no keyword argument '", keywords.front().first, "'"));
  }
  if (owner->uses_varargs) {
    Array rest;
    for (size_t i = parameters.size(); i < args.size(); ++i) rest.push_back(args[i]);
    scope->Set("varargs", Value::MakeArray(std::move(rest)));
  } else if (args.size() > parameters.size()) {
    Fail(absl::StrCat("macro ", name, " takes not more than ", parameters.size(), " argument(s)"));
  }
  for (const auto& [param_name, default_node] : pending_defaults) {
    scope->Set(param_name, Evaluate(default_node, scope));
  }
}

Value Interpreter::DefineMacro(const Node* node, const EnvPtr& env) {
  // A weak reference: the environment holds the macro, so a strong one
  // would be a cycle.
  std::weak_ptr<Environment> weak_env = env;
  env->Set(node->str, Value::MakeFunction([this, node, weak_env](std::vector<Value>& args,
                                                                 Environment& call_site) -> Value {
             EnvPtr defining = weak_env.lock();
             if (!defining) Fail(absl::StrCat("macro '", node->str, "' outlived its scope"));
             EnvPtr parent = defining;
             if (node->uses_caller) {
               Value caller;
               if (call_site.call_block_scope) {
                 if (const Value* found = call_site.FindOwn("caller")) caller = *found;
               }
               parent = std::make_shared<Environment>(defining);
               parent->Set("caller", caller);
             }
             auto scope = std::make_shared<Environment>(parent);
             BindMacroArguments(absl::StrCat("'", node->str, "'"), node->a, node, args, scope);
             return RenderToString(node->b, scope);
           }));
  return Value::Null();
}

Value Interpreter::EvaluateCallStatement(const Node* node, const EnvPtr& env) {
  std::weak_ptr<Environment> weak_env = env;
  Value caller =
      Value::MakeFunction([this, node, weak_env](std::vector<Value>& args, Environment&) -> Value {
        EnvPtr defining = weak_env.lock();
        if (!defining) Fail("call block outlived its scope");
        auto scope = std::make_shared<Environment>(defining);
        BindMacroArguments("None", node->a, node, args, scope);
        return RenderToString(node->b, scope);
      });
  std::vector<Value> args;
  Object kwargs;
  EvaluateArguments(node->x->a, env, &args, &kwargs);
  args.push_back(Value::MakeObject(std::move(kwargs), true));
  Value fn = Evaluate(node->x->x.get(), env);
  if (!fn.is(Kind::kFunction)) {
    Fail(absl::StrCat("Cannot call something that is not a function: got ", fn.TypeName()),
         node->pos);
  }
  Environment call_env(env);
  call_env.call_block_scope = true;
  call_env.Set("caller", caller);
  return fn.function()(args, call_env);
}

}  // namespace tokenmill::chat::jinja
