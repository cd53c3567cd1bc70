#include "daemon/openai_protocol.h"

#include <regex>
#include <string>
#include <vector>

#include "daemon/api_errors.h"
#include "gtest/gtest.h"
#include "runtime/model/synth_vocab.h"

namespace tokenmill::daemon {
namespace {

using nlohmann::json;
using runtime::FinishReason;

absl::StatusOr<OpenAiRequest> Completion(json body) {
  return ParseOpenAiRequest(OpenAiEndpoint::kCompletions, body.dump());
}
absl::StatusOr<OpenAiRequest> Chat(json body) {
  return ParseOpenAiRequest(OpenAiEndpoint::kChatCompletions, body.dump());
}

json BaseCompletion() { return {{"model", "m"}, {"prompt", "hello"}}; }
json BaseChat() {
  return {{"model", "m"}, {"messages", json::array({{{"role", "user"}, {"content", "hi"}}})}};
}

TEST(OpenAiRequestTest, CompletionDefaults) {
  auto r = Completion(BaseCompletion());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->model, "m");
  ASSERT_TRUE(r->prompt_text.has_value());
  EXPECT_EQ(*r->prompt_text, "hello");
  EXPECT_FALSE(r->max_tokens.has_value());
  EXPECT_FALSE(r->stream);
  EXPECT_FALSE(r->logprobs);
  EXPECT_FALSE(r->include_usage);
  EXPECT_EQ(r->sampling.temperature, 1.0f);
  EXPECT_FALSE(r->sampling.seed.has_value());
}

TEST(OpenAiRequestTest, CompletionEveryField) {
  json body = BaseCompletion();
  body.update({{"max_tokens", 7},
               {"temperature", 0.5},
               {"top_p", 0.9},
               {"n", 1},
               {"stream", true},
               {"stream_options", {{"include_usage", true}}},
               {"stop", json::array({"x", "yz"})},
               {"seed", 42},
               {"logprobs", 3},
               {"presence_penalty", 0.25},
               {"frequency_penalty", -0.5},
               {"user", "u1"},
               {"top_k", 40},
               {"min_p", 0.05},
               {"repetition_penalty", 1.1},
               {"ignore_eos", true},
               {"stop_token_ids", json::array({5, 6})},
               {"echo", false},
               {"best_of", 1},
               {"logit_bias", json::object()},
               {"some_future_field", "ignored"}});
  auto r = Completion(body);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r->max_tokens, 7);
  EXPECT_FLOAT_EQ(r->sampling.temperature, 0.5f);
  EXPECT_FLOAT_EQ(r->sampling.top_p, 0.9f);
  EXPECT_TRUE(r->stream);
  EXPECT_TRUE(r->include_usage);
  EXPECT_EQ(r->sampling.stop, (std::vector<std::string>{"x", "yz"}));
  EXPECT_EQ(*r->sampling.seed, 42u);
  EXPECT_TRUE(r->logprobs);
  EXPECT_EQ(r->sampling.logprobs, 3);
  EXPECT_FLOAT_EQ(r->sampling.presence_penalty, 0.25f);
  EXPECT_FLOAT_EQ(r->sampling.frequency_penalty, -0.5f);
  EXPECT_EQ(r->user, "u1");
  EXPECT_EQ(r->sampling.top_k, 40);
  EXPECT_FLOAT_EQ(r->sampling.min_p, 0.05f);
  EXPECT_FLOAT_EQ(r->sampling.repetition_penalty, 1.1f);
  EXPECT_TRUE(r->ignore_eos);
  EXPECT_EQ(r->sampling.stop_token_ids, (std::vector<int32_t>{5, 6}));
}

TEST(OpenAiRequestTest, NullsTakeDefaults) {
  json body = BaseCompletion();
  body.update({{"max_tokens", nullptr},
               {"temperature", nullptr},
               {"stop", nullptr},
               {"logprobs", nullptr},
               {"seed", nullptr}});
  auto r = Completion(body);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->max_tokens.has_value());
  EXPECT_FALSE(r->logprobs);
  EXPECT_TRUE(r->sampling.stop.empty());
}

