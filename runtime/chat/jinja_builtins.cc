// Filters, tests, the methods of strings / objects / arrays, macros and call
// blocks, as @huggingface/jinja implements them (its semantics, not Python
// Jinja's, where they differ: e.g. str.strip() ignores its argument).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "runtime/chat/jinja_interpreter.h"
#include "runtime/chat/jinja_lexer.h"

namespace tokenmill::chat::jinja {
namespace {

bool IsAsciiWord(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

std::string AsciiUpper(std::string s) {
  for (char& c : s) {
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  }
  return s;
}

std::string AsciiLower(std::string s) {
  for (char& c : s) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return s;
}

// /\b\w/g -> upper case: the first word character after a non-word one.
std::string TitleCase(std::string s) {
  for (size_t i = 0; i < s.size(); ++i) {
    if (IsAsciiWord(s[i]) && (i == 0 || !IsAsciiWord(s[i - 1])) && s[i] >= 'a' && s[i] <= 'z') {
      s[i] = static_cast<char>(s[i] - 'a' + 'A');
    }
  }
  return s;
}

// String.prototype.length: UTF-16 code units.
int64_t Utf16Length(std::string_view s) {
  int64_t n = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if ((c & 0xc0) == 0x80) continue;
    n += c >= 0xf0 ? 2 : 1;
  }
  return n;
}

Value Kwarg(const Object& kwargs, std::string_view key) {
  for (const auto& [k, v] : kwargs) {
    if (k == key) return v;
  }
  return Value();
}

// The first defined of: positional argument i, keyword `key`, `fallback`.
Value Arg(const std::vector<Value>& args, size_t i, const Object& kwargs, std::string_view key,
          Value fallback) {
  if (i < args.size()) return args[i];
  Value kw = Kwarg(kwargs, key);
  return kw.is_undefined() ? std::move(fallback) : kw;
}

}  // namespace

std::vector<std::string> CodePoints(std::string_view s) {
  std::vector<std::string> out;
  for (size_t i = 0; i < s.size();) {
    size_t n = 1;
    while (i + n < s.size() && (static_cast<unsigned char>(s[i + n]) & 0xc0) == 0x80) ++n;
    out.emplace_back(s.substr(i, n));
    i += n;
  }
  return out;
}

bool StrictEquals(const Value& a, const Value& b) {
  if ((a.is_null() || a.is_undefined()) && (b.is_null() || b.is_undefined())) return true;
  if (a.is_number() && b.is_number()) return a.number() == b.number();
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case Kind::kBool:
      return a.boolean() == b.boolean();
    case Kind::kString:
      return a.str() == b.str();
    default:
      return a.identity() == b.identity();
  }
}

bool LooseEquals(const Value& a, const Value& b) {
  const bool a_nullish = a.is_null() || a.is_undefined();
  const bool b_nullish = b.is_null() || b.is_undefined();
  if (a_nullish || b_nullish) return a_nullish && b_nullish;
  if (a.is_string() && b.is_string()) return a.str() == b.str();
  if (a.is_numeric_like() && b.is_numeric_like()) return a.number() == b.number();
  if (a.is_string() != b.is_string() && (a.is_numeric_like() || b.is_numeric_like())) {
    const Value& s = a.is_string() ? a : b;
    const Value& n = a.is_string() ? b : a;
    std::string_view text = TrimEnd(TrimStart(s.str()));
    if (text.empty()) return n.number() == 0;
    char* end = nullptr;
    const std::string copy(text);
    const double d = std::strtod(copy.c_str(), &end);
    if (end != copy.c_str() + copy.size()) return false;
    return d == n.number();
  }
  return StrictEquals(a, b);
}

int CompareValues(const Value& a, const Value& b, bool case_sensitive) {
  if (a.is_null() && b.is_null()) return 0;
  if (a.is_null() || b.is_null() || a.is_undefined() != b.is_undefined()) {
    throw JinjaError(absl::StrCat("Cannot compare ", a.TypeName(), " with ", b.TypeName()));
  }
  if (a.is_undefined()) return 0;
  if (a.is_numeric_like() && b.is_numeric_like()) {
    return a.number() < b.number() ? -1 : a.number() > b.number() ? 1 : 0;
  }
  if (a.kind() != b.kind() || !a.is_string()) {
    throw JinjaError(absl::StrCat("Cannot compare ", a.TypeName(), " and ", b.TypeName()));
  }
  std::string x = case_sensitive ? a.str() : AsciiLower(a.str());
  std::string y = case_sensitive ? b.str() : AsciiLower(b.str());
  return x < y ? -1 : x > y ? 1 : 0;
}

