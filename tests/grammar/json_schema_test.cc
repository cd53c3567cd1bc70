// The schema compiler: which documents each keyword lets through (walked
// byte by byte through a matcher) and which schemas it refuses.
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/grammar/grammar_test_util.h"

namespace tokenmill::grammar {
namespace {

using testing::AcceptsDocument;
using testing::MustCompile;
using testing::SmallVocabulary;

struct Case {
  std::string schema;
  std::vector<std::string> valid;
  std::vector<std::string> invalid;
};

void CheckCases(const std::vector<Case>& cases, JsonSchemaOptions options = {}) {
  const auto vocab = SmallVocabulary();
  for (const Case& c : cases) {
    const CompiledGrammarPtr g = MustCompile(c.schema, vocab, options);
    if (g == nullptr) continue;
    for (const std::string& doc : c.valid)
      EXPECT_TRUE(AcceptsDocument(g, doc)) << c.schema << " should accept " << doc;
    for (const std::string& doc : c.invalid)
      EXPECT_FALSE(AcceptsDocument(g, doc)) << c.schema << " should reject " << doc;
  }
}

TEST(JsonSchemaTest, ScalarTypes) {
  CheckCases({
      {R"({"type":"null"})", {"null"}, {"nul", "nulll", "\"null\"", "0"}},
      {R"({"type":"boolean"})", {"true", "false"}, {"True", "1", "null"}},
      {R"({"type":["string","null"]})", {"null", "\"x\""}, {"1", "true"}},
      {R"({"type":"string"})",
       {"\"\"", "\"abc\"", "\"a\\\"b\"", "\"\\n\\t\\\\\\/\"", "\"\\u00e9\"", "\"é🙂\""},
       {"\"a", "abc", "\"a\"b\"", "\"\\x\"", "\"\\ud800\"", "\"a\nb\"", "\"\xff\"", "\"\xc3\"",
        "\"\xed\xa0\x80\""}},
  });
}

TEST(JsonSchemaTest, StringLengthsCountCodePoints) {
  CheckCases({
      {R"({"type":"string","minLength":2,"maxLength":3})",
       {"\"ab\"", "\"abc\"", "\"é🙂\"", "\"\\n\\u00e9x\""},
       {"\"a\"", "\"abcd\"", "\"🙂\"", "\"\\n\""}},
  });
}

// A pattern or format with minLength/maxLength: the pattern's strings of an
// allowed length, counted in code points.
TEST(JsonSchemaTest, PatternsWithLengths) {
  CheckCases({
      {R"({"type":"string","pattern":"^[a-z]+$","minLength":2,"maxLength":4})",
       {"\"ab\"", "\"abcd\""},
       {"\"a\"", "\"abcde\"", "\"AB\"", "\"\""}},
      {R"({"type":"string","pattern":"é+","maxLength":2})",
       {"\"é\"", "\"xé\"", "\"éé\"", "\"é🙂\""},
       {"\"xéy\"", "\"ab\"", "\"ééé\""}},
      {R"({"type":"string","pattern":"^x*$","minLength":3})",
       {"\"xxx\"", "\"xxxxxxxxxx\""},
       {"\"xx\"", "\"\"", "\"xxxa\""}},
      {R"({"type":"string","format":"email","minLength":12})",
       {"\"abcde@ex.com\""},
       {"\"abcd@ex.com\""}},
      {R"({"type":"string","format":"date","maxLength":10,"minLength":10})",
       {"\"2024-02-28\""},
       {"\"2024-02-30\""}},
  });
}

TEST(JsonSchemaTest, PatternsAndFormats) {
  CheckCases({
      {R"({"type":"string","pattern":"^[A-Z]{2}-\\d{3}$"})",
       {"\"AB-123\""},
       {"\"AB-12\"", "\"ab-123\"", "\"xAB-123\""}},
      {R"({"type":"string","pattern":"ab+c"})", {"\"abc\"", "\"xxabbbcyy\""}, {"\"ac\"", "\"\""}},
      {R"({"type":"string","pattern":"^(?:cat|dog)s?$"})",
       {"\"cat\"", "\"dogs\""},
       {"\"cow\"", "\"cats!\""}},
      {R"({"type":"string","pattern":"^[^a-c]+$"})", {"\"xyz\"", "\"é\""}, {"\"xaz\"", "\"\""}},
      {R"({"type":"string","pattern":"^\\w+@\\w+\\.com$"})",
       {"\"joe@ex.com\""},
       {"\"joe@ex.org\""}},
      {R"({"type":"string","format":"date"})",
       {"\"2024-02-28\"", "\"1999-12-31\""},
       {"\"2024-02-30\"", "\"2024-13-01\"", "\"24-01-01\"", "\"2024-04-31\""}},
      {R"({"type":"string","format":"date-time"})",
       {"\"2024-05-06T12:34:56Z\"", "\"2024-05-06T23:59:59.123+02:00\""},
       {"\"2024-05-06 12:34:56Z\"", "\"2024-05-06T24:00:00Z\"", "\"2024-05-06T12:34:56\""}},
      {R"({"type":"string","format":"time"})", {"\"08:30:00Z\""}, {"\"8:30:00Z\""}},
      {R"({"type":"string","format":"email"})",
       {"\"a.b@ex.com\""},
       {"\"a..b@ex.com\"", "\"ab@com\"", "\"@ex.com\""}},
      {R"({"type":"string","format":"uuid"})",
       {"\"123e4567-e89b-12d3-a456-426614174000\""},
       {"\"123e4567e89b12d3a456426614174000\""}},
      {R"({"type":"string","format":"ipv4"})",
       {"\"192.168.0.1\"", "\"0.0.0.0\""},
       {"\"256.1.1.1\"", "\"1.2.3\"", "\"01.2.3.4\""}},
      {R"({"type":"string","format":"uri"})",
       {"\"https://example.com/a/b\"", "\"http://x.io\""},
       {"\"example.com\""}},
  });
}

TEST(JsonSchemaTest, IntegersAndNumbers) {
  CheckCases({
      {R"({"type":"integer"})",
       {"0", "-7", "123456789012345"},
       {"01", "-0", "1.5", "1e3", "1234567890123456", "+1"}},
      {R"({"type":"integer","minimum":-5,"maximum":120})",
       {"-5", "0", "99", "120", "7"},
       {"-6", "121", "200", "1000"}},
      {R"({"type":"integer","exclusiveMinimum":0,"exclusiveMaximum":10})", {"1", "9"}, {"0", "10"}},
      {R"({"type":"integer","minimum":1000})", {"1000", "5000", "123456"}, {"999", "0", "-1000"}},
      {R"({"type":"number","minimum":0,"maximum":10})",
       {"0", "10", "0.5", "9.999", "3"},
       {"-0.5", "10.5", "11", "00.5", ".5"}},
      {R"({"type":"number","minimum":-2.5,"maximum":1.5})",
       {"-2", "-1.75", "0.25", "1"},
       {"-3", "2", "1.2"}},  // 1.2 is valid, but fractions past the last whole unit are not emitted
      {R"({"type":"number"})", {"-0.001", "3.14", "42"}, {"1.", "1e5", "--1"}},
  });
}

TEST(JsonSchemaTest, EnumsAndConst) {
  CheckCases({
      {R"({"enum":["red","green",3,null,{"a":[1]}]})",
       {"\"red\"", "\"green\"", "3", "null", "{\"a\":[1]}"},
       {"\"blue\"", "4", "\"re\""}},
      {R"({"type":"string","enum":["a",1]})", {"\"a\""}, {"1"}},
      {R"({"const":"fixed"})", {"\"fixed\""}, {"\"fixe\"", "\"fixedx\""}},
  });
}

TEST(JsonSchemaTest, ObjectsInSchemaOrder) {
  CheckCases({
      {R"({"type":"object","properties":{"a":{"type":"integer"},"b":{"type":"string"},"c":{"type":"boolean"}},"required":["a","c"]})",
       {"{\"a\":1,\"c\":true}", "{\"a\":1,\"b\":\"x\",\"c\":false}",
        "{\"a\": 1, \"b\": \"x\", \"c\": false}"},
       {"{\"a\":1}", "{\"c\":true,\"a\":1}", "{\"a\":1,\"c\":true,\"d\":1}", "{}",
        "{\"a\":1,,\"c\":true}", "{\"a\":1 ,\"c\":true}", "{\"a\":1,\"c\":true} ",
        "{\"a\":1,  \"c\":true}"}},
      {R"({"type":"object","properties":{"x":{"type":"integer"},"y":{"type":"integer"}}})",
       {"{}", "{\"x\":1}", "{\"y\":2}", "{\"x\":1,\"y\":2}"},
       {"{,\"y\":2}", "{\"y\":2,\"x\":1}"}},
      {R"({"type":"object","additionalProperties":{"type":"integer"}})",
       {"{}", "{\"k\":1,\"j\":2}"},
       {"{\"k\":\"v\"}", "{,\"k\":1}", "{\"k\":1,}", "{, }"}},
      {R"({"type":"object"})", {"{}", "{\"k\":[1,{\"z\":null}],\"j\":\"s\"}"}, {"[]", "{\"k\"}"}},
  });
}

TEST(JsonSchemaTest, CompactWithoutSpaceOption) {
  JsonSchemaOptions options;
  options.space_after_separators = false;
  CheckCases(
      {{R"({"type":"object","properties":{"a":{"type":"integer"},"b":{"type":"integer"}},"required":["a","b"]})",
        {"{\"a\":1,\"b\":2}"},
        {"{\"a\": 1,\"b\":2}", "{\"a\":1, \"b\":2}"}}},
      options);
}

TEST(JsonSchemaTest, LiteralPrefixAndSuffix) {
  JsonSchemaOptions options;
  options.prefix = "<tool_call>\n";
  options.suffix = "\n</tool_call>";
  CheckCases({{R"({"type":"object","properties":{"name":{"const":"f"}},"required":["name"]})",
               {"<tool_call>\n{\"name\":\"f\"}\n</tool_call>"},
               {"{\"name\":\"f\"}", "<tool_call>\n{\"name\":\"f\"}",
                "<tool_call>{\"name\":\"f\"}\n</tool_call>"}}},
             options);
}

TEST(JsonSchemaTest, Arrays) {
  CheckCases({
      {R"({"type":"array","items":{"type":"integer"},"minItems":1,"maxItems":3})",
       {"[1]", "[1,2,3]", "[1, 2]"},
       {"[]", "[1,2,3,4]", "[1,]", "[\"a\"]"}},
      {R"({"type":"array","items":{"type":"string"},"minItems":5})",
       {"[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\"]"},
       {"[\"a\",\"b\",\"c\",\"d\"]"}},
      {R"({"type":"array","items":{"type":"boolean"},"maxItems":0})", {"[]"}, {"[true]"}},
      {R"({"type":"array"})", {"[]", "[1,\"a\",[],{}]"}, {"[1,]", "[,1]", "[,]"}},
  });
}

TEST(JsonSchemaTest, AnyOfAndRefs) {
  CheckCases({
      {R"({"anyOf":[{"type":"integer"},{"type":"object","properties":{"k":{"const":1}},"required":["k"]}]})",
       {"5", "{\"k\":1}"},
       {"{}", "\"5\""}},
      {R"({"$defs":{"node":{"type":"object","properties":{"v":{"type":"integer"},"next":{"anyOf":[{"$ref":"#/$defs/node"},{"type":"null"}]}},"required":["v","next"]}},"$ref":"#/$defs/node"})",
       {"{\"v\":1,\"next\":null}", "{\"v\":1,\"next\":{\"v\":2,\"next\":{\"v\":3,\"next\":null}}}"},
       {"{\"v\":1}", "{\"v\":1,\"next\":{\"v\":2}}"}},
      {R"({"type":"object","properties":{"kids":{"type":"array","items":{"$ref":"#"}}},"required":["kids"]})",
       {"{\"kids\":[]}", "{\"kids\":[{\"kids\":[]},{\"kids\":[{\"kids\":[]}]}]}"},
       {"{\"kids\":[{}]}"}},
      {R"({"allOf":[{"type":"integer","maximum":3}]})", {"3"}, {"4"}},
      {R"({"description":"anything"})", {"1", "{\"a\":[]}", "\"s\""}, {""}},
  });
}

TEST(JsonSchemaTest, Refusals) {
  struct Refusal {
    std::string schema;
    std::string pointer;  // must appear in the message
    bool strict;
  };
  const std::vector<Refusal> refusals = {
      {R"({"type":"string","pattern":"(a)\\1"})", "#/pattern", false},
      {R"j({"type":"string","pattern":"(?=a)"})j", "#/pattern", false},
      {R"({"type":"string","pattern":"a^b"})", "#/pattern", false},
      {R"({"type":"string","pattern":"\\bword"})", "#/pattern", false},
      {R"({"type":"string","pattern":"\\p{L}"})", "#/pattern", false},
      {R"({"type":"object","properties":{"a":{"oneOf":[{"type":"integer"}]}}})",
       "/properties/a/oneOf", false},
      {R"({"type":"integer","multipleOf":3})", "#/multipleOf", false},
      {R"({"type":"array","uniqueItems":true})", "#/uniqueItems", false},
      {R"({"not":{"type":"null"}})", "#/not", false},
      {R"({"type":"string","x-custom":1})", "#/x-custom", true},
      {R"({"type":"string","format":"hostname"})", "#/format", true},
      {R"({"$ref":"#/$defs/missing"})", "#/$ref", false},
      {R"({"$ref":"http://example.com/s.json"})", "#/$ref", false},
      {R"({"$defs":{"a":{"$ref":"#/$defs/a"}},"$ref":"#/$defs/a"})", "no JSON value", false},
      {R"({"$defs":{"a":{"anyOf":[{"$ref":"#/$defs/a"},{"type":"null"}]}},"$ref":"#/$defs/a"})",
       "left recursion", false},
      {R"({"type":"integer","minimum":5,"maximum":4})", "no integer", false},
      {R"({"type":"string","minLength":3,"maxLength":2})", "maxLength", false},
      {R"({"type":"string","pattern":"^a{5}$","maxLength":2})", "minLength/maxLength", false},
      {R"({"type":"object","properties":{},"required":["a"],"additionalProperties":false})",
       "#/required", false},
      {"false", "no value", false},
      {"{not json", "not valid JSON", false},
      {R"({"type":"wat"})", "#/type", false},
  };
  const auto vocab = SmallVocabulary();
  for (const Refusal& r : refusals) {
    JsonSchemaOptions options;
    options.strict = r.strict;
    absl::StatusOr<CompiledGrammarPtr> g = CompileJsonSchemaGrammar(r.schema, options, vocab);
    ASSERT_FALSE(g.ok()) << r.schema;
    EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument) << r.schema;
    EXPECT_NE(g.status().message().find(r.pointer), std::string::npos)
        << r.schema << ": " << g.status();
  }
  // Non-strict ignores unknown keywords and formats; strict accepts annotations.
  EXPECT_TRUE(
      CompileJsonSchemaGrammar(R"({"type":"string","x-custom":1,"format":"hostname"})", {}, vocab)
          .ok());
  JsonSchemaOptions strict;
  strict.strict = true;
  EXPECT_TRUE(
      CompileJsonSchemaGrammar(
          R"({"type":"string","title":"t","description":"d","examples":["x"],"default":"y"})",
          strict, vocab)
          .ok());
}

TEST(JsonSchemaTest, HostileSchemasHitLimits) {
  const auto vocab = SmallVocabulary();
  // Exponential by nesting repeats: refused by the state cap, quickly.
  absl::StatusOr<CompiledGrammarPtr> g = CompileJsonSchemaGrammar(
      R"({"type":"string","pattern":"^((((a{0,1000}){0,1000}){0,1000}){0,1000})$"})", {}, vocab);
  ASSERT_FALSE(g.ok());
  EXPECT_NE(g.status().message().find("too large"), std::string::npos) << g.status();
  std::string deep = R"({"type":"integer"})";
  for (int i = 0; i < 100; ++i) deep = R"({"type":"array","items":)" + deep + "}";
  g = CompileJsonSchemaGrammar(deep, {}, vocab);
  ASSERT_FALSE(g.ok());
  EXPECT_NE(g.status().message().find("nested"), std::string::npos) << g.status();
  g = CompileJsonSchemaGrammar(R"({"type":"string","maxLength":100000})", {}, vocab);
  ASSERT_FALSE(g.ok());
  EXPECT_NE(g.status().message().find("too large"), std::string::npos) << g.status();
}

TEST(JsonSchemaTest, JsonObjectMode) {
  const auto vocab = SmallVocabulary();
  absl::StatusOr<CompiledGrammarPtr> g = CompileJsonObjectGrammar({}, vocab);
  ASSERT_TRUE(g.ok()) << g.status();
  for (const std::string doc :
       {"{}", "{\"a\":{\"b\":[1,2.5,{\"c\":null}]},\"d\":\"e\"}", "{\"x\": true, \"y\": false}"}) {
    EXPECT_TRUE(AcceptsDocument(*g, doc)) << doc;
  }
  for (const std::string doc :
       {"[]", "1", "{\"a\":}", "{\"a\":1}}", "{\"a\":[}", "{,\"a\":1}", "{\"a\":[,1]}"}) {
    EXPECT_FALSE(AcceptsDocument(*g, doc)) << doc;
  }
}

}  // namespace
}  // namespace tokenmill::grammar
