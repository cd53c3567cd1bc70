// JinjaTemplate beyond the conformance fixtures: what an attacker's template
// can do (limits hit as errors, never crashes or unbounded memory), error
// positions, strftime_now with an injected clock, and which output bytes
// came from input data.
#include "runtime/chat/jinja_template.h"

#include <string>

#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tokenmill::chat::jinja {
namespace {

using ::testing::HasSubstr;

absl::StatusOr<RenderedText> RenderText(const std::string& source, Object variables = {},
                                        absl::Time now = absl::UnixEpoch()) {
  absl::StatusOr<std::unique_ptr<JinjaTemplate>> parsed = JinjaTemplate::Parse(source);
  if (!parsed.ok()) return parsed.status();
  return (*parsed)->Render(variables, now);
}

std::string Text(const std::string& source, Object variables = {}) {
  absl::StatusOr<RenderedText> out = RenderText(source, std::move(variables));
  EXPECT_TRUE(out.ok()) << source << ": " << out.status();
  return out.ok() ? out->text : "<error>";
}

TEST(JinjaTemplateTest, Basics) {
  EXPECT_EQ(Text("{% for x in [1, 2, 3] %}{{ loop.index }}{{ ',' if not loop.last }}{% endfor %}"),
            "1,2,3");
  EXPECT_EQ(Text("{%- set ns = namespace(n=0) -%}\n{% for i in range(4) %}{% set ns.n = ns.n + i "
                 "%}{% endfor %}{{ ns.n }}"),
            "6");
  EXPECT_EQ(Text("{% macro m(a, b='x') %}{{ a }}{{ b }}{% endmacro %}{{ m(1) }}{{ m(2, b='y') }}"),
            "1x2y");
  EXPECT_EQ(Text("{{ 'a,b'.split(',') | join('-') }} {{ '  t  ' | trim }} {{ 'Ab'.upper() }}"),
            "a-b t AB");
  EXPECT_EQ(Text("{{ {'b': 1, 'a': [true, none]} | tojson }}"), "{\"b\": 1, \"a\": [true, null]}");
  EXPECT_EQ(Text("{{ {'a': 1} | tojson(indent=2) }}"), "{\n  \"a\": 1\n}");
  EXPECT_EQ(Text("{{ 'abcdef'[1:4] }}{{ [1,2,3][::-1] | join }}{{ 7 // 2 }}{{ 1.0 }}"),
            "bcd32131.0");
  EXPECT_EQ(Text("  {%- if true %}\n  x{% endif -%}  \n y"), "  xy");
  EXPECT_EQ(Text("{{ x is defined }} {{ none is none }} {{ 3 is odd }} {{ 'a' in 'cat' }}"),
            "false true true true");
}

TEST(JinjaTemplateTest, SyntaxErrorsNameLineAndColumn) {
  absl::StatusOr<std::unique_ptr<JinjaTemplate>> parsed =
      JinjaTemplate::Parse("ok\n{% if x %}\n{{ x + }}\n{% endif %}");
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(parsed.status().message()), HasSubstr("line 3"));
  EXPECT_FALSE(JinjaTemplate::Parse("{% for x in y %}").ok());  // never closed
  EXPECT_FALSE(JinjaTemplate::Parse("{{ 'unterminated }}").ok());
  EXPECT_FALSE(JinjaTemplate::Parse("{% frobnicate %}").ok());
}

TEST(JinjaTemplateTest, RuntimeErrorsNameTheirPlace) {
  absl::StatusOr<RenderedText> out = RenderText("a\nb {{ raise_exception('bad role') }}");
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(out.status().message()), HasSubstr("bad role"));
  EXPECT_THAT(std::string(out.status().message()), HasSubstr("line 2"));
  EXPECT_FALSE(RenderText("{{ none + 1 }}").ok());
  EXPECT_FALSE(RenderText("{{ x() }}").ok());
  EXPECT_FALSE(RenderText("{% break %}").ok());
}

// Templates come from model files: a hostile one hits a limit, as an error.
TEST(JinjaTemplateTest, HostileTemplatesHitLimits) {
  const std::string cases[] = {
      // unbounded recursion
      "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
      // deep nesting in the source
      "{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}",
      // 10^8 iterations
      "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}",
      // a string doubling past the size cap
      "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
      "{% endfor %}{{ ns.s | length }}",
      // output past the size cap
      "{% for i in range(900000) %}0123456789{% endfor %}",
  };
  for (const std::string& source : cases) {
    absl::StatusOr<std::unique_ptr<JinjaTemplate>> parsed = JinjaTemplate::Parse(source);
    if (!parsed.ok()) {
      EXPECT_THAT(std::string(parsed.status().message()), HasSubstr("nests deeper"));
      continue;
    }
    absl::StatusOr<RenderedText> out = (*parsed)->Render({}, absl::UnixEpoch());
    EXPECT_FALSE(out.ok()) << source.substr(0, 80);
  }
  // A namespace that holds itself: rendered, and freed (ASan would report
  // the cycle as a leak).
  EXPECT_EQ(Text("{% set ns = namespace() %}{% set ns.me = ns %}{{ ns.me.me is defined }}"),
            "true");
}

TEST(JinjaTemplateTest, StrftimeNowReadsTheInjectedClock) {
  absl::Time now = absl::FromCivil(absl::CivilSecond(2025, 3, 9, 7, 5, 0), absl::UTCTimeZone());
  absl::StatusOr<RenderedText> out =
      RenderText("{{ strftime_now('%d %b %Y %H:%M') }}|{{ strftime_now('%B') }}", {}, now);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->text, "09 Mar 2025 07:05|March");
}

TEST(JinjaTemplateTest, InputSpansFollowInputBytes) {
  Object variables = {{"content", Value::InputString("hi<x>")}};
  absl::StatusOr<RenderedText> out =
      RenderText("<a>{{ '<b>' + content + '<c>' }}{{ content | trim | upper }}", variables);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->text, "<a><b>hi<x><c>HI<X>");
  ASSERT_EQ(out->input.size(), 2u);
  EXPECT_EQ(out->text.substr(out->input[0].begin, out->input[0].end - out->input[0].begin),
            "hi<x>");
  EXPECT_EQ(out->text.substr(out->input[1].begin), "HI<X>");
}

}  // namespace
}  // namespace tokenmill::chat::jinja