void Interpreter::EvaluateArguments(const std::vector<NodePtr>& args, const EnvPtr& env,
                                    std::vector<Value>* positional, Object* keywords) {
  auto add_keyword = [&](const std::string& key, Value value) {
    for (const auto& [k, v] : *keywords) {
      if (k == key) Fail(absl::StrCat("Got multiple values for keyword argument '", key, "'"));
    }
    keywords->emplace_back(key, std::move(value));
  };
  for (const NodePtr& arg : args) {
    if (arg->type == NodeType::kSpread) {
      Value v = Evaluate(arg->x.get(), env);
      if (!v.is_array()) Fail(absl::StrCat("Cannot unpack non-iterable type: ", v.TypeName()));
      for (const Value& item : v.array()) positional->push_back(item);
    } else if (arg->type != NodeType::kKeywordArgument && arg->type != NodeType::kKeywordSpread) {
      positional->push_back(Evaluate(arg.get(), env));
    }
  }
  for (const NodePtr& arg : args) {
    if (arg->type == NodeType::kKeywordArgument) {
      add_keyword(arg->str, Evaluate(arg->x.get(), env));
    } else if (arg->type == NodeType::kKeywordSpread) {
      Value v = Evaluate(arg->x.get(), env);
      if (!v.is_object()) Fail("Argument after ** must be a mapping");
      for (const auto& [key, value] : v.object()) add_keyword(key, value);
    }
  }
}

std::vector<Value> Interpreter::EvaluateCallArguments(const std::vector<NodePtr>& args,
                                                      const EnvPtr& env) {
  std::vector<Value> positional;
  Object keywords;
  EvaluateArguments(args, env, &positional, &keywords);
  if (!keywords.empty()) positional.push_back(Value::MakeObject(std::move(keywords), true));
  return positional;
}

bool Interpreter::ApplyTest(const std::string& name, const Value& v, size_t pos,
                            const Value& argument) {
  if (name == "boolean") return v.is(Kind::kBool);
  if (name == "callable") return v.is(Kind::kFunction);
  if (name == "odd" || name == "even") {
    if (!v.is(Kind::kInt)) Fail(absl::StrCat("cannot ", name, " on ", v.TypeName()), pos);
    return (v.integer() % 2 != 0) == (name == "odd");
  }
  if (name == "false") return v.is(Kind::kBool) && !v.boolean();
  if (name == "true") return v.is(Kind::kBool) && v.boolean();
  if (name == "none") return v.is_null();
  if (name == "string") return v.is_string();
  if (name == "number") return v.is_number();
  if (name == "integer") return v.is(Kind::kInt);
  if (name == "iterable") return (v.is_array() && !v.is_tuple()) || v.is_string();
  if (name == "mapping") return v.is_object();
  if (name == "sequence") return v.is_array() || v.is_object() || v.is_string();
  if (name == "lower") return v.is_string() && v.str() == AsciiLower(v.str());
  if (name == "upper") return v.is_string() && v.str() == AsciiUpper(v.str());
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "equalto" || name == "eq") return StrictEquals(v, argument);
  Fail(absl::StrCat("Unknown test: ", name), pos);
}