TEST(OpenAiRequestTest, PromptShapes) {
  json body = BaseCompletion();
  body["prompt"] = json::array({1, 2, 3});
  auto r = Completion(body);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->prompt_text.has_value());
  EXPECT_EQ(r->prompt_tokens, (std::vector<int32_t>{1, 2, 3}));
  body["prompt"] = json::array({"one string"});
  r = Completion(body);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r->prompt_text, "one string");
  body["prompt"] = json::array({json::array({4, 5})});
  r = Completion(body);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->prompt_tokens, (std::vector<int32_t>{4, 5}));
  body["prompt"] = -1;
  ASSERT_FALSE(Completion(body).ok());
}

TEST(OpenAiRequestTest, SeedMayBeNegative) {
  json body = BaseCompletion();
  body["seed"] = -1;
  auto r = Completion(body);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r->sampling.seed, UINT64_MAX);
}

struct BadCase {
  std::string field;
  json value;
  std::string param;
};

TEST(OpenAiRequestTest, BadCompletionValuesNameTheParam) {
  std::vector<BadCase> cases = {
      {"model", 5, "model"},
      {"model", "", "model"},
      {"prompt", json::array(), "prompt"},
      {"prompt", json::array({"a", "b"}), "prompt"},
      {"prompt", json::array({1, -2}), "prompt"},
      {"prompt", json::array({1, "x"}), "prompt"},
      {"prompt", json::object(), "prompt"},
      {"max_tokens", 0, "max_tokens"},
      {"max_tokens", 1.5, "max_tokens"},
      {"max_tokens", "7", "max_tokens"},
      {"max_tokens", 1LL << 40, "max_tokens"},
      {"temperature", 2.5, "temperature"},
      {"temperature", -0.1, "temperature"},
      {"temperature", "hot", "temperature"},
      {"top_p", 0, "top_p"},
      {"top_p", 1.01, "top_p"},
      {"n", 17, "n"},
      {"n", 0, "n"},
      {"stream", "yes", "stream"},
      {"stream_options", 1, "stream_options"},
      {"stream_options", {{"include_usage", "y"}}, "stream_options.include_usage"},
      {"stop", 3, "stop"},
      {"stop", json::array({""}), "stop"},
      {"stop", json::array({1}), "stop"},
      {"stop",
       json::array(
           {"a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p", "q"}),
       "stop"},
      {"stop", std::string(300, 'x'), "stop"},
      {"seed", 1.5, "seed"},
      {"logprobs", 6, "logprobs"},
      {"logprobs", -1, "logprobs"},
      {"logprobs", true, "logprobs"},
      {"presence_penalty", 3, "presence_penalty"},
      {"frequency_penalty", -2.5, "frequency_penalty"},
      {"user", 1, "user"},
      {"user", std::string(257, 'u'), "user"},
      {"top_k", -2, "top_k"},
      {"min_p", 1.5, "min_p"},
      {"repetition_penalty", 0, "repetition_penalty"},
      {"repetition_penalty", 2.5, "repetition_penalty"},
      {"ignore_eos", 1, "ignore_eos"},
      {"stop_token_ids", json::array({-1}), "stop_token_ids"},
      {"stop_token_ids", 5, "stop_token_ids"},
      {"echo", "yes", "echo"},
      {"best_of", 3, "best_of"},
      {"suffix", "tail", "suffix"},
      {"logit_bias", json::array({1}), "logit_bias"},
      {"logit_bias", {{"x5", 10}}, "logit_bias"},
      {"logit_bias", {{"-1", 10}}, "logit_bias"},
      {"logit_bias", {{"4294967296", 10}}, "logit_bias"},
      {"logit_bias", {{"5", 100.5}}, "logit_bias"},
      {"logit_bias", {{"5", "10"}}, "logit_bias"},
  };
  for (const BadCase& c : cases) {
    json body = BaseCompletion();
    body[c.field] = c.value;
    auto r = Completion(body);
    ASSERT_FALSE(r.ok()) << c.field << "=" << c.value.dump();
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(ErrorParam(r.status()), c.param)
        << c.field << "=" << c.value.dump() << ": " << r.status();
  }
}

