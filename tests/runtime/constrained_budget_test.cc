// Constrained decoding under a length budget, through ModelInstance (the
// engine thread's RequestStream) on a random-weight tiny model at
// temperature 1, so the grammar does all the work: whenever max_tokens
// allows the value's shortest form, the request ends `stop` with a whole
// value that validates, never `length` with a cut one.
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/grammar/compiled_grammar.h"
#include "runtime/grammar/grammar_matcher.h"
#include "runtime/grammar/token_vocabulary.h"
#include "tests/runtime/instance_test_util.h"

namespace tokenmill::runtime {
namespace {

using json = nlohmann::json;
using testing::Collector;
using testing::InstanceSetup;
using testing::PromptOf;
using testing::StartInstance;
using testing::TestDevice;

// What the schema below asks, checked by hand (not by the grammar).
std::string Invalid(const std::string& text) {
  const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return "not JSON";
  if (!j.is_object()) return "not an object";
  for (const auto& [key, value] : j.items()) {
    if (key != "name" && key != "age" && key != "tags") return "unknown key " + key;
  }
  if (!j.contains("name") || !j["name"].is_string()) return "name";
  const size_t name_len = j["name"].get<std::string>().size();
  if (name_len < 1 || name_len > 8) return "name length";
  if (!j.contains("age") || !j["age"].is_number_integer()) return "age";
  if (j["age"].get<int64_t>() < 0 || j["age"].get<int64_t>() > 120) return "age range";
  if (!j.contains("tags") || !j["tags"].is_array() || j["tags"].empty()) return "tags";
  for (const auto& t : j["tags"]) {
    if (t != "red" && t != "green" && t != "blue") return "tag";
  }
  return "";
}

TEST(ConstrainedBudgetTest, ValueEndsWithinMaxTokens) {
  TestDevice device(8 << 20);
  auto instance = StartInstance(device, InstanceSetup{});
  ASSERT_NE(instance, nullptr);
  const auto vocab = grammar::TokenVocabulary::FromTokenizer(instance->tokenizer());
  absl::StatusOr<grammar::CompiledGrammarPtr> g = grammar::CompileJsonSchemaGrammar(
      R"({"type":"object","properties":{
          "name":{"type":"string","pattern":"^[a-z]{1,8}$"},
          "age":{"type":"integer","minimum":0,"maximum":120},
          "tags":{"type":"array","items":{"enum":["red","green","blue"]},"minItems":1}},
        "required":["name","age","tags"],"additionalProperties":false})",
      {}, vocab);
  ASSERT_TRUE(g.ok()) << g.status();
  const int32_t shortest = grammar::GrammarMatcher(*g).MinBytesToComplete();
  ASSERT_GT(shortest, 20);
  int stopped = 0;
  for (const int32_t extra : {0, 1, 2, 5, 12, 30}) {
    for (uint64_t seed = 1; seed <= 3; ++seed) {
      GenerationRequest r;
      r.request_id = "budget";
      r.tenant = "t";
      r.prompt = PromptOf(6, static_cast<uint32_t>(seed));
      r.sampling.temperature = 1.0f;
      r.sampling.seed = seed * 7919 + static_cast<uint64_t>(extra);
      r.sampling.max_tokens = shortest + extra;
      r.grammar = *g;
      Collector c;
      ASSERT_TRUE(instance->Submit(std::move(r), c.Sink()).ok());
      ASSERT_TRUE(c.Wait());
      const std::string where =
          "max_tokens " + std::to_string(shortest + extra) + " seed " + std::to_string(seed);
      EXPECT_TRUE(c.error().ok()) << where << ": " << c.error();
      EXPECT_EQ(c.reason(), FinishReason::kStop) << where << ": " << c.text();
      EXPECT_EQ(Invalid(c.text()), "") << where << ": " << c.text();
      EXPECT_LE(c.usage().completion_tokens, shortest + extra) << where;
      if (c.reason() == FinishReason::kStop) ++stopped;
    }
  }
  EXPECT_EQ(stopped, 18);
  instance->Stop();
}

}  // namespace
}  // namespace tokenmill::runtime
