// The real tokenmilld serving a synthesized model over the OpenAI-compatible
// API: many concurrent streams, admission limits under a flood, and a real
// OpenAI client library (npm `openai`, run with node).
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/model/synth.h"
#include "runtime/tenants/tenant_registry.h"
#include "tests/integration/daemon_process.h"
#include "tests/support/temp_dir.h"
#include "tests/support/tiny_model.h"

namespace tokenmill::testing {
namespace {

using nlohmann::json;

constexpr char kAlphaKey[] = "key-alpha-0123456789";
constexpr char kBetaKey[] = "key-beta-0123456789";

class ServingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const model::SynthOptions shape = TinyModelShape();
    model_path_ = dir_.path() / "tiny.gguf";
    ASSERT_TRUE(model::WriteSynthGguf(shape, model_path_).ok());

    DaemonOptions options;
    options.api_toml = "tcp = \"127.0.0.1:0\"\n";
    options.extra_toml = absl::StrCat(
        "[scheduler]\nmax_seqs = 64\nmax_batch_tokens = 512\n\n"
        "[[model]]\nid = \"tiny\"\npath = \"",
        model_path_.string(), "\"\n\n", "[[tenant]]\nname = \"alpha\"\napi_keys_sha256 = [\"",
        tenants::ApiKeySha256(kAlphaKey), "\"]\nweight = 2.0\nmax_queue = 512\n\n",
        "[[tenant]]\nname = \"beta\"\napi_keys_sha256 = [\"", tenants::ApiKeySha256(kBetaKey),
        "\"]\nmax_concurrent = 2\nmax_queue = 2\n");
    daemon_ = std::make_unique<DaemonProcess>(dir_.path(), options);
    ASSERT_TRUE(daemon_->Start()) << daemon_->Stderr();
    // Config models load at start; wait until ready.
    ASSERT_TRUE(daemon_->WaitModelReady("tiny")) << daemon_->Stderr();
    port_ = daemon_->ApiTcpPort();
    ASSERT_FALSE(port_.empty());
  }

  void TearDown() override {
    if (daemon_) {
      EXPECT_EQ(daemon_->Stop(), 0) << daemon_->Stderr();
    }
  }

  CurlResult Post(const std::string& path, const json& body, const std::string& key,
                  long timeout_ms = 60000) {
    return CurlRequest(absl::StrCat("http://127.0.0.1:", port_, path), "", "POST", body.dump(),
                       {"Content-Type: application/json", "Authorization: Bearer " + key},
                       timeout_ms);
  }

  TempDir dir_;
  std::filesystem::path model_path_;
  std::unique_ptr<DaemonProcess> daemon_;
  std::string port_;
};

// The SSE data payloads of a streamed body, in order ("[DONE]" included).
std::vector<std::string> SseData(const std::string& body) {
  std::vector<std::string> out;
  size_t pos = 0;
  while ((pos = body.find("data: ", pos)) != std::string::npos) {
    const size_t end = body.find("\n\n", pos);
    if (end == std::string::npos) break;
    out.push_back(body.substr(pos + 6, end - pos - 6));
    pos = end + 2;
  }
  return out;
}

TEST_F(ServingTest, TwoHundredConcurrentStreamsAllComplete) {
  constexpr int kClients = 200;
  (void)Post("/v1/completions", {{"model", "tiny"}, {"prompt", "warm"}, {"max_tokens", 1}},
             kAlphaKey);
  std::atomic<int> complete{0};
  std::vector<std::string> failures(kClients);
  std::vector<std::thread> threads;
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&, i] {
      json body = {{"model", "tiny"},
                   {"prompt", absl::StrCat("client ", i, " says hello")},
                   {"max_tokens", 8},
                   {"temperature", 0},
                   {"ignore_eos", true},
                   {"stream", true},
                   {"stream_options", {{"include_usage", true}}}};
      CurlResult r = Post("/v1/completions", body, kAlphaKey, 120000);
      const auto data = SseData(r.body);
      if (r.status != 200 || data.size() < 3 || data.back() != "[DONE]") {
        failures[i] =
            absl::StrCat("status ", r.status, " curl ", r.code, " body ", r.body.substr(0, 300));
        return;
      }
      const json usage = json::parse(data[data.size() - 2], nullptr, false);
      if (usage.is_discarded() || usage["usage"]["completion_tokens"] != 8) {
        failures[i] = "bad usage chunk: " + data[data.size() - 2];
        return;
      }
      ++complete;
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kClients; ++i) EXPECT_EQ(failures[i], "") << "client " << i;
  EXPECT_EQ(complete.load(), kClients);
}

