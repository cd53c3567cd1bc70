// The OpenAI-compatible API and the models API end to end: a real HTTP server
// on a unix socket, a real InstanceManager with a tiny synthesized model, and
// libcurl / raw sockets as clients.
#include "daemon/openai_api.h"

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "daemon/api_errors.h"
#include "daemon/models_api.h"
#include "daemon/tenants_api.h"
#include "gtest/gtest.h"
#include "runtime/model/synth.h"
#include "storage/meter_store.h"
#include "tests/fakes/fake_device.h"
#include "tests/support/http_client.h"
#include "tests/support/store_reads.h"
#include "tests/support/temp_dir.h"
#include "tests/support/tiny_model.h"

namespace tokenmill::daemon {
namespace {

using nlohmann::json;
using tokenmill::testing::CurlRequest;
using tokenmill::testing::CurlResult;

constexpr char kKey[] = "sk-test-alpha";
constexpr char kSlowKey[] = "sk-test-slow";
constexpr char kNarrowKey[] = "sk-test-narrow";
constexpr char kFrugalKey[] = "sk-test-frugal";

devices::DeviceInfo CpuInfo(std::string id, uint64_t memory) {
  devices::DeviceInfo info;
  info.id = std::move(id);
  info.kind = devices::DeviceKind::kCpu;
  info.memory_total_bytes = memory;
  return info;
}

// Splits an SSE body into its data payloads.
std::vector<std::string> SseEvents(const std::string& body) {
  std::vector<std::string> events;
  for (absl::string_view event : absl::StrSplit(body, "\n\n", absl::SkipEmpty())) {
    std::string e(event);
    EXPECT_TRUE(absl::StartsWith(e, "data: ")) << e;
    events.push_back(e.substr(6));
  }
  return events;
}

std::string HeaderValue(const CurlResult& result, const std::string& name) {
  for (absl::string_view line : absl::StrSplit(result.headers, "\r\n")) {
    size_t colon = line.find(':');
    if (colon == absl::string_view::npos) continue;
    if (absl::EqualsIgnoreCase(line.substr(0, colon), name)) {
      return std::string(absl::StripAsciiWhitespace(line.substr(colon + 1)));
    }
  }
  return "";
}

class OpenAiApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const model::SynthOptions shape = tokenmill::testing::TinyModelShape(
        devices::TensorType::kF32, /*vocab_size=*/300, /*context_length=*/4096);
    model_path_ = dir_.path() / "tiny.gguf";
    ASSERT_TRUE(model::WriteSynthGguf(shape, model_path_).ok());

    storage::MeterStoreOptions store_options;
    store_options.dir = dir_.path() / "store";
    auto store = storage::MeterStore::Open(store_options);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);

    tenants::TenantPolicy alpha;
    alpha.name = "alpha";
    alpha.api_keys_sha256 = {tenants::ApiKeySha256(kKey)};
    ASSERT_TRUE(registry_.Put(alpha).ok());
    tenants::TenantPolicy slow;
    slow.name = "slow";
    slow.api_keys_sha256 = {tenants::ApiKeySha256(kSlowKey)};
    slow.rate_limit_tokens_per_s = 1;  // a 2-token bucket
    ASSERT_TRUE(registry_.Put(slow).ok());
    tenants::TenantPolicy narrow;
    narrow.name = "narrow";
    narrow.api_keys_sha256 = {tenants::ApiKeySha256(kNarrowKey)};
    narrow.models = {"some-other-model"};
    ASSERT_TRUE(registry_.Put(narrow).ok());
    tenants::TenantPolicy frugal;
    frugal.name = "frugal";
    frugal.api_keys_sha256 = {tenants::ApiKeySha256(kFrugalKey)};
    frugal.schema_compile_s_per_min = 1e-6;  // any compile spends it for about a minute
    ASSERT_TRUE(registry_.Put(frugal).ok());

