#include "runtime/chat/jinja_template.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "runtime/chat/jinja_interpreter.h"
#include "runtime/chat/jinja_lexer.h"
#include "runtime/chat/jinja_parser.h"

namespace tokenmill::chat::jinja {
namespace {

std::string Where(const std::string& source, size_t pos) {
  if (pos == std::string::npos) return "";
  return absl::StrCat(" (at ", LineColumn(source, pos), ")");
}

bool IsLimit(const JinjaError& e) { return e.message().rfind("resource limit:", 0) == 0; }

}  // namespace

JinjaTemplate::~JinjaTemplate() = default;

absl::StatusOr<std::unique_ptr<JinjaTemplate>> JinjaTemplate::Parse(std::string_view source,
                                                                    const JinjaLimits& limits) {
  auto tmpl = std::unique_ptr<JinjaTemplate>(new JinjaTemplate());
  tmpl->limits_ = limits;
  tmpl->source_ = Preprocess(source);
  try {
    std::vector<Token> tokens = Tokenize(tmpl->source_);
    tmpl->program_ = jinja::Parse(tokens, limits.max_depth);
  } catch (const JinjaError& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("chat template syntax error: ", e.message(), Where(tmpl->source_, e.pos)));
  }
  return tmpl;
}

absl::StatusOr<RenderedText> JinjaTemplate::Render(const Object& variables, absl::Time now) const {
  try {
    Interpreter interpreter(limits_, now);
    auto env = std::make_shared<Environment>(nullptr);
    interpreter.SetupGlobals(*env);
    for (const auto& [name, value] : variables) env->Set(name, value);
    TextBuilder out(limits_.max_string_bytes);
    interpreter.RenderBlock(program_->a, env, &out);
    Value text = out.Take();
    return RenderedText{text.str(), text.input()};
  } catch (const JinjaError& e) {
    const std::string message = absl::StrCat("chat template: ", e.message(), Where(source_, e.pos));
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