TEST_F(ServingTest, FloodPastTheLimitsGets429WhileAdmittedRequestsComplete) {
  constexpr int kClients = 40;
  std::atomic<int> ok{0}, limited{0}, other{0};
  std::atomic<bool> retry_after_seen{true};
  std::vector<std::thread> threads;
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&, i] {
      json body = {{"model", "tiny"},
                   {"prompt", absl::StrCat("flood ", i)},
                   {"max_tokens", 24},
                   {"ignore_eos", true}};
      CurlResult r = Post("/v1/completions", body, kBetaKey);
      if (r.status == 200) {
        const json j = json::parse(r.body, nullptr, false);
        if (!j.is_discarded() && j["usage"]["completion_tokens"] == 24)
          ++ok;
        else
          ++other;
      } else if (r.status == 429) {
        ++limited;
        if (r.headers.find("Retry-After:") == std::string::npos &&
            r.headers.find("retry-after:") == std::string::npos) {
          retry_after_seen = false;
        }
        const json j = json::parse(r.body, nullptr, false);
        if (j.is_discarded() || !j["error"].contains("message")) retry_after_seen = false;
      } else {
        ++other;
      }
    });
  }
  for (auto& t : threads) t.join();
  std::printf("flood of %d: %d served, %d refused with 429\n", kClients, ok.load(), limited.load());
  EXPECT_GE(ok.load(), 4) << "max_concurrent 2 + max_queue 2 are admitted";
  EXPECT_GT(limited.load(), 0) << "a flood past the limits must see 429s";
  EXPECT_EQ(other.load(), 0);
  EXPECT_TRUE(retry_after_seen.load()) << "every 429 carries Retry-After and an error body";
  // After the flood the tenant is served again.
  CurlResult r = Post("/v1/completions",
                      {{"model", "tiny"}, {"prompt", "again"}, {"max_tokens", 2}}, kBetaKey);
  EXPECT_EQ(r.status, 200) << r.body;
}

TEST_F(ServingTest, UnknownKeyAndModelAreRefusedInOpenAiShape) {
  CurlResult r = Post("/v1/completions", {{"model", "tiny"}, {"prompt", "x"}}, "wrong-key");
  EXPECT_EQ(r.status, 401);
  EXPECT_TRUE(json::parse(r.body, nullptr, false)["error"].contains("message")) << r.body;
  r = Post("/v1/completions", {{"model", "nope"}, {"prompt", "x"}}, kAlphaKey);
  EXPECT_EQ(r.status, 404);
  r = Post("/v1/completions", {{"model", "tiny"}, {"prompt", "x"}, {"n", 17}}, kAlphaKey);
  EXPECT_EQ(r.status, 400);
}