Value Interpreter::Builtin(const Value& object, const std::string& name) {
  if (object.is_string()) {
    if (name == "length") return Value::Int(Utf16Length(object.str()));
    auto method = [&](auto body) {
      return Value::MakeFunction([object, body](std::vector<Value>& args, Environment&) -> Value {
        return body(object, args);
      });
    };
    if (name == "upper") {
      return method([this](const Value& s, std::vector<Value>&) {
        return Derived(AsciiUpper(s.str()), {&s});
      });
    }
    if (name == "lower") {
      return method([this](const Value& s, std::vector<Value>&) {
        return Derived(AsciiLower(s.str()), {&s});
      });
    }
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      const int which = name == "strip" ? 0 : name == "lstrip" ? 1 : 2;
      return method([this, which](const Value& s, std::vector<Value>&) {
        std::string_view t = s.str();
        if (which != 2) t = TrimStart(t);
        if (which != 1) t = TrimEnd(t);
        return Derived(std::string(t), {&s});
      });
    }
    if (name == "title") {
      return method([this](const Value& s, std::vector<Value>&) {
        return Derived(TitleCase(s.str()), {&s});
      });
    }
    if (name == "capitalize") {
      return method([this](const Value& s, std::vector<Value>&) {
        std::string t = s.str();
        if (!t.empty() && t[0] >= 'a' && t[0] <= 'z') t[0] = static_cast<char>(t[0] - 'a' + 'A');
        return Derived(std::move(t), {&s});
      });
    }
    if (name == "startswith" || name == "endswith") {
      const bool starts = name == "startswith";
      return method([this, starts, name](const Value& s, std::vector<Value>& args) {
        if (args.empty()) Fail(absl::StrCat(name, "() requires at least one argument"));
        auto test = [&](const Value& p) {
          if (!p.is_string()) Fail(absl::StrCat(name, "() tuple elements must be strings"));
          const std::string& a = s.str();
          const std::string& b = p.str();
          if (b.size() > a.size()) return false;
          return starts ? a.compare(0, b.size(), b) == 0
                        : a.compare(a.size() - b.size(), b.size(), b) == 0;
        };
        if (args[0].is_string()) return Value::Bool(test(args[0]));
        if (args[0].is_array()) {
          for (const Value& p : args[0].array()) {
            if (test(p)) return Value::Bool(true);
          }
          return Value::Bool(false);
        }
        Fail(absl::StrCat(name, "() argument must be a string or tuple of strings"));
      });
    }
    if (name == "split") {
      return method([this](const Value& s, std::vector<Value>& args) {
        Value sep = args.size() > 0 ? args[0] : Value::Null();
        if (!sep.is_string() && !sep.is_null()) Fail("sep argument must be a string or null");
        Value maxsplit = args.size() > 1 ? args[1] : Value::Int(-1);
        if (!maxsplit.is(Kind::kInt)) Fail("maxsplit argument must be a number");
        const int64_t max = maxsplit.integer();
        std::vector<std::string> parts;
        if (sep.is_null()) {
          std::string_view text = TrimStart(s.str());
          size_t pos = 0;
          while (pos < text.size()) {
            size_t begin = pos;
            while (begin < text.size() && WhitespaceAt(text, begin))
              begin += WhitespaceAt(text, begin);
            if (begin >= text.size()) break;
            size_t end = begin;
            while (end < text.size() && !WhitespaceAt(text, end)) ++end;
            if (max >= 0 && static_cast<int64_t>(parts.size()) >= max) {
              parts.emplace_back(text.substr(begin));
              break;
            }
            parts.emplace_back(text.substr(begin, end - begin));
            pos = end;
          }
        } else {
          const std::string& d = sep.str();
          if (d.empty()) Fail("empty separator");
          const std::string& t = s.str();
          size_t start = 0;
          while (true) {
            CountIterations(1);
            size_t at = t.find(d, start);
            if (at == std::string::npos) {
              parts.push_back(t.substr(start));
              break;
            }
            parts.push_back(t.substr(start, at - start));
            start = at + d.size();
          }
          if (max >= 0 && static_cast<int64_t>(parts.size()) > max) {
            std::string tail;
            for (size_t i = static_cast<size_t>(max); i < parts.size(); ++i) {
              if (i > static_cast<size_t>(max)) tail += d;
              tail += parts[i];
            }
            parts.resize(static_cast<size_t>(max));
            parts.push_back(std::move(tail));
          }
        }
        Array items;
        for (std::string& part : parts) items.push_back(Derived(std::move(part), {&s}));
        return Value::MakeArray(std::move(items));
      });
    }
    if (name == "replace") {
      return method([this](const Value& s, std::vector<Value>& args) {
        if (args.size() < 2) Fail("replace() requires at least two arguments");
        const Value& from = args[0];
        const Value& to = args[1];
        if (!from.is_string() || !to.is_string()) Fail("replace() arguments must be strings");
        Value count = Value::Null();
        if (args.size() > 2) {
          count = args[2].is_kwargs() ? Kwarg(args[2].object(), "count") : args[2];
          if (count.is_undefined()) count = Value::Null();
        }
        if (!count.is(Kind::kInt) && !count.is_null()) {
          Fail("replace() count argument must be a number or null");
        }
        int64_t remaining = count.is_null() || count.integer() < 0 ? INT64_MAX : count.integer();
        if (count.is(Kind::kInt) && count.integer() == 0) return s;
        const std::string& t = s.str();
        std::string out;
        if (from.str().empty()) {
          std::vector<std::string> chars = CodePoints(t);
          for (size_t i = 0; i <= chars.size(); ++i) {
            if (remaining > 0) {
              out += to.str();
              --remaining;
            }
            if (i < chars.size()) out += chars[i];
            if (out.size() > limits().max_string_bytes) MakeString(std::move(out), false);
          }
        } else {
          size_t start = 0;
          while (remaining > 0) {
            size_t at = t.find(from.str(), start);
            if (at == std::string::npos) break;
            out.append(t, start, at - start);
            out += to.str();
            if (out.size() > limits().max_string_bytes) MakeString(std::move(out), false);
            start = at + from.str().size();
            --remaining;
          }
          out.append(t, start, std::string::npos);
        }
        return Derived(std::move(out), {&s, &to});
      });
    }
    return Value();
  }
  if (object.is_array()) {
    if (name == "length") return Value::Int(static_cast<int64_t>(object.array().size()));
    return Value();
  }
  if (!object.is_object()) return Value();
  if (name == "get") {
    return Value::MakeFunction([this, object](std::vector<Value>& args, Environment&) -> Value {
      if (args.empty() || !args[0].is_string()) {
        Fail(absl::StrCat("Object key must be a string: got ",
                          args.empty() ? "UndefinedValue" : args[0].TypeName()));
      }
      if (Value* found = object.Find(args[0].str())) return *found;
      if (args.size() > 1) return args[1];
      return Value::Null();
    });
  }
  if (name == "items" || name == "keys" || name == "values") {
    return Value::MakeFunction([object, name](std::vector<Value>&, Environment&) -> Value {
      Array out;
      for (const auto& [key, value] : object.object()) {
        if (name == "items") {
          out.push_back(Value::MakeArray({object.KeyString(key), value}));
        } else if (name == "keys") {
          out.push_back(object.KeyString(key));
        } else {
          out.push_back(value);
        }
      }
      return Value::MakeArray(std::move(out));
    });
  }
  if (name == "dictsort") {
    return Value::MakeFunction([this, object](std::vector<Value>& args, Environment&) -> Value {
      std::vector<Value> positional;
      Object kwargs;
      for (const Value& arg : args) {
        if (arg.is_kwargs()) {
          kwargs = arg.object();
        } else {
          positional.push_back(arg);
        }
      }
      Value case_sensitive = Arg(positional, 0, kwargs, "case_sensitive", Value::Bool(false));
      Value by = Arg(positional, 1, kwargs, "by", Value::String("key"));
      Value reverse = Arg(positional, 2, kwargs, "reverse", Value::Bool(false));
      if (!case_sensitive.is(Kind::kBool)) Fail("case_sensitive must be a boolean");
      if (!by.is_string() || (by.str() != "key" && by.str() != "value")) {
        Fail("by must be either 'key' or 'value'");
      }
      if (!reverse.is(Kind::kBool)) Fail("reverse must be a boolean");
      Array items;
      for (const auto& [key, value] : object.object()) {
        items.push_back(Value::MakeArray({object.KeyString(key), value}));
      }
      const size_t index = by.str() == "key" ? 0 : 1;
      std::stable_sort(items.begin(), items.end(), [&](const Value& a, const Value& b) {
        int r = CompareValues(a.array()[index], b.array()[index], case_sensitive.boolean());
        return reverse.boolean() ? r > 0 : r < 0;
      });
      return Value::MakeArray(std::move(items));
    });
  }
  return Value();
}