TEST(OpenAiRequestTest, LogitBiasMapsTokenIdsToBiases) {
  json body = BaseCompletion();
  body["logit_bias"] = {{"7", 100}, {"0", -100}, {"2147483647", 0.5}};
  auto r = Completion(body);
  ASSERT_TRUE(r.ok()) << r.status();
  auto bias = r->sampling.logit_bias;
  std::sort(bias.begin(), bias.end());
  EXPECT_EQ(bias, (std::vector<std::pair<int32_t, float>>{
                      {0, -100.0f}, {7, 100.0f}, {2147483647, 0.5f}}));

  json many = BaseCompletion();
  for (int i = 0; i <= sampling::kMaxLogitBias; ++i) many["logit_bias"][std::to_string(i)] = 1;
  auto refused = Completion(many);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(ErrorParam(refused.status()), "logit_bias");
}

TEST(OpenAiRequestTest, MissingRequiredFields) {
  auto r = Completion({{"prompt", "x"}});
  EXPECT_EQ(ErrorParam(r.status()), "model");
  r = Completion({{"model", "m"}});
  EXPECT_EQ(ErrorParam(r.status()), "prompt");
  auto c = Chat({{"model", "m"}});
  EXPECT_EQ(ErrorParam(c.status()), "messages");
  r = ParseOpenAiRequest(OpenAiEndpoint::kCompletions, "{not json");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  r = ParseOpenAiRequest(OpenAiEndpoint::kCompletions, "[1]");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(OpenAiRequestTest, ChatMessagesAndFields) {
  json body = {
      {"model", "m"},
      {"messages", json::array({{{"role", "system"}, {"content", "be brief"}},
                                {{"role", "user"},
                                 {"content", json::array({{{"type", "text"}, {"text", "a"}},
                                                          {{"type", "text"}, {"text", "b"}}})}},
                                {{"role", "assistant"}, {"content", nullptr}},
                                {{"role", "developer"}, {"content", "d"}}})},
      {"max_completion_tokens", 9},
      {"logprobs", true},
      {"top_logprobs", 4},
      {"tools", json::array()},
      {"tool_choice", "none"},
      {"response_format", {{"type", "text"}}}};
  auto r = Chat(body);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->messages.size(), 4u);
  EXPECT_EQ(r->messages[0].role, "system");
  EXPECT_EQ(r->messages[1].content, "ab");
  EXPECT_EQ(r->messages[2].content, "");
  EXPECT_EQ(*r->max_tokens, 9);
  EXPECT_TRUE(r->logprobs);
  EXPECT_EQ(r->sampling.logprobs, 4);
}

// Tool calls and tool results in the history reach the chat template: the
// assistant's content may be null, JSON arguments become objects, and every
// other field is kept as sent.
TEST(OpenAiRequestTest, ToolMessagesPassThrough) {
  json body = BaseChat();
  body["messages"] = json::parse(R"([
    {"role": "user", "content": "Weather?"},
    {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
      "function": {"name": "get_weather", "arguments": "{\"location\": \"Paris\"}"}}]},
    {"role": "tool", "tool_call_id": "c1", "name": "get_weather", "content": "21C"}])");
  auto r = Chat(body);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->messages.size(), 3u);
  EXPECT_TRUE(r->messages[1].content_null);
  const auto& call = r->messages[1].fields["tool_calls"][0];
  EXPECT_EQ(call["id"], "c1");
  EXPECT_EQ(call["function"]["name"], "get_weather");
  EXPECT_EQ(call["function"]["arguments"]["location"], "Paris");
  EXPECT_EQ(r->messages[2].role, "tool");
  EXPECT_EQ(r->messages[2].content, "21C");
  EXPECT_EQ(r->messages[2].fields["tool_call_id"], "c1");
  EXPECT_EQ(r->messages[2].fields["name"], "get_weather");
}

