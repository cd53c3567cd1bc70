// Values of the Jinja interpreter (runtime/chat/jinja_*): the runtime types of
// @huggingface/jinja (undefined, none, booleans, integers, floats, strings,
// arrays/tuples, objects, namespaces, functions) with its semantics, which
// are JavaScript's where Python's and JavaScript's differ (printing, `==`).
//
// Strings remember which of their bytes came from the caller's input data
// (message content, tool arguments): `input` spans. The chat encoder parses
// control tokens only outside them, so user text cannot forge one. Any
// transformation of a string with input bytes (trim, slice, replace, ...)
// marks the whole result as input; only concatenation keeps spans exact.
//
// Arrays, objects and namespaces are shared by reference, as in JavaScript
// (a namespace set inside a loop is seen after it). Not thread-safe; each
// render builds its own values.
#pragma once

#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace tokenmill::chat::jinja {

// Bytes [begin, end) of a string that came from input data.
struct InputSpan {
  size_t begin = 0;
  size_t end = 0;
};

class Value;
class Environment;
using Array = std::vector<Value>;
// Insertion-ordered, like a JavaScript Map.
using Object = std::vector<std::pair<std::string, Value>>;
// A builtin or macro: positional arguments, then (when any keyword argument
// was given) one kwargs object last. `caller_env` is the call site's scope.
// Throws JinjaError.
using Function = std::function<Value(std::vector<Value>& args, Environment& caller_env)>;

// Internal to the interpreter: template and runtime errors unwind as this
// exception and become an absl::Status at the public entry points
// (JinjaTemplate::Parse / Render), never crossing them. `pos` is a byte
// offset in the template, or npos when unknown.
class JinjaError : public std::exception {
 public:
  explicit JinjaError(std::string message, size_t pos = std::string::npos)
      : message_(std::move(message)), pos(pos) {}
  const char* what() const noexcept override { return message_.c_str(); }
  const std::string& message() const { return message_; }

 private:
  std::string message_;

 public:
  size_t pos;
};

enum class Kind {
  kUndefined,
  kNull,
  kBool,
  kInt,
  kFloat,
  kString,
  kArray,
  kObject,
  kNamespace,
  kFunction
};

class Value {
 public:
  Value() = default;
  static Value Null();
  static Value Bool(bool b);
  static Value Int(int64_t i);
  static Value Float(double f);
  static Value String(std::string s, std::vector<InputSpan> input = {});
  // A string whose bytes all came from input data.
  static Value InputString(std::string s);
  static Value MakeArray(Array items, bool tuple = false);
  static Value MakeObject(Object entries, bool kwargs = false);
  static Value MakeNamespace(Object entries);
  static Value MakeFunction(Function fn);
  // Converts JSON (request data): strings become input strings.
  static Value FromJson(const nlohmann::ordered_json& json);

  Kind kind() const { return kind_; }
  bool is(Kind k) const { return kind_ == k; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_null() const { return kind_ == Kind::kNull; }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_array() const { return kind_ == Kind::kArray; }
  bool is_tuple() const { return kind_ == Kind::kArray && tuple_; }
  // Objects in HF's sense: plain objects, loop and kwargs objects; not namespaces.
  bool is_object() const { return kind_ == Kind::kObject; }
  bool is_kwargs() const { return kind_ == Kind::kObject && kwargs_; }
  bool is_attribute_container() const {
    return kind_ == Kind::kObject || kind_ == Kind::kNamespace;
  }
  bool is_number() const { return kind_ == Kind::kInt || kind_ == Kind::kFloat; }
  bool is_numeric_like() const { return is_number() || kind_ == Kind::kBool; }

  bool boolean() const { return b_; }
  int64_t integer() const { return i_; }
  double number() const;  // ints, floats and booleans as a double
  const std::string& str() const { return s_; }
  const std::vector<InputSpan>& input() const { return input_; }
  bool has_input() const { return !input_.empty(); }
  // Objects converted from input JSON: their keys are input too.
  bool input_keys() const { return input_keys_; }
  // A key of this object as a string value (input when the keys are).
  Value KeyString(const std::string& key) const;
  Array& array() const { return *array_; }
  Object& object() const { return *object_; }
  const Function& function() const { return *fn_; }
  // Identity of the shared container (JS reference equality).
  const void* identity() const;

  // Python-style truthiness as @huggingface/jinja computes it.
  bool Truthy() const;
  // The text {{ value }} prints (undefined and none print nothing there,
  // but Print gives their String() form for concatenation).
  std::string Print() const;
  // JavaScript's String(value.value): what `~` and `+` concatenate.
  std::string JsString() const;
  // A lookup in an attribute container; nullptr when absent.
  Value* Find(std::string_view key) const;
  void Set(std::string key, Value value) const;

  const char* TypeName() const;

 private:
  Kind kind_ = Kind::kUndefined;
  bool b_ = false;
  bool tuple_ = false;
  bool kwargs_ = false;
  bool input_keys_ = false;
  int64_t i_ = 0;
  double f_ = 0;
  std::string s_;
  std::vector<InputSpan> input_;
  std::shared_ptr<Array> array_;
  std::shared_ptr<Object> object_;
  std::shared_ptr<Function> fn_;
};

// JavaScript's Number.prototype.toString for a double.
std::string JsNumber(double d);
// JSON.stringify of a string (no escaping of non-ASCII).
void AppendJsonString(std::string_view s, bool ensure_ascii, std::string* out);

struct ToJsonOptions {
  int indent = 0;  // 0: none
  bool ensure_ascii = false;
  bool sort_keys = false;
  bool has_separators = false;
  std::string item_separator;
  std::string key_separator;
};
// HF's toJSON: Python json.dumps spacing (", " and ": "), insertion key order.
// `undefined_as_null` false prints "undefined" (HF's array/object printing).
absl::StatusOr<std::string> ToJson(const Value& value, const ToJsonOptions& options,
                                   bool undefined_as_null = true, int depth = 0);

}  // namespace tokenmill::chat::jinja
