// JinjaTemplate: a chat template as the model ships it, parsed once and
// rendered many times. The language is the subset Hugging Face renders chat
// templates with (@huggingface/jinja, which transformers.js uses): output
// is byte-identical to it for the templates in tests/chat/fixtures.
//
// Templates come from model files, which an attacker may supply: parsing
// and rendering never abort; nesting depth, loop iterations and the size of
// every string built are capped (JinjaLimits), and each failure is an
// absl::Status naming the line and column of the template.
//
// A parsed template is immutable: Render may run on many threads at once.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "runtime/chat/jinja_value.h"

namespace tokenmill::chat::jinja {

struct Node;

struct JinjaLimits {
  // Syntax nesting (parse) and evaluation nesting incl. macro recursion.
  int max_depth = 200;
  // Loop iterations over the whole render (all loops, range() items).
  int64_t max_loop_iterations = 200'000;
  // Bytes of any string built, the output included.
  size_t max_string_bytes = 8 << 20;
  // Bytes copied into strings over the whole render: bounds the CPU time a
  // template can spend building text.
  int64_t max_total_bytes = 64 << 20;
};

// The output: text, and the byte spans of it that came from input strings.
struct RenderedText {
  std::string text;
  std::vector<InputSpan> input;
};

class JinjaTemplate {
 public:
  // kInvalidArgument: a syntax error, with its line and column.
  static absl::StatusOr<std::unique_ptr<JinjaTemplate>> Parse(std::string_view source,
                                                              const JinjaLimits& limits = {});
  ~JinjaTemplate();

  // Renders with `variables` as globals (beside true/false/none, namespace,
  // range, raise_exception and strftime_now, which formats `now` in UTC).
  // kInvalidArgument: a runtime error or raise_exception(), with position;
  // kResourceExhausted: a limit was reached.
  absl::StatusOr<RenderedText> Render(const Object& variables, absl::Time now) const;

 private:
  JinjaTemplate() = default;
  std::string source_;          // as the model ships it
  std::vector<size_t> origin_;  // per preprocessed byte: its offset in source_
  std::unique_ptr<Node> program_;
  JinjaLimits limits_;
};

}  // namespace tokenmill::chat::jinja