TEST(OpenAiRequestTest, BadChatValuesNameTheParam) {
  auto with = [](const std::string& field, json value) {
    json body = BaseChat();
    body[field] = std::move(value);
    return body;
  };
  auto message = [](json m) {
    json body = BaseChat();
    body["messages"] = json::array({std::move(m)});
    return body;
  };
  std::vector<std::pair<json, std::string>> cases = {
      {with("messages", json::array()), "messages"},
      {with("messages", "hi"), "messages"},
      {message("hi"), "messages[0]"},
      {message({{"content", "x"}}), "messages[0].role"},
      {message({{"role", "critic"}, {"content", "x"}}), "messages[0].role"},
      {message({{"role", "tool"}, {"content", "x"}}), "messages[0].tool_call_id"},
      {message({{"role", "user"}, {"content", "x"}, {"tool_calls", json::array()}}),
       "messages[0].tool_calls"},
      {message({{"role", "user"}}), "messages[0].content"},
      {message({{"role", "user"}, {"content", 5}}), "messages[0].content"},
      {message({{"role", "user"},
                {"content", json::array({{{"type", "text"}, {"text", "a"}},
                                         {{"type", "image_url"}, {"image_url", "x"}}})}}),
       "messages[0].content[1].type"},
      {message({{"role", "user"}, {"content", json::array({{{"type", "text"}}})}}),
       "messages[0].content[0].text"},
      {message(
           {{"role", "assistant"}, {"content", "x"}, {"tool_calls", json::array({{{"id", "1"}}})}}),
       "messages[0].tool_calls[0].function"},
      {with("n", 17), "n"},
      {with("max_completion_tokens", 0), "max_completion_tokens"},
      {with("logprobs", 1), "logprobs"},
      {with("top_logprobs", 2), "top_logprobs"},  // without logprobs: true
      {with("tools", json::array({{{"type", "function"}}})), "tools[0].function"},
      {with("tools", json::object()), "tools"},
      {with("tools", json::array({{{"type", "retrieval"}}})), "tools[0].type"},
      {with("tools", json::array({{{"type", "function"}, {"function", {{"name", "a b"}}}}})),
       "tools[0].function.name"},
      {with("tools", json::array({{{"type", "function"}, {"function", {{"name", "f"}}}},
                                  {{"type", "function"}, {"function", {{"name", "f"}}}}})),
       "tools[1].function.name"},
      {with("tools", json::array({{{"type", "function"},
                                   {"function", {{"name", "f"}, {"parameters", "{}"}}}}})),
       "tools[0].function.parameters"},
      {with("tool_choice", "auto"), "tool_choice"},
      {with("tool_choice", "required"), "tool_choice"},
      {with("tool_choice", "sometimes"), "tool_choice"},
      {with("parallel_tool_calls", "yes"), "parallel_tool_calls"},
      {with("functions", json::array({1})), "functions"},
      {with("function_call", "auto"), "function_call"},
      {with("response_format", {{"type", "xml"}}), "response_format.type"},
      {with("response_format", "json"), "response_format"},
      {with("response_format", {{"type", "json_schema"}}), "response_format.json_schema"},
      {with("response_format",
            {{"type", "json_schema"}, {"json_schema", {{"schema", json::object()}}}}),
       "response_format.json_schema.name"},
      {with("response_format",
            {{"type", "json_schema"},
             {"json_schema", {{"name", std::string(65, 'n')}, {"schema", json::object()}}}}),
       "response_format.json_schema.name"},
      {with("response_format",
            {{"type", "json_schema"}, {"json_schema", {{"name", "n"}, {"schema", 5}}}}),
       "response_format.json_schema.schema"},
      {with("response_format",
            {{"type", "json_schema"},
             {"json_schema", {{"name", "n"}, {"schema", json::object()}, {"strict", "yes"}}}}),
       "response_format.json_schema.strict"},
      {with("modalities", json::array({"text", "audio"})), "modalities"},
      {with("audio", {{"voice", "x"}}), "audio"},
  };
  for (const auto& [body, param] : cases) {
    auto r = Chat(body);
    ASSERT_FALSE(r.ok()) << body.dump();
    EXPECT_EQ(ErrorParam(r.status()), param) << body.dump() << ": " << r.status();
  }
  json too_many = with("logprobs", true);
  too_many["top_logprobs"] = 21;
  EXPECT_EQ(ErrorParam(Chat(too_many).status()), "top_logprobs");
}

