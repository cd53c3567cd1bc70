// /tokenize and /detokenize bodies: both servers' shapes, and refusals that
// name the field.
#include "daemon/tokenize.h"

#include "daemon/api_errors.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace tokenmill::daemon {
namespace {

using nlohmann::json;

TEST(TokenizeRequestTest, TextInEitherServersShape) {
  auto vllm =
      ParseTokenizeRequest(false, R"({"model":"m","prompt":"hi","add_special_tokens":false})");
  ASSERT_TRUE(vllm.ok()) << vllm.status();
  EXPECT_EQ(vllm->model, "m");
  EXPECT_EQ(vllm->text, "hi");
  EXPECT_FALSE(vllm->add_special_tokens);
  auto llama = ParseTokenizeRequest(false, R"({"content":"hi","add_special":true})");
  ASSERT_TRUE(llama.ok()) << llama.status();
  EXPECT_EQ(llama->model, "");
  EXPECT_EQ(llama->text, "hi");
  EXPECT_TRUE(llama->add_special_tokens);
}

TEST(TokenizeRequestTest, MessagesAreParsedAsAChat) {
  auto chat = ParseTokenizeRequest(
      false,
      R"({"messages":[{"role":"system","content":"s"},{"role":"user","content":[{"type":"text","text":"u"}]}],
          "add_generation_prompt":false})");
  ASSERT_TRUE(chat.ok()) << chat.status();
  ASSERT_EQ(chat->messages.size(), 2u);
  EXPECT_EQ(chat->messages[1].role, "user");
  EXPECT_FALSE(chat->text.has_value());
  EXPECT_FALSE(chat->add_generation_prompt);
}

TEST(TokenizeRequestTest, DetokenizeTakesIds) {
  auto r = ParseTokenizeRequest(true, R"({"model":"m","tokens":[1,2,300]})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->detokenize);
  EXPECT_EQ(r->tokens, (std::vector<int32_t>{1, 2, 300}));
}

TEST(TokenizeRequestTest, RefusalsNameTheField) {
  struct Case {
    bool detokenize;
    const char* body;
    const char* param;
  };
  const Case cases[] = {
      {false, "not json", ""},
      {false, "[1]", ""},
      {false, R"({})", "prompt"},
      {false, R"({"prompt":"a","content":"b"})", "prompt"},
      {false, R"({"prompt":"a","messages":[{"role":"user","content":"b"}]})", "prompt"},
      {false, R"({"prompt":7})", "prompt"},
      {false, R"({"content":false})", "content"},
      {false, R"({"messages":[]})", "messages"},
      {false, R"({"messages":[{"role":"wizard","content":"x"}]})", "messages[0].role"},
      {false, R"({"prompt":"a","add_special_tokens":"yes"})", "add_special_tokens"},
      {false, R"({"prompt":"a","model":5})", "model"},
      {true, R"({})", "tokens"},
      {true, R"({"tokens":"1 2"})", "tokens"},
      {true, R"({"tokens":[1,-2]})", "tokens"},
      {true, R"({"tokens":[1,2.5]})", "tokens"},
      {true, R"({"tokens":[4294967296]})", "tokens"},
  };
  for (const Case& c : cases) {
    auto r = ParseTokenizeRequest(c.detokenize, c.body);
    ASSERT_FALSE(r.ok()) << c.body;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << c.body;
    EXPECT_EQ(ErrorParam(r.status()), c.param) << c.body << ": " << r.status();
  }
}

}  // namespace
}  // namespace tokenmill::daemon