// The openai npm package (a real client library) streams a chat completion.
TEST_F(ServingTest, OpenAiNodeClientStreamsAChatCompletion) {
  const std::string script =
      std::string(TOKENMILL_SOURCE_DIR) + "/tests/integration/openai_client_test.sh";
  const std::string prefix = std::string(TOKENMILL_BINARY_DIR) + "/npm-openai";
  const std::string out = (dir_.path() / "openai.json").string();
  const std::string command =
      absl::StrCat("bash ", script, " ", prefix, " http://127.0.0.1:", port_, "/v1 ", kAlphaKey,
                   " tiny > ", out, " 2>", out, ".err");
  const int rc = std::system(command.c_str());
  std::ifstream in(out);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::ifstream err_in(out + ".err");
  std::string err((std::istreambuf_iterator<char>(err_in)), std::istreambuf_iterator<char>());
  ASSERT_EQ(rc, 0) << text << err;
  std::printf("openai client saw: %s", text.c_str());
  const json result = json::parse(text.substr(text.find('{')), nullptr, false);
  ASSERT_FALSE(result.is_discarded()) << text;
  EXPECT_GT(result["chunks"].get<int>(), 2);
  EXPECT_FALSE(result["text"].get<std::string>().empty());
  EXPECT_EQ(result["usage"]["completion_tokens"], 12);
  EXPECT_GT(result["usage"]["prompt_tokens"].get<int>(), 5);
  EXPECT_EQ(result["finish_reason"], "length");
  EXPECT_EQ(result["models"][0], "tiny");
  // +100 on one token: every one of the 6 sampled tokens is that token, so
  // the text is one piece six times over.
  // Two choices streamed side by side: both complete, one prompt, all tokens.
  const json& multi = result["multi"];
  EXPECT_EQ(multi["finish_reasons"], json::array({"length", "length"})) << multi.dump();
  EXPECT_FALSE(multi["texts"][0].get<std::string>().empty()) << multi.dump();
  EXPECT_FALSE(multi["texts"][1].get<std::string>().empty()) << multi.dump();
  EXPECT_EQ(multi["usage"]["completion_tokens"], 10) << multi.dump();
  EXPECT_GT(multi["usage"]["prompt_tokens"].get<int>(), 3) << multi.dump();
  // The echoed prompt comes first, every prompt token (but the BOS) with a
  // logprob.
  const json& echo = result["echo"];
  EXPECT_TRUE(echo["text"].get<std::string>().starts_with("Score this sentence.")) << echo.dump();
  const json& echo_lp = echo["logprobs"];
  ASSERT_EQ(echo_lp["tokens"].size(), echo["usage"]["prompt_tokens"].get<size_t>()) << echo.dump();
  for (const json& lp : echo_lp["token_logprobs"]) EXPECT_TRUE(lp.is_number()) << echo.dump();
  EXPECT_EQ(echo_lp["text_offset"][0], 0);
  // A streamed chat constrained by a JSON schema: the client parsed it.
  const json& structured = result["structured"];
  EXPECT_EQ(structured["finish_reason"], "stop") << structured.dump();
  EXPECT_TRUE(structured["parsed"].is_object()) << structured.dump();
  EXPECT_EQ(structured["parsed"].size(), 2u) << structured.dump();
  EXPECT_TRUE(structured["parsed"]["count"].is_number_integer()) << structured.dump();
  EXPECT_TRUE(structured["parsed"]["colour"] == "red" ||
              structured["parsed"]["colour"] == "green" || structured["parsed"]["colour"] == "blue")
      << structured.dump();
  const std::string biased = result["biased"].value("text", "");
  EXPECT_EQ(result["biased"]["usage"]["completion_tokens"], 6);
  ASSERT_FALSE(biased.empty());
  ASSERT_EQ(biased.size() % 6, 0u) << biased;
  const std::string piece = biased.substr(0, biased.size() / 6);
  EXPECT_EQ(biased, absl::StrCat(piece, piece, piece, piece, piece, piece)) << biased;
}

TEST_F(ServingTest, TokenizeAndDetokenizeRoundTripInBothServersShapes) {
  const std::string text = "Token factories sell tokens by the million.";
  // vLLM's shape, without the tokenizer's BOS: decoding gives the text back.
  CurlResult plain = Post(
      "/tokenize", {{"model", "tiny"}, {"prompt", text}, {"add_special_tokens", false}}, kAlphaKey);
  ASSERT_EQ(plain.status, 200) << plain.body;
  const json tokens = json::parse(plain.body);
  ASSERT_TRUE(tokens["tokens"].is_array()) << plain.body;
  EXPECT_GT(tokens["tokens"].size(), 3u);
  EXPECT_EQ(tokens["count"], tokens["tokens"].size());
  EXPECT_EQ(tokens["max_model_len"], 1024);
  EXPECT_EQ(tokens["model"], "tiny");
  CurlResult back =
      Post("/detokenize", {{"model", "tiny"}, {"tokens", tokens["tokens"]}}, kAlphaKey);
  ASSERT_EQ(back.status, 200) << back.body;
  EXPECT_EQ(json::parse(back.body)["prompt"], text);
  EXPECT_EQ(json::parse(back.body)["content"], text);

  // llama.cpp's shape, no model named: the tenant's first ready model; the
  // same ids as a completion's prompt (usage.prompt_tokens counts them).
  CurlResult llama = Post("/tokenize", {{"content", text}}, kAlphaKey);
  ASSERT_EQ(llama.status, 200) << llama.body;
  CurlResult completion =
      Post("/v1/completions", {{"model", "tiny"}, {"prompt", text}, {"max_tokens", 1}}, kAlphaKey);
  ASSERT_EQ(completion.status, 200) << completion.body;
  EXPECT_EQ(json::parse(llama.body)["count"],
            json::parse(completion.body)["usage"]["prompt_tokens"]);

  // A chat: as many tokens as the same chat's completion prompt.
  const json messages = json::array({{{"role", "user"}, {"content", text}}});
  CurlResult chat = Post("/tokenize", {{"model", "tiny"}, {"messages", messages}}, kAlphaKey);
  ASSERT_EQ(chat.status, 200) << chat.body;
  CurlResult chat_completion =
      Post("/v1/chat/completions", {{"model", "tiny"}, {"messages", messages}, {"max_tokens", 1}},
           kAlphaKey);
  ASSERT_EQ(chat_completion.status, 200) << chat_completion.body;
  EXPECT_EQ(json::parse(chat.body)["count"],
            json::parse(chat_completion.body)["usage"]["prompt_tokens"]);

  // Refusals: no key, a model the key may not use, ids outside the vocabulary.
  EXPECT_EQ(Post("/tokenize", {{"prompt", text}}, "wrong-key").status, 401);
  EXPECT_EQ(Post("/tokenize", {{"model", "nope"}, {"prompt", text}}, kAlphaKey).status, 404);
  CurlResult outside = Post("/detokenize", {{"tokens", {1, 512}}}, kAlphaKey);
  EXPECT_EQ(outside.status, 400) << outside.body;
  EXPECT_NE(outside.body.find("\"param\":\"tokens\""), std::string::npos) << outside.body;
  CurlResult get = CurlRequest(absl::StrCat("http://127.0.0.1:", port_, "/tokenize"), "", "GET", "",
                               {"Authorization: Bearer " + std::string(kAlphaKey)});
  EXPECT_EQ(get.status, 405) << get.body;
}