TEST(OpenAiRequestTest, ResponseFormatBecomesAnOutputConstraint) {
  auto chat = [](const json& format) {
    json body = {{"model", "m"},
                 {"messages", json::array({{{"role", "user"}, {"content", "hi"}}})},
                 {"response_format", format}};
    return ParseOpenAiRequest(OpenAiEndpoint::kChatCompletions, body.dump());
  };
  auto text = chat({{"type", "text"}});
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_FALSE(text->response_format.has_value());
  auto object = chat({{"type", "json_object"}});
  ASSERT_TRUE(object.ok()) << object.status();
  ASSERT_TRUE(object->response_format.has_value());
  EXPECT_EQ(object->response_format->kind, grammar::OutputConstraint::Kind::kJsonObject);
  const json schema = {{"type", "object"}, {"properties", {{"a", {{"type", "integer"}}}}}};
  auto with_schema =
      chat({{"type", "json_schema"},
            {"json_schema", {{"name", "thing"}, {"schema", schema}, {"strict", true}}}});
  ASSERT_TRUE(with_schema.ok()) << with_schema.status();
  ASSERT_TRUE(with_schema->response_format.has_value());
  EXPECT_EQ(with_schema->response_format->kind, grammar::OutputConstraint::Kind::kJsonSchema);
  EXPECT_EQ(json::parse(with_schema->response_format->schema), schema);
  EXPECT_TRUE(with_schema->response_format->strict);
  // Completions take it too (as vLLM's do).
  json completion = {
      {"model", "m"}, {"prompt", "x"}, {"response_format", {{"type", "json_object"}}}};
  auto c = ParseOpenAiRequest(OpenAiEndpoint::kCompletions, completion.dump());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->response_format.has_value());
}

TEST(OpenAiRequestTest, ResolveMaxTokens) {
  OpenAiRequest completion;
  completion.endpoint = OpenAiEndpoint::kCompletions;
  EXPECT_EQ(*ResolveMaxTokens(completion, 10, 100), kDefaultCompletionMaxTokens);
  EXPECT_EQ(*ResolveMaxTokens(completion, 95, 100), 5);  // the default shrinks to fit
  absl::StatusOr<int32_t> full = ResolveMaxTokens(completion, 100, 100);
  EXPECT_EQ(full.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ErrorParam(full.status()), "prompt");
  completion.max_tokens = 50;
  EXPECT_EQ(*ResolveMaxTokens(completion, 50, 100), 50);
  absl::StatusOr<int32_t> over = ResolveMaxTokens(completion, 51, 100);
  EXPECT_EQ(ErrorParam(over.status()), "max_tokens");

  OpenAiRequest chat;
  chat.endpoint = OpenAiEndpoint::kChatCompletions;
  EXPECT_EQ(*ResolveMaxTokens(chat, 30, 100), 70);
  EXPECT_EQ(ErrorParam(ResolveMaxTokens(chat, 100, 100).status()), "messages");
}

ResponseMeta Meta(OpenAiEndpoint endpoint) {
  ResponseMeta meta;
  meta.endpoint = endpoint;
  meta.id = endpoint == OpenAiEndpoint::kCompletions ? "cmpl-1" : "chatcmpl-1";
  meta.created = 1700000000;
  meta.model = "m";
  return meta;
}

runtime::GenerationUsage Usage() {
  runtime::GenerationUsage usage;
  usage.prompt_tokens = 10;
  usage.cached_tokens = 4;
  usage.completion_tokens = 3;
  return usage;
}

TEST(OpenAiResponseTest, CompletionResponse) {
  const ResponseMeta meta = Meta(OpenAiEndpoint::kCompletions);
  json r = ResponseJson(
      meta, json::array({ChoiceJson(meta, 0, "abc", FinishReason::kLength, nullptr)}), Usage());
  EXPECT_EQ(r["id"], "cmpl-1");
  EXPECT_EQ(r["object"], "text_completion");
  EXPECT_EQ(r["created"], 1700000000);
  EXPECT_EQ(r["model"], "m");
  ASSERT_EQ(r["choices"].size(), 1u);
  EXPECT_EQ(r["choices"][0]["index"], 0);
  EXPECT_EQ(r["choices"][0]["text"], "abc");
  EXPECT_EQ(r["choices"][0]["finish_reason"], "length");
  EXPECT_TRUE(r["choices"][0]["logprobs"].is_null());
  EXPECT_FALSE(r["choices"][0].contains("tokenmill_finish"));
  EXPECT_EQ(r["usage"], json::parse(R"({"prompt_tokens":10,"completion_tokens":3,
      "total_tokens":13,"prompt_tokens_details":{"cached_tokens":4}})"));
}

