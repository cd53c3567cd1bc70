#include "runtime/chat/jinja_template.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "runtime/chat/jinja_interpreter.h"
#include "runtime/chat/jinja_lexer.h"
#include "runtime/chat/jinja_parser.h"

namespace tokenmill::chat::jinja {
namespace {

// " (at line L, column C)" of a preprocessed position, in the source.
std::string Where(const std::string& source, const std::vector<size_t>& origin, size_t pos) {
  if (pos == std::string::npos || origin.empty()) return "";
  return absl::StrCat(" (at ", LineColumn(source, origin[std::min(pos, origin.size() - 1)]), ")");
}

bool IsLimit(const JinjaError& e) { return e.message().rfind("resource limit:", 0) == 0; }

}  // namespace

JinjaTemplate::~JinjaTemplate() = default;

absl::StatusOr<std::unique_ptr<JinjaTemplate>> JinjaTemplate::Parse(std::string_view source,
                                                                    const JinjaLimits& limits) {
  auto tmpl = std::unique_ptr<JinjaTemplate>(new JinjaTemplate());
  tmpl->limits_ = limits;
  tmpl->source_ = std::string(source);
  const std::string preprocessed = Preprocess(source, &tmpl->origin_);
  try {
    std::vector<Token> tokens = Tokenize(preprocessed);
    tmpl->program_ = jinja::Parse(tokens, limits.max_depth);
  } catch (const JinjaError& e) {
    return absl::InvalidArgumentError(absl::StrCat("chat template syntax error: ", e.message(),
                                                   Where(tmpl->source_, tmpl->origin_, e.pos)));
  }
  return tmpl;
}

absl::StatusOr<RenderedText> JinjaTemplate::Render(const Object& variables, absl::Time now) const {
  try {
    Interpreter interpreter(limits_, now);
    auto env = std::make_shared<Environment>(nullptr);
    interpreter.SetupGlobals(*env);
    for (const auto& [name, value] : variables) env->Set(name, value);
    TextBuilder out = interpreter.Builder();
    interpreter.RenderBlock(program_->a, env, &out);
    Value text = out.Take();
    return RenderedText{text.str(), text.input()};
  } catch (const JinjaError& e) {
    const std::string message =
        absl::StrCat("chat template: ", e.message(), Where(source_, origin_, e.pos));
    if (IsLimit(e)) return absl::ResourceExhaustedError(message);
    return absl::InvalidArgumentError(message);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError("chat template: out of memory");
  } catch (...) {
    // break / continue outside a loop.
    return absl::InvalidArgumentError("chat template: break or continue outside a loop");
  }
}

}  // namespace tokenmill::chat::jinja