    runtime::InstanceManagerOptions options;
    options.default_max_seqs = 4;
    options.default_max_batch_tokens = 64;
    options.cpu_threads = 1;
    options.kv_memory = [](const devices::Device&) {
      return devices::KvArenaBudget{.bytes = uint64_t{8} << 20};
    };
    auto manager = runtime::InstanceManager::Create({&cpu_, &small_}, registry_, clock_, options);
    ASSERT_TRUE(manager.ok()) << manager.status();
    instances_ = std::move(*manager);

    models_api_ = std::make_unique<ModelsApi>(*instances_, store_.get());
    encode_pool_ = std::make_unique<EncodePool>(EncodePool::Options{.threads = 2});
    openai_api_ = std::make_unique<OpenAiApi>(
        registry_, *instances_, *encode_pool_,
        [this](std::function<void()> fn) { server_->Post(std::move(fn)); });
    socket_ = (dir_.path() / "api.sock").string();
    http::HttpServerOptions server_options;
    server_options.listeners.push_back({http::Listener::Kind::kUnix, socket_, 0600});
    server_ = std::make_unique<http::HttpServer>(
        server_options, [this](http::HttpRequest request, http::ResponseWriterPtr response) {
          if (models_api_->Handle(request, response)) return;
          if (openai_api_->Handle(request, response)) return;
          SendError(*response, absl::NotFoundError("no endpoint"));
        });
    ASSERT_TRUE(server_->Start().ok());

    CurlResult load =
        Call("POST", "/control/v1/models",
             json{{"id", "tiny"}, {"path", model_path_.string()}, {"context", 1024}}.dump());
    ASSERT_EQ(load.status, 202) << load.body;
    auto ready = instances_->WaitLoaded("tiny", std::chrono::seconds(30));
    ASSERT_TRUE(ready.ok()) << ready.status();
    ASSERT_EQ(ready->state, runtime::InstanceState::kReady) << ready->error;
  }

  void TearDown() override {
    if (encode_pool_) encode_pool_->Stop();
    server_.reset();
    if (instances_) instances_->Stop();
  }

  CurlResult Call(const std::string& method, const std::string& path, const std::string& body = "",
                  std::vector<std::string> headers = {}) {
    if (!body.empty()) headers.push_back("Content-Type: application/json");
    return CurlRequest("http://localhost" + path, socket_, method, body, headers);
  }
  CurlResult Post(const std::string& path, const json& body, const std::string& key = kKey,
                  std::vector<std::string> headers = {}) {
    if (!key.empty()) headers.push_back("Authorization: Bearer " + key);
    return Call("POST", path, body.dump(), std::move(headers));
  }

  tokenmill::testing::TempDir dir_;
  std::filesystem::path model_path_;
  storage::MeterStorePtr store_;
  runtime::SteadyClock clock_;
  tenants::TenantRegistry registry_;
  fakes::FakeDevice cpu_{CpuInfo("cpu", uint64_t{8} << 30)};
  fakes::FakeDevice small_{CpuInfo("small", uint64_t{1} << 20)};
  std::unique_ptr<runtime::InstanceManager> instances_;
  std::unique_ptr<ModelsApi> models_api_;
  std::unique_ptr<EncodePool> encode_pool_;
  std::unique_ptr<OpenAiApi> openai_api_;
  std::string socket_;
  std::unique_ptr<http::HttpServer> server_;
};