TEST(OpenAiResponseTest, ChatResponseWithDeadline) {
  const ResponseMeta meta = Meta(OpenAiEndpoint::kChatCompletions);
  json r = ResponseJson(
      meta, json::array({ChoiceJson(meta, 0, "hi", FinishReason::kDeadline, nullptr)}), Usage());
  EXPECT_EQ(r["object"], "chat.completion");
  EXPECT_EQ(r["choices"][0]["message"], json::parse(R"({"role":"assistant","content":"hi"})"));
  EXPECT_EQ(r["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(r["choices"][0]["tokenmill_finish"], "deadline");
  EXPECT_EQ(OpenAiFinishReason(FinishReason::kStop), "stop");
}

TEST(OpenAiResponseTest, ChatChunks) {
  ResponseMeta meta = Meta(OpenAiEndpoint::kChatCompletions);
  ChunkContent role;
  role.role_chunk = true;
  json first = ChunkJson(meta, role, /*usage_null=*/true);
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"], json::parse(R"({"role":"assistant","content":""})"));
  EXPECT_TRUE(first["choices"][0]["finish_reason"].is_null());
  ASSERT_TRUE(first.contains("usage"));
  EXPECT_TRUE(first["usage"].is_null());

  ChunkContent text;
  text.text = "Hel";
  json second = ChunkJson(meta, text, false);
  EXPECT_EQ(second["choices"][0]["delta"], json::parse(R"({"content":"Hel"})"));
  EXPECT_FALSE(second.contains("usage"));

  ChunkContent last;
  last.finish = FinishReason::kStop;
  json end = ChunkJson(meta, last, false);
  EXPECT_EQ(end["choices"][0]["delta"], json::object());
  EXPECT_EQ(end["choices"][0]["finish_reason"], "stop");

  json usage = UsageChunkJson(meta, Usage());
  EXPECT_EQ(usage["choices"], json::array());
  EXPECT_EQ(usage["usage"]["total_tokens"], 13);
}

TEST(OpenAiResponseTest, CompletionChunk) {
  ChunkContent text;
  text.text = "x";
  json chunk = ChunkJson(Meta(OpenAiEndpoint::kCompletions), text, false);
  EXPECT_EQ(chunk["object"], "text_completion");
  EXPECT_EQ(chunk["choices"][0]["text"], "x");
  EXPECT_TRUE(chunk["choices"][0]["finish_reason"].is_null());
}

TEST(OpenAiResponseTest, SseFraming) {
  EXPECT_EQ(SseData(json{{"a", 1}}), "data: {\"a\":1}\n\n");
  EXPECT_EQ(kSseDone, "data: [DONE]\n\n");
  // A token's partial UTF-8 must not break the stream.
  EXPECT_EQ(SseData(json(std::string("\xe2"))), "data: \"\xEF\xBF\xBD\"\n\n");
}

std::vector<LogprobEntry> Entries() {
  LogprobEntry a;
  a.token = a.bytes = "He";
  a.logprob = -0.5f;
  a.top = {{"He", "He", -0.5f}, {"A", "A", -1.5f}};
  LogprobEntry b;
  b.token = "bytes:\\xe2";
  b.bytes = "\xe2";
  b.logprob = -0.25f;
  b.top = {{"bytes:\\xe2", "\xe2", -0.25f}};
  return {a, b};
}

TEST(OpenAiLogprobsTest, CompletionShape) {
  int64_t offset = 0;
  std::vector<LogprobEntry> entries = Entries();
  json lp = CompletionLogprobsJson(entries, &offset);
  EXPECT_EQ(lp["tokens"], json::array({"He", "bytes:\\xe2"}));
  EXPECT_EQ(lp["token_logprobs"], json::array({-0.5, -0.25}));
  EXPECT_EQ(lp["top_logprobs"][0], json::parse(R"({"He":-0.5,"A":-1.5})"));
  EXPECT_EQ(lp["text_offset"], json::array({0, 2}));
  EXPECT_EQ(offset, 3);  // offsets count the text's bytes
  // A later stream chunk continues the offsets.
  json next = CompletionLogprobsJson(std::span<const LogprobEntry>(entries).first(1), &offset);
  EXPECT_EQ(next["text_offset"], json::array({3}));
}

TEST(OpenAiLogprobsTest, ChatShape) {
  json lp = ChatLogprobsJson(Entries());
  ASSERT_EQ(lp["content"].size(), 2u);
  json first = lp["content"][0];
  EXPECT_EQ(first["token"], "He");
  EXPECT_EQ(first["logprob"], -0.5);
  EXPECT_EQ(first["bytes"], json::array({72, 101}));
  ASSERT_EQ(first["top_logprobs"].size(), 2u);
  EXPECT_EQ(first["top_logprobs"][1], json::parse(R"({"token":"A","logprob":-1.5,"bytes":[65]})"));
}

TEST(OpenAiLogprobsTest, EntriesFromTokens) {
  auto spec = model::BuildSynthVocabulary(300, tokenizer::PreTokenizer::kLlama3);
  ASSERT_TRUE(spec.ok()) << spec.status();
  auto tok = tokenizer::Tokenizer::Create(*spec);
  ASSERT_TRUE(tok.ok()) << tok.status();
  int32_t eos = *(*tok)->eos_id();
  std::vector<int32_t> ids = (*tok)->Encode("A", {.add_bos = false, .add_eos = false});
  ASSERT_EQ(ids.size(), 1u);
  runtime::GeneratedToken token;
  token.id = ids[0];
  token.logprob = -0.1f;
  token.top = {{ids[0], -0.1f}, {eos, -3.0f}};
  LogprobEntry entry = MakeLogprobEntry(token, **tok);
  EXPECT_EQ(entry.token, "A");
  EXPECT_FLOAT_EQ(entry.logprob, -0.1f);
  ASSERT_EQ(entry.top.size(), 2u);
  EXPECT_EQ(entry.top[1].token, "<|end_of_text|>");  // control tokens by name

  // A byte token that is not UTF-8 on its own is shown escaped, kept raw in bytes.
  std::optional<int32_t> byte_e2 = (*tok)->TokenId(model::ByteToUnicode(0xe2));
  ASSERT_TRUE(byte_e2.has_value());
  token.id = *byte_e2;
  token.top.clear();
  entry = MakeLogprobEntry(token, **tok);
  EXPECT_EQ(entry.token, "bytes:\\xe2");
  EXPECT_EQ(entry.bytes, "\xe2");
  EXPECT_EQ(LogprobTokenText(**tok, ids[0]), "A");
}

TEST(RequestIdTest, ClientIdsAndUuidV7) {
  EXPECT_TRUE(IsClientRequestId("req-123_ABC:x"));
  EXPECT_FALSE(IsClientRequestId(""));
  EXPECT_FALSE(IsClientRequestId("has space"));
  EXPECT_FALSE(IsClientRequestId("tab\t"));
  EXPECT_FALSE(IsClientRequestId(std::string(129, 'a')));
  EXPECT_TRUE(IsClientRequestId(std::string(128, 'a')));

  auto t = std::chrono::system_clock::time_point(std::chrono::milliseconds(0x0190d7e28a4bLL));
  std::string id = UuidV7(t, ~0ULL, ~0ULL);
  EXPECT_EQ(id, "0190d7e2-8a4b-7fff-bfff-ffffffffffff");
  std::string zero = UuidV7(t, 0, 0);
  EXPECT_EQ(zero, "0190d7e2-8a4b-7000-8000-000000000000");
  EXPECT_TRUE(std::regex_match(UuidV7(std::chrono::system_clock::now(), 12345, 67890),
                               std::regex("[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-"
                                          "[0-9a-f]{12}")));
}

TEST(OpenAiModelsTest, ModelObject) {
  EXPECT_EQ(ModelObjectJson("m", 5, "model", "hermes"),
            json::parse(R"({"id":"m","object":"model","created":5,
      "owned_by":"tokenmill","chat_template":"model","tool_calls":"hermes"})"));
}

// Members keep the client's order: a schema's properties are emitted in it,
// and templates print tool-call arguments in it (a sorted map would reorder
// both).
TEST(OpenAiRequestTest, SchemasAndArgumentsKeepTheClientsOrder) {
  const std::string body = R"({"model": "m", "messages": [
      {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
        "function": {"name": "f", "arguments": "{\"zeta\": 1, \"alpha\": 2}"}}]},
      {"role": "tool", "tool_call_id": "c1", "content": "ok"}],
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object",
      "properties": {"zeta": {"type": "integer"}, "alpha": {"type": "integer"}}}}}],
    "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": {
      "type": "object", "properties": {"zeta": {"type": "integer"}, "alpha": {"type": "integer"}}}}}})";
  auto r = ParseOpenAiRequest(OpenAiEndpoint::kChatCompletions, body);
  ASSERT_TRUE(r.ok()) << r.status();
  const std::string& schema = r->response_format->schema;
  EXPECT_LT(schema.find("zeta"), schema.find("alpha")) << schema;
  const std::string tool = r->tools.dump();
  EXPECT_LT(tool.find("zeta"), tool.find("alpha")) << tool;
  const std::string args = r->messages[0].fields["tool_calls"][0]["function"]["arguments"].dump();
  EXPECT_LT(args.find("zeta"), args.find("alpha")) << args;
}