TEST_F(ServingTest, LogitBiasSteersSamplingAndTokensOutsideTheVocabularyAreRefused) {
  auto complete = [&](const json& bias, uint64_t seed) {
    return Post("/v1/completions",
                {{"model", "tiny"},
                 {"prompt", "Token factories"},
                 {"max_tokens", 5},
                 {"temperature", 1.0},
                 {"seed", seed},
                 {"ignore_eos", true},
                 {"logit_bias", bias}},
                kAlphaKey);
  };
  // Different seeds, same +100 bias: the same token every time.
  CurlResult a = complete({{"300", 100}}, 1);
  CurlResult b = complete({{"300", 100}}, 2);
  ASSERT_EQ(a.status, 200) << a.body;
  ASSERT_EQ(b.status, 200) << b.body;
  const std::string text_a = json::parse(a.body)["choices"][0]["text"];
  const std::string text_b = json::parse(b.body)["choices"][0]["text"];
  EXPECT_EQ(text_a, text_b);
  ASSERT_EQ(text_a.size() % 5, 0u) << text_a;
  // Another token forced: another text.
  CurlResult c = complete({{"301", 100}}, 1);
  ASSERT_EQ(c.status, 200) << c.body;
  EXPECT_NE(json::parse(c.body)["choices"][0]["text"], text_a);
  // The vocabulary has 512 tokens.
  CurlResult outside = complete({{"512", 1}}, 1);
  EXPECT_EQ(outside.status, 400) << outside.body;
  EXPECT_NE(outside.body.find("logit_bias"), std::string::npos) << outside.body;
}

