#include "runtime/chat/jinja_value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

#include "absl/strings/str_cat.h"

namespace tokenmill::chat::jinja {
namespace {

// Deeper nesting than this in tojson or printing is a cycle or an attack.
constexpr int kMaxJsonDepth = 128;

}  // namespace

Value Value::Null() {
  Value v;
  v.kind_ = Kind::kNull;
  return v;
}

Value Value::Bool(bool b) {
  Value v;
  v.kind_ = Kind::kBool;
  v.b_ = b;
  return v;
}

Value Value::Int(int64_t i) {
  Value v;
  v.kind_ = Kind::kInt;
  v.i_ = i;
  return v;
}

Value Value::Float(double f) {
  Value v;
  v.kind_ = Kind::kFloat;
  v.f_ = f;
  return v;
}

Value Value::String(std::string s, std::vector<InputSpan> input) {
  Value v;
  v.kind_ = Kind::kString;
  v.s_ = std::move(s);
  v.input_ = std::move(input);
  return v;
}

Value Value::InputString(std::string s) {
  std::vector<InputSpan> input;
  if (!s.empty()) input.push_back({0, s.size()});
  return String(std::move(s), std::move(input));
}

Value Value::MakeArray(Array items, bool tuple) {
  Value v;
  v.kind_ = Kind::kArray;
  v.tuple_ = tuple;
  v.array_ = std::make_shared<Array>(std::move(items));
  return v;
}

Value Value::MakeObject(Object entries, bool kwargs) {
  Value v;
  v.kind_ = Kind::kObject;
  v.kwargs_ = kwargs;
  v.object_ = std::make_shared<Object>(std::move(entries));
  return v;
}

Value Value::MakeNamespace(Object entries) {
  Value v = MakeObject(std::move(entries));
  v.kind_ = Kind::kNamespace;
  return v;
}

Value Value::MakeFunction(Function fn) {
  Value v;
  v.kind_ = Kind::kFunction;
  v.fn_ = std::make_shared<Function>(std::move(fn));
  return v;
}

Value Value::FromJson(const nlohmann::ordered_json& json) {
  switch (json.type()) {
    case nlohmann::ordered_json::value_t::null:
      return Null();
    case nlohmann::ordered_json::value_t::boolean:
      return Bool(json.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer:
      return Int(json.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned: {
      const uint64_t u = json.get<uint64_t>();
      if (u > static_cast<uint64_t>(INT64_MAX)) return Float(static_cast<double>(u));
      return Int(static_cast<int64_t>(u));
    }
    case nlohmann::ordered_json::value_t::number_float: {
      // JavaScript numbers: an integral double is an integer to the template.
      const double d = json.get<double>();
      if (std::nearbyint(d) == d && std::fabs(d) < 9007199254740992.0) {
        return Int(static_cast<int64_t>(d));
      }
      return Float(d);
    }
    case nlohmann::ordered_json::value_t::string:
      return InputString(json.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      Array items;
      items.reserve(json.size());
      for (const auto& item : json) items.push_back(FromJson(item));
      return MakeArray(std::move(items));
    }
    case nlohmann::ordered_json::value_t::object: {
      Object entries;
      entries.reserve(json.size());
      for (const auto& [key, item] : json.items()) entries.emplace_back(key, FromJson(item));
      Value v = MakeObject(std::move(entries));
      v.input_keys_ = true;
      return v;
    }
    default:
      return Value();
  }
}

Value Value::KeyString(const std::string& key) const {
  return input_keys_ ? InputString(key) : String(key);
}

double Value::number() const {
  switch (kind_) {
    case Kind::kInt:
      return static_cast<double>(i_);
    case Kind::kFloat:
      return f_;
    case Kind::kBool:
      return b_ ? 1 : 0;
    default:
      return 0;
  }
}

const void* Value::identity() const {
  if (array_) return array_.get();
  if (object_) return object_.get();
  if (fn_) return fn_.get();
  return nullptr;
}

bool Value::Truthy() const {
  switch (kind_) {
    case Kind::kUndefined:
    case Kind::kNull:
      return false;
    case Kind::kBool:
      return b_;
    case Kind::kInt:
      return i_ != 0;
    case Kind::kFloat:
      return f_ != 0 && !std::isnan(f_);
    case Kind::kString:
      return !s_.empty();
    case Kind::kArray:
      return !array_->empty();
    case Kind::kObject:
      return !object_->empty();
    case Kind::kNamespace:
    case Kind::kFunction:
      return true;
  }
  return false;
}

std::string JsNumber(double d) {
  if (std::isnan(d)) return "NaN";
  if (std::isinf(d)) return d > 0 ? "Infinity" : "-Infinity";
  if (d == 0) return "0";
  // Shortest round-trip digits, then JavaScript's layout rules.
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), d, std::chars_format::scientific);
  if (ec != std::errc()) return "NaN";
  std::string sci(buf, end);  // e.g. "-1.2345e+02"
  bool negative = sci[0] == '-';
  if (negative) sci.erase(0, 1);
  const size_t e = sci.find('e');
  std::string digits = sci.substr(0, e);
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
  const int exponent = std::stoi(sci.substr(e + 1));
  const int k = static_cast<int>(digits.size());
  const int n = exponent + 1;
  std::string out;
  if (k <= n && n <= 21) {
    out = digits + std::string(n - k, '0');
  } else if (0 < n && n <= 21) {
    out = digits.substr(0, n) + "." + digits.substr(n);
  } else if (-6 < n && n <= 0) {
    out = "0." + std::string(-n, '0') + digits;
  } else {
    out = digits.substr(0, 1);
    if (k > 1) out += "." + digits.substr(1);
    out += absl::StrCat("e", n - 1 >= 0 ? "+" : "-", std::abs(n - 1));
  }
  return negative ? "-" + out : out;
}

std::string Value::JsString() const {
  switch (kind_) {
    case Kind::kUndefined:
      return "undefined";
    case Kind::kNull:
      return "null";
    case Kind::kBool:
      return b_ ? "true" : "false";
    case Kind::kInt:
      return absl::StrCat(i_);
    case Kind::kFloat:
      return JsNumber(f_);
    case Kind::kString:
      return s_;
    case Kind::kArray: {
      // Array.prototype.toString over RuntimeValue objects.
      std::string out;
      for (size_t i = 0; i < array_->size(); ++i) {
        if (i > 0) out += ',';
        out += "[object Object]";
      }
      return out;
    }
    case Kind::kObject:
    case Kind::kNamespace:
      return "[object Map]";
    case Kind::kFunction:
      return "[function]";
  }
  return "";
}

std::string Value::Print() const {
  switch (kind_) {
    case Kind::kFloat: {
      if (f_ == 0 && std::signbit(f_)) return "-0.0";
      if (std::isfinite(f_) && std::nearbyint(f_) == f_ && std::fabs(f_) < 1e21) {
        char buf[64];
        std::snprintf(buf, sizeof(buf), "%.1f", f_);
        return buf;
      }
      return JsNumber(f_);
    }
    case Kind::kArray:
    case Kind::kObject:
    case Kind::kNamespace: {
      absl::StatusOr<std::string> json = ToJson(*this, {}, /*undefined_as_null=*/false);
      return json.ok() ? *json : "";
    }
    default:
      return JsString();
  }
}

Value* Value::Find(std::string_view key) const {
  if (!object_) return nullptr;
  for (auto& [k, v] : *object_) {
    if (k == key) return &v;
  }
  return nullptr;
}

void Value::Set(std::string key, Value value) const {
  if (Value* existing = Find(key)) {
    *existing = std::move(value);
    return;
  }
  object_->emplace_back(std::move(key), std::move(value));
}

const char* Value::TypeName() const {
  switch (kind_) {
    case Kind::kUndefined:
      return "UndefinedValue";
    case Kind::kNull:
      return "NullValue";
    case Kind::kBool:
      return "BooleanValue";
    case Kind::kInt:
      return "IntegerValue";
    case Kind::kFloat:
      return "FloatValue";
    case Kind::kString:
      return "StringValue";
    case Kind::kArray:
      return tuple_ ? "TupleValue" : "ArrayValue";
    case Kind::kObject:
      return kwargs_ ? "KeywordArgumentsValue" : "ObjectValue";
    case Kind::kNamespace:
      return "NamespaceValue";
    case Kind::kFunction:
      return "FunctionValue";
  }
  return "?";
}

void AppendJsonString(std::string_view s, bool ensure_ascii, std::string* out) {
  static constexpr char kHex[] = "0123456789abcdef";
  out->push_back('"');
  for (size_t i = 0; i < s.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    switch (c) {
      case '"':
        out->append("\\\"");
        continue;
      case '\\':
        out->append("\\\\");
        continue;
      case '\b':
        out->append("\\b");
        continue;
      case '\f':
        out->append("\\f");
        continue;
      case '\n':
        out->append("\\n");
        continue;
      case '\r':
        out->append("\\r");
        continue;
      case '\t':
        out->append("\\t");
        continue;
      default:
        break;
    }
    if (c < 0x20 || (ensure_ascii && c == 0x7f)) {
      out->append("\\u00");
      out->push_back(kHex[c >> 4]);
      out->push_back(kHex[c & 15]);
      continue;
    }
    if (!ensure_ascii || c < 0x80) {
      out->push_back(static_cast<char>(c));
      continue;
    }
    // ensure_ascii: \uXXXX per UTF-16 code unit of the UTF-8 sequence.
    uint32_t cp = 0;
    int extra = c >= 0xf0 ? 3 : c >= 0xe0 ? 2 : c >= 0xc0 ? 1 : 0;
    cp = extra == 3 ? c & 7 : extra == 2 ? c & 15 : extra == 1 ? c & 31 : 0xfffd;
    for (int k = 0; k < extra && i + 1 < s.size(); ++k) {
      cp = (cp << 6) | (static_cast<unsigned char>(s[++i]) & 63);
    }
    auto unit = [&](uint32_t u) {
      out->append("\\u");
      for (int shift = 12; shift >= 0; shift -= 4) out->push_back(kHex[(u >> shift) & 15]);
    };
    if (cp >= 0x10000) {
      cp -= 0x10000;
      unit(0xd800 + (cp >> 10));
      unit(0xdc00 + (cp & 0x3ff));
    } else {
      unit(cp);
    }
  }
  out->push_back('"');
}

absl::StatusOr<std::string> ToJson(const Value& value, const ToJsonOptions& options,
                                   bool undefined_as_null, int depth) {
  if (depth > kMaxJsonDepth) {
    return absl::InvalidArgumentError("tojson: nesting deeper than 128 levels");
  }
  std::string item_sep = options.has_separators ? options.item_separator
                         : options.indent > 0   ? ","
                                                : ", ";
  std::string key_sep = options.has_separators ? options.key_separator : ": ";
  switch (value.kind()) {
    case Kind::kNull:
      return std::string("null");
    case Kind::kUndefined:
      return std::string(undefined_as_null ? "null" : "undefined");
    case Kind::kBool:
      return std::string(value.boolean() ? "true" : "false");
    case Kind::kInt:
      return absl::StrCat(value.integer());
    case Kind::kFloat: {
      const double d = value.number();
      if (!std::isfinite(d)) return std::string("null");
      return JsNumber(d);
    }
    case Kind::kString: {
      std::string out;
      AppendJsonString(value.str(), options.ensure_ascii, &out);
      return out;
    }
    case Kind::kArray:
    case Kind::kObject:
    case Kind::kNamespace: {
      const std::string indent(options.indent > 0 ? options.indent : 0, ' ');
      std::string base = "\n";
      for (int i = 0; i < depth; ++i) base += indent;
      const std::string child = base + indent;
      std::vector<std::string> core;
      if (value.is_array()) {
        for (const Value& item : value.array()) {
          absl::StatusOr<std::string> s = ToJson(item, options, undefined_as_null, depth + 1);
          if (!s.ok()) return s.status();
          core.push_back(*std::move(s));
        }
        std::string out = "[";
        if (options.indent > 0 && !core.empty()) {
          out += child;
          for (size_t i = 0; i < core.size(); ++i) {
            if (i > 0) out += item_sep + child;
            out += core[i];
          }
          out += base;
        } else {
          for (size_t i = 0; i < core.size(); ++i) {
            if (i > 0) out += item_sep;
            out += core[i];
          }
        }
        return out + "]";
      }
      std::vector<const std::pair<std::string, Value>*> entries;
      for (const auto& entry : value.object()) entries.push_back(&entry);
      if (options.sort_keys) {
        std::stable_sort(entries.begin(), entries.end(),
                         [](const auto* a, const auto* b) { return a->first < b->first; });
      }
      for (const auto* entry : entries) {
        std::string v;
        if (options.indent > 0) v = child;
        AppendJsonString(entry->first, options.ensure_ascii, &v);
        v += key_sep;
        absl::StatusOr<std::string> s =
            ToJson(entry->second, options, undefined_as_null, depth + 1);
        if (!s.ok()) return s.status();
        v += *s;
        core.push_back(std::move(v));
      }
      std::string out = "{";
      for (size_t i = 0; i < core.size(); ++i) {
        if (i > 0) out += item_sep;
        out += core[i];
      }
      if (options.indent > 0 && !core.empty()) out += base;
      return out + "}";
    }
    case Kind::kFunction:
      return absl::InvalidArgumentError("tojson: cannot convert a function to JSON");
  }
  return std::string();
}

}  // namespace tokenmill::chat::jinja