TEST(OpenAiRequestTest, ToolsAndToolChoice) {
  json body = BaseChat();
  body["tools"] = json::parse(R"([
      {"type": "function", "function": {"name": "get_weather", "description": "d",
       "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
      {"type": "function", "function": {"name": "ping"}}])");
  auto r = Chat(body);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->tool_choice, OpenAiRequest::ToolChoice::kAuto) << "the default with tools";
  EXPECT_EQ(r->tools.size(), 2u);
  EXPECT_EQ(r->tools[0]["function"]["name"], "get_weather");
  EXPECT_TRUE(r->parallel_tool_calls);
  body["tool_choice"] = "required";
  body["parallel_tool_calls"] = false;
  r = Chat(body);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->tool_choice, OpenAiRequest::ToolChoice::kRequired);
  EXPECT_FALSE(r->parallel_tool_calls);
  body["tool_choice"] = {{"type", "function"}, {"function", {{"name", "ping"}}}};
  r = Chat(body);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->tool_choice, OpenAiRequest::ToolChoice::kFunction);
  EXPECT_EQ(r->tool_choice_name, "ping");
  body["tool_choice"] = {{"type", "function"}, {"function", {{"name", "pong"}}}};
  r = Chat(body);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(ErrorParam(r.status()), "tool_choice");
  body["tool_choice"] = "none";
  r = Chat(body);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->tool_choice, OpenAiRequest::ToolChoice::kNone);
}