// response_format through the daemon: a random-weight model at temperature 1
// writes what the grammar lets it, so the constraint does all the work; every
// output must parse and validate (ajv, a validator we did not write). Greedy
// requests are masked too (they never take the device argmax), and a schema
// the compiler refuses is a 400 naming response_format.
TEST_F(ServingTest, ResponseFormatOutputsValidateAgainstTheirSchemas) {
  const json schemas =
      json::array({json::parse(R"({"type": "object", "properties": {
          "name": {"type": "string", "minLength": 1, "maxLength": 8},
          "age": {"type": "integer", "minimum": 0, "maximum": 120},
          "tags": {"type": "array", "items": {"enum": ["red", "green", "blue"]}, "maxItems": 3},
          "nick": {"type": ["string", "null"], "maxLength": 4}},
        "required": ["name", "age", "tags"], "additionalProperties": false})"),
                   json::parse(R"({"$defs": {"point": {"type": "object", "properties": {
            "x": {"type": "number", "minimum": -10, "maximum": 10},
            "y": {"type": "number", "minimum": -10, "maximum": 10}},
            "required": ["x", "y"], "additionalProperties": false}},
          "type": "object", "properties": {
            "id": {"type": "string", "pattern": "^[a-f0-9]{4}-[0-9]{2}$"},
            "kind": {"const": "path"},
            "points": {"type": "array", "items": {"$ref": "#/$defs/point"},
                       "minItems": 1, "maxItems": 3},
            "closed": {"type": "boolean"}},
          "required": ["id", "kind", "points", "closed"], "additionalProperties": false})")});
  json cases = json::array();
  for (size_t i = 0; i < schemas.size(); ++i) {
    json outputs = json::array();
    for (uint64_t seed = 1; seed <= 8; ++seed) {
      const bool chat = seed % 2 == 0;
      json body = {
          {"model", "tiny"},
          {"max_tokens", 400},
          {"temperature", seed == 1 ? 0.0 : 1.0},
          {"seed", seed},
          {"response_format",
           {{"type", "json_schema"},
            {"json_schema",
             {{"name", absl::StrCat("s", i)}, {"schema", schemas[i]}, {"strict", true}}}}}};
      if (chat) {
        body["messages"] = json::array({{{"role", "user"}, {"content", "A record, please."}}});
      } else {
        body["prompt"] = "A record:";
      }
      CurlResult r = Post(chat ? "/v1/chat/completions" : "/v1/completions", body, kAlphaKey);
      ASSERT_EQ(r.status, 200) << r.body;
      const json j = json::parse(r.body);
      EXPECT_EQ(j["choices"][0]["finish_reason"], "stop") << r.body;
      outputs.push_back(chat ? j["choices"][0]["message"]["content"] : j["choices"][0]["text"]);
    }
    if (i == 0) {
      // max_tokens exactly the bytes of the shortest value,
      // {"name":"a","age":0,"tags":[]}: steered to fit, it still ends whole.
      for (uint64_t seed = 1; seed <= 3; ++seed) {
        CurlResult r = Post("/v1/completions",
                            {{"model", "tiny"},
                             {"prompt", "A record:"},
                             {"max_tokens", 30},
                             {"temperature", 1.0},
                             {"seed", seed},
                             {"response_format",
                              {{"type", "json_schema"},
                               {"json_schema", {{"name", "tight"}, {"schema", schemas[i]}}}}}},
                            kAlphaKey);
        ASSERT_EQ(r.status, 200) << r.body;
        const json j = json::parse(r.body);
        EXPECT_EQ(j["choices"][0]["finish_reason"], "stop") << r.body;
        outputs.push_back(j["choices"][0]["text"]);
      }
    }
    cases.push_back(
        {{"name", absl::StrCat("schema ", i)}, {"schema", schemas[i]}, {"outputs", outputs}});
  }
  // json_object: any JSON object.
  json objects = json::array();
  for (uint64_t seed = 1; seed <= 4; ++seed) {
    CurlResult r = Post("/v1/completions",
                        {{"model", "tiny"},
                         {"prompt", "An object:"},
                         {"max_tokens", 1000},
                         {"temperature", 1.0},
                         {"seed", seed},
                         {"response_format", {{"type", "json_object"}}}},
                        kAlphaKey);
    ASSERT_EQ(r.status, 200) << r.body;
    const json j = json::parse(r.body);
    // A random model may wander past max_tokens inside an object: only
    // finished values are checked.
    if (j["choices"][0]["finish_reason"] == "stop") objects.push_back(j["choices"][0]["text"]);
  }
  EXPECT_FALSE(objects.empty()) << "no json_object request finished within max_tokens";
  cases.push_back(
      {{"name", "json_object"}, {"schema", {{"type", "object"}}}, {"outputs", objects}});

  const std::filesystem::path file = dir_.path() / "structured_outputs.json";
  std::ofstream(file) << json{{"cases", cases}}.dump(1);
  const std::string command =
      absl::StrCat("bash '", TOKENMILL_SOURCE_DIR, "/tests/grammar/ajv_validate.sh' '",
                   TOKENMILL_BINARY_DIR, "/grammar_ajv/npm' '", file.string(), "'");
  EXPECT_EQ(std::system(command.c_str()), 0) << "ajv rejected outputs; see above and " << file;

  // A schema the compiler refuses (an assertion it cannot enforce).
  const json refused = json::parse(R"({"model": "tiny", "prompt": "x", "response_format": {
      "type": "json_schema",
      "json_schema": {"name": "bad", "schema": {"type": "integer", "multipleOf": 3}}}})");
  CurlResult bad = Post("/v1/completions", refused, kAlphaKey);
  EXPECT_EQ(bad.status, 400) << bad.body;
  EXPECT_NE(bad.body.find("\"param\":\"response_format\""), std::string::npos) << bad.body;
  EXPECT_NE(bad.body.find("multipleOf"), std::string::npos) << bad.body;
}

