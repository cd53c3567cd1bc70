// Internal to runtime/chat: the tree-walking evaluator behind JinjaTemplate
// (jinja_interpreter.cc: statements and expressions; jinja_builtins.cc:
// filters, tests and the methods of strings, objects and arrays), mirroring
// @huggingface/jinja's runtime. Errors unwind as JinjaError.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/time/time.h"
#include "runtime/chat/jinja_parser.h"
#include "runtime/chat/jinja_template.h"
#include "runtime/chat/jinja_value.h"

namespace tokenmill::chat::jinja {

class Environment {
 public:
  explicit Environment(std::shared_ptr<Environment> parent) : parent_(std::move(parent)) {}
  // The value of `name` here or in an enclosing scope; undefined when none.
  Value Lookup(const std::string& name) const;
  void Set(const std::string& name, Value value) { variables_[name] = std::move(value); }
  bool HasOwn(const std::string& name) const { return variables_.count(name) > 0; }
  const Value* FindOwn(const std::string& name) const;
  bool call_block_scope = false;

 private:
  std::shared_ptr<Environment> parent_;
  std::unordered_map<std::string, Value> variables_;
};
using EnvPtr = std::shared_ptr<Environment>;

// A string under construction, with its input spans.
class TextBuilder {
 public:
  // `budget`: bytes the whole render may still copy (shared, decremented).
  TextBuilder(size_t max_bytes, int64_t* budget) : max_bytes_(max_bytes), budget_(budget) {}
  void Append(const Value& string_value);
  void AppendPlain(std::string_view text);
  void AppendInput(std::string_view text);
  Value Take();
  size_t size() const { return text_.size(); }

 private:
  void Check(size_t more) const;
  size_t max_bytes_;
  int64_t* budget_;
  std::string text_;
  std::vector<InputSpan> spans_;
};

class Interpreter {
 public:
  Interpreter(const JinjaLimits& limits, absl::Time now)
      : limits_(limits), now_(now), bytes_budget_(limits.max_total_bytes) {}
  // Empties the namespaces made during the render: only they are mutable, so
  // only they can form reference cycles (`{% set ns.self = ns %}`).
  ~Interpreter();

  Value Evaluate(const Node* node, const EnvPtr& env);
  void RenderBlock(const std::vector<NodePtr>& statements, const EnvPtr& env, TextBuilder* out);
  Value RenderToString(const std::vector<NodePtr>& statements, const EnvPtr& env);
  void SetupGlobals(Environment& env);

  // jinja_builtins.cc
  Value ApplyFilter(const Value& operand, const Node* filter, const EnvPtr& env);
  // `argument`: the value selectattr passes to two-argument tests (equalto).
  bool ApplyTest(const std::string& name, const Value& operand, size_t pos,
                 const Value& argument = Value());
  // A string or object method / property (HF's `builtins`); undefined when none.
  Value Builtin(const Value& object, const std::string& name);
  void EvaluateArguments(const std::vector<NodePtr>& args, const EnvPtr& env,
                         std::vector<Value>* positional, Object* keywords);
  std::vector<Value> EvaluateCallArguments(const std::vector<NodePtr>& args, const EnvPtr& env);

  // Strings built here go through these so that the size cap holds.
  Value MakeString(std::string s, bool input);
  // A string derived from `sources`: all input if any of them has input.
  Value Derived(std::string s, std::initializer_list<const Value*> sources);
  void CountIterations(int64_t n);
  [[noreturn]] void Fail(std::string message, size_t pos = std::string::npos) const;
  // A builder for a new string under the render's limits.
  TextBuilder Builder(size_t max_bytes = 0) {
    return TextBuilder(max_bytes > 0 ? max_bytes : limits_.max_string_bytes, &bytes_budget_);
  }
  const JinjaLimits& limits() const { return limits_; }
  absl::Time now() const { return now_; }

 private:
  Value EvaluateBinary(const Node* node, const EnvPtr& env);
  Value EvaluateMember(const Node* node, const EnvPtr& env);
  Value EvaluateSlice(const Value& object, const Node* slice, const EnvPtr& env);
  Value EvaluateCall(const Node* node, const EnvPtr& env);
  Value EvaluateUnary(const Node* node, const EnvPtr& env);
  void ExecuteSet(const Node* node, const EnvPtr& env);
  void RenderFor(const Node* node, const EnvPtr& env, TextBuilder* out);
  Value DefineMacro(const Node* node, const EnvPtr& env);
  Value EvaluateCallStatement(const Node* node, const EnvPtr& env);
  void BindMacroArguments(const std::string& name, const std::vector<NodePtr>& parameters,
                          const Node* owner, std::vector<Value> args, const EnvPtr& scope);

  const JinjaLimits& limits_;
  absl::Time now_;
  int depth_ = 0;
  int64_t iterations_ = 0;
  int64_t bytes_budget_;
  std::vector<Value> namespaces_;
};

// Whether any string inside `value` (recursively) holds input bytes.
bool ContainsInput(const Value& value, int depth = 0);
// JavaScript strict equality of two runtime values' `.value`.
bool StrictEquals(const Value& a, const Value& b);
// JavaScript loose equality (`==`) of two runtime values' `.value`.
bool LooseEquals(const Value& a, const Value& b);
// HF's compareRuntimeValues; throws for incomparable types.
int CompareValues(const Value& a, const Value& b, bool case_sensitive);
// Unicode code points of a UTF-8 string, each as its own UTF-8 string.
std::vector<std::string> CodePoints(std::string_view s);

}  // namespace tokenmill::chat::jinja