TEST(OpenAiResponseTest, ToolCallsInResponsesAndChunks) {
  ResponseMeta meta{OpenAiEndpoint::kChatCompletions, "chatcmpl-1", 7, "m"};
  const std::vector<chat::ToolCall> calls = {{"call_1", "get_weather", R"({"city": "Oslo"})"}};
  json choice =
      ChoiceJson(meta, 0, "", runtime::FinishReason::kStop, nullptr, ToolCallsJson(calls));
  EXPECT_EQ(choice["finish_reason"], "tool_calls");
  EXPECT_TRUE(choice["message"]["content"].is_null());
  EXPECT_EQ(choice["message"]["tool_calls"], json::parse(R"([{"id": "call_1", "type": "function",
      "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}])"));
  // Cut by max_tokens: "length" stays.
  choice = ChoiceJson(meta, 0, "x", runtime::FinishReason::kLength, nullptr, ToolCallsJson(calls));
  EXPECT_EQ(choice["finish_reason"], "length");
  EXPECT_EQ(choice["message"]["content"], "x");

  ChunkContent chunk;
  chunk.tool_calls = ToolCallDeltasJson(
      std::vector<chat::ToolCallDelta>{{0, "call_1", "get_weather", ""}, {0, "", "", "{\"city\""}});
  json delta = ChunkJson(meta, chunk, false)["choices"][0]["delta"];
  EXPECT_EQ(delta, json::parse(R"({"tool_calls": [
      {"index": 0, "id": "call_1", "type": "function",
       "function": {"name": "get_weather", "arguments": ""}},
      {"index": 0, "function": {"arguments": "{\"city\""}}]})"));
  ChunkContent last;
  last.finish = runtime::FinishReason::kStop;
  last.called_tools = true;
  EXPECT_EQ(ChunkJson(meta, last, false)["choices"][0]["finish_reason"], "tool_calls");
}

}  // namespace
}  // namespace tokenmill::daemon