// One daemon serving a synthesized model of every architecture (Qwen3 with
// heads x head_dim != dim, as its checkpoints have; Mixtral and Qwen3-MoE
// with experts): each loads, reports its
// architecture, and answers a greedy completion whose usage is counted.
TEST(ServingArchitectures, EveryArchitectureServes) {
  struct Served {
    const char* id;
    devices::Architecture arch;
    devices::TensorType type;
  };
  const Served served[] = {
      {"m-llama", devices::Architecture::kLlama, devices::TensorType::kF16},
      {"m-qwen2", devices::Architecture::kQwen2, devices::TensorType::kQ8_0},
      {"m-qwen3", devices::Architecture::kQwen3, devices::TensorType::kQ4_0},
      {"m-gemma3", devices::Architecture::kGemma3, devices::TensorType::kF16},
      {"m-mixtral", devices::Architecture::kLlama, devices::TensorType::kQ8_0},
      {"m-qwen3moe", devices::Architecture::kQwen3Moe, devices::TensorType::kQ8_0}};
  TempDir dir;
  std::string models_toml;
  for (const Served& m : served) {
    model::SynthOptions o = TinyModelShape(m.type);
    o.arch = m.arch;
    if (m.arch == devices::Architecture::kQwen3) o.head_dim = 32;
    if (m.arch == devices::Architecture::kGemma3) {
      // A local layer whose window (4) the prompt and completion outgrow.
      o.head_dim = 32;
      o.tied_embeddings = true;
      o.sliding_window = 4;
      o.sliding_window_pattern = 2;
    }
    if (std::string(m.id) == "m-mixtral" || m.arch == devices::Architecture::kQwen3Moe) {
      // Experts: 8, of which each token uses 2 (Mixtral with a Mistral
      // window of 4 too, which the prompt and completion outgrow).
      o.n_experts = 8;
      o.n_experts_used = 2;
      if (m.arch == devices::Architecture::kQwen3Moe) o.head_dim = 32;
      if (m.arch == devices::Architecture::kLlama) o.sliding_window = 4;
    }
    const std::filesystem::path path = dir.path() / (std::string(m.id) + ".gguf");
    ASSERT_TRUE(model::WriteSynthGguf(o, path).ok());
    models_toml +=
        absl::StrCat("[[model]]\nid = \"", m.id, "\"\npath = \"", path.string(), "\"\n\n");
  }
  DaemonOptions options;
  options.api_toml = "tcp = \"127.0.0.1:0\"\n";
  options.extra_toml =
      absl::StrCat(models_toml, "[[tenant]]\nname = \"alpha\"\napi_keys_sha256 = [\"",
                   tenants::ApiKeySha256(kAlphaKey), "\"]\n");
  DaemonProcess daemon(dir.path(), options);
  ASSERT_TRUE(daemon.Start()) << daemon.Stderr();
  const std::string port = daemon.ApiTcpPort();
  for (const Served& m : served) {
    SCOPED_TRACE(m.id);
    ASSERT_TRUE(daemon.WaitModelReady(m.id)) << daemon.Stderr();
    const json info = json::parse(
        daemon.Control("GET", absl::StrCat("/control/v1/models/", m.id)).body, nullptr, false);
    EXPECT_EQ(info.value("architecture", ""), devices::ArchitectureName(m.arch));
    const json body = {{"model", m.id},
                       {"prompt", "the quick brown fox"},
                       {"max_tokens", 5},
                       {"temperature", 0},
                       {"ignore_eos", true}};
    CurlResult r = CurlRequest(
        absl::StrCat("http://127.0.0.1:", port, "/v1/completions"), "", "POST", body.dump(),
        {"Content-Type: application/json", absl::StrCat("Authorization: Bearer ", kAlphaKey)},
        60000);
    ASSERT_EQ(r.status, 200) << r.body;
    const json result = json::parse(r.body, nullptr, false);
    EXPECT_EQ(result["usage"]["completion_tokens"], 5) << r.body;
    EXPECT_FALSE(result["choices"][0]["text"].get<std::string>().empty()) << r.body;
    const json after = json::parse(
        daemon.Control("GET", absl::StrCat("/control/v1/models/", m.id)).body, nullptr, false);
    EXPECT_EQ(after["stats"]["generated_tokens"], 5) << after.dump();
  }
  EXPECT_EQ(daemon.Stop(), 0) << daemon.Stderr();
}

}  // namespace
}  // namespace tokenmill::testing
