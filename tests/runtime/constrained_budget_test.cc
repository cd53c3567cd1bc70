// Constrained decoding under a length budget, through ModelInstance (the
// engine thread's RequestStream) on a random-weight tiny model at
// temperature 1, so the grammar does all the work: whenever max_tokens
// allows the value's shortest form, the request ends `stop` with a whole
// value that validates, never `length` with a cut one.
#include <chrono>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/grammar/compiled_grammar.h"
#include "runtime/grammar/grammar_matcher.h"
#include "runtime/grammar/token_vocabulary.h"
#include "runtime/instance/request_stream.h"
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

// The context room is a budget too: a RequestStream whose context leaves
// exactly the shortest value's bytes after the prompt, max_tokens far
// larger, fed random rows of logits.
TEST(ConstrainedBudgetTest, ValueEndsWithinTheContext) {
  TestDevice device(8 << 20);
  auto instance = StartInstance(device, InstanceSetup{});
  ASSERT_NE(instance, nullptr);
  const tokenizer::Tokenizer& tok = instance->tokenizer();
  const auto vocab = grammar::TokenVocabulary::FromTokenizer(tok);
  absl::StatusOr<grammar::CompiledGrammarPtr> g = grammar::CompileJsonSchemaGrammar(
      R"({"type":"object","properties":{
          "name":{"type":"string","pattern":"^[a-z]{1,8}$"},
          "age":{"type":"integer","minimum":0,"maximum":120},
          "tags":{"type":"array","items":{"enum":["red","green","blue"]},"minItems":1}},
        "required":["name","age","tags"],"additionalProperties":false})",
      {}, vocab);
  ASSERT_TRUE(g.ok()) << g.status();
  const int32_t shortest = grammar::GrammarMatcher(*g).MinBytesToComplete();
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> uniform(-4.0f, 4.0f);
  for (uint64_t seed = 1; seed <= 4; ++seed) {
    GenerationRequest r;
    r.request_id = "context";
    r.prompt = PromptOf(6, static_cast<uint32_t>(seed));
    r.sampling.temperature = 1.0f;
    r.sampling.seed = seed;
    r.sampling.max_tokens = 1000;
    r.grammar = *g;
    Collector c;
    const int32_t context = 6 + shortest;
    RequestStream stream(std::move(r), c.Sink(), tok, tok.vocab_size(), context,
                         std::chrono::steady_clock::now());
    ASSERT_TRUE(stream.Start().ok());
    std::vector<float> row(static_cast<size_t>(tok.vocab_size()));
    for (int step = 0; step < context; ++step) {
      for (float& l : row) l = uniform(rng);
      absl::StatusOr<RequestStream::Next> next =
          stream.OnLogits(row, std::chrono::steady_clock::now());
      ASSERT_TRUE(next.ok()) << next.status();
      if (next->finished) break;
    }
    stream.Finish();
    ASSERT_TRUE(c.done());
    EXPECT_EQ(c.reason(), FinishReason::kStop) << c.text();
    EXPECT_EQ(Invalid(c.text()), "") << c.text();
    EXPECT_LE(c.usage().completion_tokens, shortest);
  }
  instance->Stop();
}

}  // namespace
}  // namespace tokenmill::runtime