// The globals HF sets up: the constants, raise_exception, range,
// strftime_now (from the injected clock, in UTC) and namespace().
void Interpreter::SetupGlobals(Environment& env) {
  env.Set("false", Value::Bool(false));
  env.Set("true", Value::Bool(true));
  env.Set("none", Value::Null());
  env.Set("False", Value::Bool(false));
  env.Set("True", Value::Bool(true));
  env.Set("None", Value::Null());
  env.Set("raise_exception", Value::MakeFunction([this](std::vector<Value>& args, Environment&) {
            std::string message = args.empty() ? "undefined" : args[0].JsString();
            Fail(absl::StrCat("raise_exception: ", message));
            return Value();
          }));
  env.Set("range", Value::MakeFunction([this](std::vector<Value>& args, Environment&) {
            for (const Value& arg : args) {
              if (!arg.is(Kind::kInt)) Fail("range() arguments must be integers");
            }
            int64_t start = 0, stop = 0, step = 1;
            if (args.size() == 1) {
              stop = args[0].integer();
            } else if (args.size() >= 2) {
              start = args[0].integer();
              stop = args[1].integer();
              if (args.size() >= 3) step = args[2].integer();
            }
            if (step == 0) Fail("range() step must not be zero");
            Array items;
            for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
              CountIterations(1);
              items.push_back(Value::Int(i));
            }
            return Value::MakeArray(std::move(items));
          }));
  env.Set("strftime_now", Value::MakeFunction([this](std::vector<Value>& args, Environment&) {
            if (args.empty() || !args[0].is_string()) Fail("strftime_now() expects a format");
            static constexpr const char* kMonths[] = {
                "January", "February", "March",     "April",   "May",      "June",
                "July",    "August",   "September", "October", "November", "December"};
            const absl::CivilSecond t = absl::ToCivilSecond(now_, absl::UTCTimeZone());
            auto pad2 = [](int n) { return n < 10 ? absl::StrCat("0", n) : absl::StrCat(n); };
            const std::string& format = args[0].str();
            std::string out;
            for (size_t i = 0; i < format.size(); ++i) {
              if (format[i] != '%' || i + 1 >= format.size()) {
                out += format[i];
                continue;
              }
              const char c = format[i + 1];
              const std::string month = kMonths[t.month() - 1];
              switch (c) {
                case 'Y':
                  out += absl::StrCat(t.year());
                  break;
                case 'm':
                  out += pad2(t.month());
                  break;
                case 'd':
                  out += pad2(t.day());
                  break;
                case 'b':
                  out += month.substr(0, 3);
                  break;
                case 'B':
                  out += month;
                  break;
                case 'H':
                  out += pad2(t.hour());
                  break;
                case 'M':
                  out += pad2(t.minute());
                  break;
                case '%':
                  out += '%';
                  break;
                default:
                  out += format.substr(i, 2);
              }
              ++i;
            }
            return MakeString(std::move(out), false);
          }));
  env.Set(
      "namespace", Value::MakeFunction([this](std::vector<Value>& args, Environment&) {
        std::vector<Value> positional = args;
        Value kwargs;
        if (!positional.empty() && positional.back().is_kwargs()) {
          kwargs = positional.back();
          positional.pop_back();
        }
        if (positional.size() > 1) Fail("namespace expected at most 1 argument");
        Value ns = Value::MakeNamespace({});
        namespaces_.push_back(ns);
        if (positional.size() == 1) {
          const Value& source = positional[0];
          if (source.is_object()) {
            for (const auto& [key, value] : source.object()) ns.Set(key, value);
          } else if (source.is_array()) {
            for (const Value& pair : source.array()) {
              if (!pair.is_array() || pair.array().size() != 2 || !pair.array()[0].is_string()) {
                Fail("namespace expected an object or an iterable of [key, value] pairs");
              }
              ns.Set(pair.array()[0].str(), pair.array()[1]);
            }
          } else {
            Fail(absl::StrCat("'", source.TypeName(), "' object is not iterable"));
          }
        }
        if (kwargs.is_object()) {
          for (const auto& [key, value] : kwargs.object()) ns.Set(key, value);
        }
        return ns;
      }));
}

}  // namespace tokenmill::chat::jinja