TEST_F(OpenAiApiTest, Completion) {
  CurlResult r = Post("/v1/completions",
                      {{"model", "tiny"},
                       {"prompt", "Hello there"},
                       {"max_tokens", 5},
                       {"temperature", 0},
                       {"ignore_eos", true},
                       {"logprobs", 2}},
                      kKey, {"X-Request-Id: my-request-1"});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(HeaderValue(r, "X-Request-Id"), "my-request-1");
  json body = json::parse(r.body);
  // The response id carries our ledger key (a UUIDv7), never the client's id.
  const std::string id = body["id"];
  EXPECT_TRUE(id.starts_with("cmpl-")) << id;
  EXPECT_EQ(id.size(), 5u + 36u) << id;
  EXPECT_EQ(id.find("my-request-1"), std::string::npos) << id;
  EXPECT_EQ(body["object"], "text_completion");
  EXPECT_EQ(body["model"], "tiny");
  EXPECT_GT(body["created"].get<int64_t>(), 1'600'000'000);
  EXPECT_EQ(body["choices"][0]["finish_reason"], "length");
  EXPECT_TRUE(body["choices"][0]["text"].is_string());
  EXPECT_EQ(body["choices"][0]["logprobs"]["tokens"].size(), 5u);
  EXPECT_EQ(body["choices"][0]["logprobs"]["top_logprobs"][0].size(), 2u);
  EXPECT_EQ(body["usage"]["completion_tokens"], 5);
  EXPECT_GT(body["usage"]["prompt_tokens"].get<int>(), 1);
  EXPECT_EQ(body["usage"]["total_tokens"].get<int>(),
            body["usage"]["prompt_tokens"].get<int>() + 5);
  EXPECT_TRUE(body["usage"]["prompt_tokens_details"]["cached_tokens"].is_number());

  // Greedy decoding is deterministic: the same request gives the same text.
  CurlResult again = Post("/v1/completions", {{"model", "tiny"},
                                              {"prompt", "Hello there"},
                                              {"max_tokens", 5},
                                              {"temperature", 0},
                                              {"ignore_eos", true},
                                              {"logprobs", 2}});
  ASSERT_EQ(again.status, 200);
  EXPECT_EQ(json::parse(again.body)["choices"][0]["text"], body["choices"][0]["text"]);
  // A generated request id is a UUIDv7.
  std::string generated = HeaderValue(again, "X-Request-Id");
  EXPECT_EQ(generated.size(), 36u);
  EXPECT_EQ(generated[14], '7');
}

TEST_F(OpenAiApiTest, ChatStreamWithUsage) {
  CurlResult r = Post("/v1/chat/completions",
                      {{"model", "tiny"},
                       {"messages", json::array({{{"role", "user"}, {"content", "Hi"}}})},
                       {"max_tokens", 6},
                       {"ignore_eos", true},
                       {"seed", 7},
                       {"stream", true},
                       {"stream_options", {{"include_usage", true}}}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_TRUE(absl::StartsWith(HeaderValue(r, "Content-Type"), "text/event-stream"));
  EXPECT_EQ(HeaderValue(r, "Cache-Control"), "no-cache");
  std::vector<std::string> events = SseEvents(r.body);
  ASSERT_GE(events.size(), 4u) << r.body;
  EXPECT_EQ(events.back(), "[DONE]");
  json first = json::parse(events[0]);
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"], json::parse(R"({"role":"assistant","content":""})"));
  std::string text;
  for (size_t i = 0; i + 2 < events.size(); ++i) {
    json chunk = json::parse(events[i]);
    ASSERT_TRUE(chunk.contains("usage")) << events[i];
    EXPECT_TRUE(chunk["usage"].is_null());
    EXPECT_EQ(chunk["id"], first["id"]);
    if (chunk["choices"][0]["delta"].contains("content")) {
      text += chunk["choices"][0]["delta"]["content"].get<std::string>();
    }
  }
  json finish = json::parse(events[events.size() - 3]);
  EXPECT_EQ(finish["choices"][0]["finish_reason"], "length");
  json usage = json::parse(events[events.size() - 2]);
  EXPECT_EQ(usage["choices"], json::array());
  EXPECT_EQ(usage["usage"]["completion_tokens"], 6);
  EXPECT_GT(usage["usage"]["prompt_tokens"].get<int>(), 3);  // the chat template's markup

  // The same request without streaming gives the same text (same seed).
  CurlResult whole = Post("/v1/chat/completions",
                          {{"model", "tiny"},
                           {"messages", json::array({{{"role", "user"}, {"content", "Hi"}}})},
                           {"max_tokens", 6},
                           {"ignore_eos", true},
                           {"seed", 7}});
  ASSERT_EQ(whole.status, 200) << whole.body;
  json body = json::parse(whole.body);
  EXPECT_EQ(body["object"], "chat.completion");
  EXPECT_EQ(body["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(body["choices"][0]["message"]["content"], text);
}

TEST_F(OpenAiApiTest, AuthErrors) {
  json request = {{"model", "tiny"}, {"prompt", "x"}, {"max_tokens", 1}};
  CurlResult missing = Post("/v1/completions", request, "");
  EXPECT_EQ(missing.status, 401);
  json error = json::parse(missing.body)["error"];
  EXPECT_EQ(error["type"], "invalid_request_error");
  EXPECT_EQ(error["code"], "invalid_api_key");
  CurlResult wrong = Post("/v1/completions", request, "sk-wrong");
  EXPECT_EQ(wrong.status, 401);
  CurlResult models = Call("GET", "/v1/models");
  EXPECT_EQ(models.status, 401);
}

TEST_F(OpenAiApiTest, UnknownOrForbiddenModelIs404) {
  CurlResult unknown = Post("/v1/completions", {{"model", "nope"}, {"prompt", "x"}});
  EXPECT_EQ(unknown.status, 404);
  EXPECT_EQ(json::parse(unknown.body)["error"]["code"], "model_not_found");
  CurlResult forbidden = Post("/v1/completions", {{"model", "tiny"}, {"prompt", "x"}}, kNarrowKey);
  EXPECT_EQ(forbidden.status, 404);
  EXPECT_EQ(json::parse(forbidden.body)["error"]["code"], "model_not_found");

  CurlResult list = Call("GET", "/v1/models", "", {std::string("Authorization: Bearer ") + kKey});
  ASSERT_EQ(list.status, 200);
  json data = json::parse(list.body)["data"];
  ASSERT_EQ(data.size(), 1u);
  EXPECT_EQ(data[0]["id"], "tiny");
  EXPECT_EQ(data[0]["owned_by"], "tokenmill");
  CurlResult narrow_list =
      Call("GET", "/v1/models", "", {std::string("Authorization: Bearer ") + kNarrowKey});
  EXPECT_EQ(json::parse(narrow_list.body)["data"].size(), 0u);
  CurlResult one =
      Call("GET", "/v1/models/tiny", "", {std::string("Authorization: Bearer ") + kKey});
  EXPECT_EQ(one.status, 200);
  EXPECT_EQ(json::parse(one.body)["id"], "tiny");
}

TEST_F(OpenAiApiTest, BadRequestsNameTheParam) {
  CurlResult n2 = Post("/v1/completions", {{"model", "tiny"}, {"prompt", "x"}, {"n", 17}});
  EXPECT_EQ(n2.status, 400);
  EXPECT_EQ(json::parse(n2.body)["error"]["param"], "n");
  CurlResult too_long =
      Post("/v1/completions", {{"model", "tiny"}, {"prompt", "x"}, {"max_tokens", 5000}});
  EXPECT_EQ(too_long.status, 400);
  EXPECT_EQ(json::parse(too_long.body)["error"]["param"], "max_tokens");
  CurlResult bad_token =
      Post("/v1/completions", {{"model", "tiny"}, {"prompt", json::array({1, 100000})}});
  EXPECT_EQ(bad_token.status, 400);
  EXPECT_EQ(json::parse(bad_token.body)["error"]["param"], "prompt");
  CurlResult bad_timeout = Post("/v1/completions", {{"model", "tiny"}, {"prompt", "x"}}, kKey,
                                {"X-Tokenmill-Timeout-Ms: soon"});
  EXPECT_EQ(bad_timeout.status, 400);
  CurlResult get = Call("GET", "/v1/completions");
  EXPECT_EQ(get.status, 405);
}

TEST_F(OpenAiApiTest, RateLimitedWithRetryAfter) {
  json request = {{"model", "tiny"},
                  {"prompt", "a longer prompt of several tokens"},
                  {"max_tokens", 2},
                  {"ignore_eos", true}};
  CurlResult first = Post("/v1/completions", request, kSlowKey);
  ASSERT_EQ(first.status, 200) << first.body;
  CurlResult second = Post("/v1/completions", request, kSlowKey);
  ASSERT_EQ(second.status, 429) << second.body;
  int retry_after = std::stoi(HeaderValue(second, "Retry-After"));
  EXPECT_GE(retry_after, 2);  // several tokens of debt at 1 token/s
  json error = json::parse(second.body)["error"];
  EXPECT_EQ(error["type"], "rate_limit_error");
  EXPECT_EQ(error["code"], "rate_limit_exceeded");
  // Other tenants are not affected.
  EXPECT_EQ(Post("/v1/completions", request).status, 200);
}

// A tenant that has spent its schema compile time gets 429 for a schema the
// model has not compiled, and is served schemas compiled before (its own or
// another tenant's: the cache is the model's); other tenants are not
// affected.
TEST_F(OpenAiApiTest, SchemaCompileBudgetRefusesOnlyNewSchemas) {
  auto request = [](int maximum) {
    json schema = {{"type", "integer"}, {"minimum", 0}, {"maximum", maximum}};
    json format = {{"type", "json_schema"}, {"json_schema", {{"name", "n"}, {"schema", schema}}}};
    json messages = json::array({{{"role", "user"}, {"content", "a number"}}});
    return json{
        {"model", "tiny"}, {"messages", messages}, {"max_tokens", 3}, {"response_format", format}};
  };
  CurlResult first = Post("/v1/chat/completions", request(7), kFrugalKey);
  ASSERT_EQ(first.status, 200) << first.body;  // a full budget compiles once
  CurlResult refused = Post("/v1/chat/completions", request(8), kFrugalKey);
  ASSERT_EQ(refused.status, 429) << refused.body;
  EXPECT_GE(std::stoi(HeaderValue(refused, "Retry-After")), 1);
  json error = json::parse(refused.body)["error"];
  EXPECT_EQ(error["code"], "rate_limit_exceeded");
  EXPECT_NE(error["message"].get<std::string>().find("schema compile"), std::string::npos)
      << refused.body;
  EXPECT_EQ(Post("/v1/chat/completions", request(7), kFrugalKey).status, 200);
  ASSERT_EQ(Post("/v1/chat/completions", request(8)).status, 200);  // alpha: default budget
  EXPECT_EQ(Post("/v1/chat/completions", request(8), kFrugalKey).status, 200);
  EXPECT_EQ(Post("/v1/chat/completions", request(9), kFrugalKey).status, 429);
}

TEST_F(OpenAiApiTest, ClientDisconnectCancels) {
  runtime::ModelInstancePtr instance = instances_->Find("tiny");
  ASSERT_NE(instance, nullptr);
  uint64_t generated_before = instance->Stats().generated_tokens;
  auto client = tokenmill::testing::RawClient::ConnectUnix(socket_);
  ASSERT_NE(client, nullptr);
  std::string body = json{
      {"model", "tiny"},
      {"prompt", "go on"},
      {"max_tokens", 1000},
      {"ignore_eos", true},
      {"stream", true}}.dump();
  ASSERT_TRUE(client->Send("POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                           std::string(kKey) + "\r\nContent-Type: application/json\r\n" +
                           "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body));
  ASSERT_TRUE(client->ReadUntil("data: ", std::chrono::seconds(10)));
  client->Close();
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline &&
         (instance->Stats().running > 0 || registry_.InFlight("alpha") > 0)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(instance->Stats().running, 0u);
  EXPECT_EQ(registry_.InFlight("alpha"), 0u);
  // Cancelled long before its 1000 tokens.
  EXPECT_LT(instance->Stats().generated_tokens - generated_before, 1000u);
}

TEST_F(OpenAiApiTest, ModelsApiLoadListUnload) {
  CurlResult list = Call("GET", "/control/v1/models");
  ASSERT_EQ(list.status, 200);
  json models = json::parse(list.body)["models"];
  ASSERT_EQ(models.size(), 1u);
  json tiny = models[0];
  EXPECT_EQ(tiny["id"], "tiny");
  EXPECT_EQ(tiny["state"], "ready");
  EXPECT_EQ(tiny["device"], "cpu");
  EXPECT_EQ(tiny["context"], 1024);
  EXPECT_EQ(tiny["architecture"], "llama");
  EXPECT_GT(tiny["weight_bytes"].get<uint64_t>(), 0u);
  EXPECT_TRUE(tiny["loaded_at"].is_string());
  EXPECT_TRUE(tiny["stats"].contains("device_seconds"));
  EXPECT_FALSE(tiny.contains("error"));

  auto stored = ::tokenmill::testing::StateValue(*store_, "model/tiny");
  ASSERT_TRUE(stored.ok() && stored->has_value());
  auto spec = ParseModelBody(**stored);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->path, model_path_);
  EXPECT_EQ(*spec->context, 1024u);

  EXPECT_EQ(Call("GET", "/control/v1/models/tiny").status, 200);
  EXPECT_EQ(Call("GET", "/control/v1/models/none").status, 404);
  CurlResult dup = Call("POST", "/control/v1/models",
                        json{{"id", "tiny"}, {"path", model_path_.string()}}.dump());
  EXPECT_EQ(dup.status, 409);
  CurlResult missing =
      Call("POST", "/control/v1/models",
           json{{"id", "m2"}, {"path", (dir_.path() / "no.gguf").string()}}.dump());
  EXPECT_EQ(missing.status, 404) << missing.body;
  CurlResult unknown_field =
      Call("POST", "/control/v1/models", json{{"id", "m2"}, {"path", "x"}, {"gpu", 1}}.dump());
  EXPECT_EQ(unknown_field.status, 400);
  EXPECT_TRUE(absl::StrContains(unknown_field.body, "gpu")) << unknown_field.body;
  CurlResult too_big =
      Call("POST", "/control/v1/models",
           json{{"id", "m3"}, {"path", model_path_.string()}, {"device", "small"}}.dump());
  EXPECT_EQ(too_big.status, 507) << too_big.body;
  stored = ::tokenmill::testing::StateValue(*store_, "model/m3");
  ASSERT_TRUE(stored.ok());
  EXPECT_FALSE(stored->has_value());

  CurlResult unload = Call("DELETE", "/control/v1/models/tiny");
  ASSERT_EQ(unload.status, 202) << unload.body;
  EXPECT_EQ(json::parse(unload.body)["state"], "draining");
  stored = ::tokenmill::testing::StateValue(*store_, "model/tiny");
  ASSERT_TRUE(stored.ok());
  EXPECT_FALSE(stored->has_value());
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline &&
         Call("GET", "/control/v1/models/tiny").status != 404) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(Call("GET", "/control/v1/models/tiny").status, 404);
  EXPECT_EQ(Post("/v1/completions", {{"model", "tiny"}, {"prompt", "x"}}).status, 404);
}

TEST_F(OpenAiApiTest, CompletionStreamWithLogprobs) {
  CurlResult r = Post("/v1/completions", {{"model", "tiny"},
                                          {"prompt", json::array({5, 6, 7})},
                                          {"max_tokens", 4},
                                          {"ignore_eos", true},
                                          {"temperature", 0},
                                          {"logprobs", 1},
                                          {"stream", true}});
  ASSERT_EQ(r.status, 200) << r.body;
  std::vector<std::string> events = SseEvents(r.body);
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events.back(), "[DONE]");
  int tokens = 0;
  int64_t next_offset = 0;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    json chunk = json::parse(events[i]);
    EXPECT_EQ(chunk["object"], "text_completion");
    EXPECT_FALSE(chunk.contains("usage"));  // include_usage not asked
    json choice = chunk["choices"][0];
    if (!choice["finish_reason"].is_null()) {
      EXPECT_EQ(choice["finish_reason"], "length");
      EXPECT_EQ(i, events.size() - 2);
      continue;
    }
    json lp = choice["logprobs"];
    for (size_t t = 0; t < lp["tokens"].size(); ++t, ++tokens) {
      // Offsets grow by each token's bytes (shown tokens may be escaped).
      EXPECT_GE(lp["text_offset"][t].get<int64_t>(), next_offset);
      if (tokens == 0) {
        EXPECT_EQ(lp["text_offset"][t].get<int64_t>(), 0);
      }
      next_offset = lp["text_offset"][t].get<int64_t>() + 1;
      EXPECT_EQ(lp["top_logprobs"][t].size(), 1u);
      EXPECT_LE(lp["token_logprobs"][t].get<double>(), 0.0);
    }
  }
  EXPECT_EQ(tokens, 4);
}

// `echo`: the prompt's text before the completion's, and with logprobs its
// tokens' logprobs (the model's, computed over the whole prompt) before the
// completion's, text offsets counting from the prompt's start; the BOS the
// tokenizer added is not echoed. Token-id prompts echo their decoded text and
// the first token's logprob is null. Streams echo in their first chunk.
TEST_F(OpenAiApiTest, EchoPutsThePromptAndItsLogprobsFirst) {
  const std::string prompt = "Echo me, please: the prompt comes back first.";
  CurlResult plain = Post("/v1/completions", {{"model", "tiny"},
                                              {"prompt", prompt},
                                              {"max_tokens", 3},
                                              {"temperature", 0},
                                              {"ignore_eos", true},
                                              {"echo", true}});
  ASSERT_EQ(plain.status, 200) << plain.body;
  const json p = json::parse(plain.body);
  EXPECT_TRUE(p["choices"][0]["text"].get<std::string>().starts_with(prompt)) << plain.body;

  CurlResult scored = Post("/v1/completions", {{"model", "tiny"},
                                               {"prompt", prompt},
                                               {"max_tokens", 3},
                                               {"temperature", 0},
                                               {"ignore_eos", true},
                                               {"echo", true},
                                               {"logprobs", 2}});
  ASSERT_EQ(scored.status, 200) << scored.body;
  const json s = json::parse(scored.body);
  const json& choice = s["choices"][0];
  const std::string text = choice["text"];
  EXPECT_EQ(text, p["choices"][0]["text"].get<std::string>()) << "the same greedy completion";
  const json& lp = choice["logprobs"];
  const int64_t prompt_tokens = s["usage"]["prompt_tokens"];
  ASSERT_EQ(lp["tokens"].size(), static_cast<size_t>(prompt_tokens - 1 + 3)) << "all but the BOS";
  std::string joined;  // the prompt's tokens (ASCII: each shown as its text)
  for (size_t i = 0; i < lp["tokens"].size(); ++i) {
    if (i + 1 < static_cast<size_t>(prompt_tokens)) {
      EXPECT_EQ(lp["text_offset"][i], static_cast<int64_t>(joined.size())) << i;
      joined += lp["tokens"][i].get<std::string>();
    }
    ASSERT_TRUE(lp["token_logprobs"][i].is_number()) << i << ": " << lp.dump();
    EXPECT_LE(lp["token_logprobs"][i].get<double>(), 0.0);
    EXPECT_EQ(lp["top_logprobs"][i].size(), 2u) << i;
  }
  EXPECT_EQ(joined, prompt);
  EXPECT_EQ(lp["text_offset"][prompt_tokens - 1], static_cast<int64_t>(prompt.size()))
      << "the completion's first token starts after the prompt";

  // Token ids: the decoded prompt, and no logprob for its first token.
  CurlResult tokenized = Post("/tokenize", {{"model", "tiny"}, {"prompt", "Hello there"}});
  ASSERT_EQ(tokenized.status, 200) << tokenized.body;
  const json prompt_ids = json::parse(tokenized.body)["tokens"];
  ASSERT_GE(prompt_ids.size(), 3u) << tokenized.body;
  CurlResult ids = Post("/v1/completions", {{"model", "tiny"},
                                            {"prompt", prompt_ids},
                                            {"max_tokens", 2},
                                            {"echo", true},
                                            {"logprobs", 1},
                                            {"ignore_eos", true},
                                            {"stream", true}});
  ASSERT_EQ(ids.status, 200) << ids.body;
  const std::vector<std::string> events = SseEvents(ids.body);
  ASSERT_GE(events.size(), 3u);
  const json first = json::parse(events[0]);
  const json& first_lp = first["choices"][0]["logprobs"];
  ASSERT_GE(first_lp["tokens"].size(), prompt_ids.size()) << events[0];
  EXPECT_TRUE(first_lp["token_logprobs"][0].is_null()) << events[0];
  EXPECT_TRUE(first_lp["top_logprobs"][0].is_null()) << events[0];
  EXPECT_TRUE(first_lp["token_logprobs"][1].is_number()) << events[0];
  std::string shown;
  for (size_t i = 0; i < prompt_ids.size(); ++i) shown += first_lp["tokens"][i].get<std::string>();
  EXPECT_TRUE(first["choices"][0]["text"].get<std::string>().starts_with(shown)) << events[0];
  EXPECT_NE(shown.find("Hello there"), std::string::npos) << shown;
}

TEST_F(OpenAiApiTest, ChatLogprobs) {
  CurlResult r = Post("/v1/chat/completions",
                      {{"model", "tiny"},
                       {"messages", json::array({{{"role", "user"}, {"content", "Hi"}}})},
                       {"max_completion_tokens", 3},
                       {"ignore_eos", true},
                       {"logprobs", true},
                       {"top_logprobs", 3}});
  ASSERT_EQ(r.status, 200) << r.body;
  json content = json::parse(r.body)["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), 3u);
  EXPECT_TRUE(content[0]["bytes"].is_array());
  EXPECT_EQ(content[0]["top_logprobs"].size(), 3u);
}

TEST_F(OpenAiApiTest, DeadlineEndsTheRequest) {
  std::vector<int32_t> prompt(300);
  for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = 1 + static_cast<int32_t>(i % 250);
  CurlResult r =
      Post("/v1/completions",
           {{"model", "tiny"}, {"prompt", prompt}, {"max_tokens", 700}, {"ignore_eos", true}}, kKey,
           {"X-Tokenmill-Timeout-Ms: 1"});
  // Either the deadline passed before the first token (504) or during the
  // generation (200, "stop" with the extension field); never 700 tokens.
  if (r.status == 504) {
    EXPECT_EQ(json::parse(r.body)["error"]["type"], "server_error");
  } else {
    ASSERT_EQ(r.status, 200) << r.body;
    json body = json::parse(r.body);
    EXPECT_EQ(body["choices"][0]["finish_reason"], "stop");
    EXPECT_EQ(body["choices"][0]["tokenmill_finish"], "deadline");
    EXPECT_LT(body["usage"]["completion_tokens"].get<int>(), 700);
  }
}

TEST(ModelBodyTest, ParseAndStoreForm) {
  auto spec = ParseModelBody(
      R"({"id":"m:1","path":"/x.gguf","device":"cpu","max_seqs":4,"max_batch_tokens":128,
          "context":null})");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->id, "m:1");
  EXPECT_EQ(spec->device, "cpu");
  EXPECT_EQ(*spec->max_seqs, 4u);
  EXPECT_FALSE(spec->context.has_value());
  auto again = ParseModelBody(ModelStateJson(*spec).dump());
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *spec);

  std::vector<std::pair<std::string, std::string>> bad = {
      {R"({"path":"/x"})", "id"},
      {R"({"id":"m"})", "path"},
      {R"({"id":"bad id","path":"/x"})", "id"},
      {R"({"id":"m","path":""})", "path"},
      {R"({"id":"m","path":"/x","max_seqs":0})", "max_seqs"},
      {R"({"id":"m","path":"/x","context":-5})", "context"},
      {R"({"id":"m","path":"/x","max_batch_tokens":"big"})", "max_batch_tokens"},
      {R"({"id":"m","path":"/x","device":3})", "device"},
      {R"({"id":"m","path":"/x","weights":"f16"})", "weights"},
      {R"(nope)", "JSON object"},
  };
  for (const auto& [body, field] : bad) {
    auto r = ParseModelBody(body);
    ASSERT_FALSE(r.ok()) << body;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(absl::StrContains(std::string(r.status().message()), field))
        << body << ": " << r.status();
  }
}

TEST_F(OpenAiApiTest, AnonymousWhenNoTenants) {
  for (const char* name : {"alpha", "slow", "narrow", "frugal"}) {
    ASSERT_TRUE(registry_.Remove(name).ok());
  }
  CurlResult r =
      Post("/v1/completions", {{"model", "tiny"}, {"prompt", "x"}, {"max_tokens", 1}}, "");
  EXPECT_EQ(r.status, 200) << r.body;
}

}  // namespace
}  // namespace tokenmill::daemon
