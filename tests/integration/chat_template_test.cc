// The real tokenmilld renders chats with the template the model file
// carries: a synthesized GGUF with Meta's Llama 3.1 template serves a chat
// whose prompt has exactly the tokens of @huggingface/jinja's rendering of
// it (from tests/chat/fixtures), a model without a template serves the
// plain format and says so, and one whose template does not parse fails to
// load with the reason.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/model/model_loader.h"
#include "runtime/model/synth.h"
#include "runtime/tenants/tenant_registry.h"
#include "runtime/tokenizer/tokenizer.h"
#include "tests/integration/daemon_process.h"
#include "tests/support/temp_dir.h"
#include "tests/support/tiny_model.h"

namespace tokenmill::testing {
namespace {

using nlohmann::json;

constexpr char kKey[] = "key-alpha-0123456789";

json Fixtures() {
  std::ifstream in(TOKENMILL_SOURCE_DIR "/tests/chat/fixtures/jinja_fixtures.json");
  std::stringstream text;
  text << in.rdbuf();
  return json::parse(text.str());
}

// Polls the control API until the model reaches `state` (30 s deadline).
json WaitModelState(DaemonProcess& daemon, const std::string& id, const std::string& state) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  json model;
  while (std::chrono::steady_clock::now() < deadline) {
    CurlResult r = daemon.Control("GET", "/control/v1/models/" + id);
    model = json::parse(r.body, nullptr, false);
    if (r.status == 200 && !model.is_discarded() && model.value("state", "") == state) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return model;
}

std::unique_ptr<tokenizer::Tokenizer> TokenizerOf(const std::filesystem::path& path) {
  absl::StatusOr<model::LoadedModel> loaded = model::LoadModel(path);
  EXPECT_TRUE(loaded.ok()) << loaded.status();
  if (!loaded.ok()) return nullptr;
  auto tokenizer = tokenizer::Tokenizer::Create(loaded->tokenizer);
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  return tokenizer.ok() ? std::move(*tokenizer) : nullptr;
}

TEST(ChatTemplateServingTest, TheModelsTemplateRendersTheChat) {
  const json fixtures = Fixtures();
  const json* llama31 = nullptr;
  size_t template_index = 0;
  for (size_t i = 0; i < fixtures["templates"].size(); ++i) {
    if (fixtures["templates"][i]["name"] == "meta-llama/Llama-3.1-8B-Instruct") {
      llama31 = &fixtures["templates"][i];
      template_index = i;
    }
  }
  ASSERT_NE(llama31, nullptr);
  size_t conversation_index = 0;
  for (size_t i = 0; i < fixtures["conversations"].size(); ++i) {
    if (fixtures["conversations"][i]["name"] == "system_multiturn") conversation_index = i;
  }
  const json& conversation = fixtures["conversations"][conversation_index];
  const std::string reference =
      fixtures["expected"][template_index][conversation_index]["output"].get<std::string>();

  TempDir dir;
  model::SynthOptions shape = TinyModelShape();
  shape.chat_template = (*llama31)["chat_template"].get<std::string>();
  const std::filesystem::path model_path = dir.path() / "llama31.gguf";
  ASSERT_TRUE(model::WriteSynthGguf(shape, model_path).ok());
  shape.chat_template = "";
  const std::filesystem::path plain_path = dir.path() / "plain.gguf";
  ASSERT_TRUE(model::WriteSynthGguf(shape, plain_path).ok());
  shape.chat_template = "{% for message in messages %}\n{{ message['content'] }\n{% endfor %}";
  const std::filesystem::path broken_path = dir.path() / "broken.gguf";
  ASSERT_TRUE(model::WriteSynthGguf(shape, broken_path).ok());

  DaemonOptions options;
  options.api_toml = "tcp = \"127.0.0.1:0\"\n";
  options.extra_toml = absl::StrCat(
      "[[model]]\nid = \"llama31\"\npath = \"", model_path.string(), "\"\n\n",
      "[[model]]\nid = \"plain\"\npath = \"", plain_path.string(), "\"\n\n",
      "[[model]]\nid = \"broken\"\npath = \"", broken_path.string(), "\"\n\n",
      "[[tenant]]\nname = \"alpha\"\napi_keys_sha256 = [\"", tenants::ApiKeySha256(kKey), "\"]\n");
  DaemonProcess daemon(dir.path(), options);
  ASSERT_TRUE(daemon.Start()) << daemon.Stderr();
  ASSERT_TRUE(daemon.WaitModelReady("llama31")) << daemon.Stderr();
  ASSERT_TRUE(daemon.WaitModelReady("plain")) << daemon.Stderr();
  const std::string base = absl::StrCat("http://127.0.0.1:", daemon.ApiTcpPort());
  const std::vector<std::string> headers = {"Content-Type: application/json",
                                            "Authorization: Bearer " + std::string(kKey)};

  // The prompt's tokens are the reference text's, control tokens parsed,
  // no BOS added (the template wrote it).
  auto chat = [&](const std::string& model, const json& messages) {
    json body = {{"model", model}, {"messages", messages}, {"max_tokens", 2}};
    CurlResult r = CurlRequest(base + "/v1/chat/completions", "", "POST", body.dump(), headers);
    EXPECT_EQ(r.status, 200) << r.body;
    json response = json::parse(r.body, nullptr, false);
    return response.is_discarded() ? -1 : response["usage"].value("prompt_tokens", -1);
  };
  auto tokenizer = TokenizerOf(model_path);
  ASSERT_NE(tokenizer, nullptr);
  const std::vector<int32_t> expected =
      tokenizer->Encode(reference, {.add_bos = false, .add_eos = false, .parse_special = true});
  EXPECT_EQ(chat("llama31", conversation["variables"]["messages"]),
            static_cast<int>(expected.size()));

  // No template: the plain format, BOS as the vocabulary asks.
  const json messages = {{{"role", "system"}, {"content", "You are terse."}},
                         {{"role", "user"}, {"content", "Hi!"}}};
  const std::vector<int32_t> plain =
      tokenizer->Encode("system: You are terse.\nuser: Hi!\nassistant:",
                        {.add_bos = true, .add_eos = false, .parse_special = false});
  EXPECT_EQ(chat("plain", messages), static_cast<int>(plain.size()));

  // Which format each model's chats get, in the OpenAI model object.
  CurlResult r = CurlRequest(base + "/v1/models/llama31", "", "GET", "", headers);
  EXPECT_EQ(json::parse(r.body, nullptr, false).value("chat_template", ""), "model") << r.body;
  r = CurlRequest(base + "/v1/models/plain", "", "GET", "", headers);
  EXPECT_EQ(json::parse(r.body, nullptr, false).value("chat_template", ""), "plain") << r.body;

  // A template that does not parse: the load fails, with the reason.
  json broken = WaitModelState(daemon, "broken", "failed");
  EXPECT_TRUE(absl::StrContains(broken.value("error", ""), "chat template syntax error"))
      << broken.dump();
  EXPECT_TRUE(absl::StrContains(broken.value("error", ""), "line 2")) << broken.dump();

  EXPECT_EQ(daemon.Stop(), 0) << daemon.Stderr();
  const std::string log = daemon.Stderr();
  EXPECT_TRUE(absl::StrContains(log, "model_loaded model=plain")) << log;
  EXPECT_TRUE(absl::StrContains(log, "chat_template=plain")) << log;
  EXPECT_TRUE(absl::StrContains(log, "chat_template=model")) << log;
}

// Tool calls through the daemon, for each format tokenmill parses, with real
// templates (Qwen 2.5: Hermes; Llama 3.1: JSON; Mistral v0.3: [TOOL_CALLS]) on
// random-weight models: a forced call ("required", or a named function) is
// made by the grammar alone, streamed to the openai npm client name first,
// and sent back as history with its tool result. A model whose template takes
// no tools, an unknown function and a forced call with response_format are
// refused with the field named.
TEST(ToolCallServingTest, ForcedCallsStreamThroughTheOpenAiClientInEachFormat) {
  const json fixtures = Fixtures();
  auto template_of = [&](const std::string& name) {
    for (const json& t : fixtures["templates"]) {
      if (t["name"] == name) return t["chat_template"].get<std::string>();
    }
    ADD_FAILURE() << "no template " << name;
    return std::string();
  };
  TempDir dir;
  model::SynthOptions shape = TinyModelShape();
  shape.context_length = 8192;  // tool descriptions take ~1,200 tokens of this small vocabulary
  std::string models_toml;
  const std::vector<std::pair<std::string, std::string>> models = {
      {"hermes", "Qwen/Qwen2.5-7B-Instruct"},
      {"llama3", "meta-llama/Llama-3.1-8B-Instruct"},
      {"mistral", "mistralai/Mistral-7B-Instruct-v0.3"},
      {"notools", ""}};
  for (const auto& [id, name] : models) {
    if (!name.empty())
      shape.chat_template = template_of(name);
    else
      shape.chat_template.reset();  // the synthetic Llama 3 style template: no tools
    const std::filesystem::path path = dir.path() / (id + ".gguf");
    ASSERT_TRUE(model::WriteSynthGguf(shape, path).ok());
    absl::StrAppend(&models_toml, "[[model]]\nid = \"", id, "\"\npath = \"", path.string(),
                    "\"\n\n");
  }
  DaemonOptions options;
  options.api_toml = "tcp = \"127.0.0.1:0\"\n";
  options.extra_toml =
      absl::StrCat(models_toml, "[[tenant]]\nname = \"alpha\"\napi_keys_sha256 = [\"",
                   tenants::ApiKeySha256(kKey), "\"]\n");
  DaemonProcess daemon(dir.path(), options);
  ASSERT_TRUE(daemon.Start()) << daemon.Stderr();
  for (const auto& [id, name] : models) ASSERT_TRUE(daemon.WaitModelReady(id)) << daemon.Stderr();
  const std::string base = absl::StrCat("http://127.0.0.1:", daemon.ApiTcpPort());

  const std::string script =
      std::string(TOKENMILL_SOURCE_DIR) + "/tests/integration/openai_client_test.sh";
  const std::string prefix = std::string(TOKENMILL_BINARY_DIR) + "/npm-openai";
  const std::string out = (dir.path() / "tools.json").string();
  const std::string command = absl::StrCat(
      "OPENAI_SCRIPT=openai_tools.cjs bash ", script, " ", prefix, " ", base, "/v1 ", kKey,
      " hermes=hermes llama3=llama3 mistral=mistral > ", out, " 2>", out, ".err");
  const int rc = std::system(command.c_str());
  std::ifstream in(out);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::ifstream err_in(out + ".err");
  std::string err((std::istreambuf_iterator<char>(err_in)), std::istreambuf_iterator<char>());
  ASSERT_EQ(rc, 0) << text << err << daemon.Stderr();
  std::printf("openai client saw: %s", text.c_str());
  const json result = json::parse(text.substr(text.find('{')), nullptr, false);
  ASSERT_FALSE(result.is_discarded()) << text;
  for (const std::string model : {"hermes", "llama3", "mistral"}) {
    const json& r = result[model];
    EXPECT_EQ(r["finish_reason"], "tool_calls") << model << ": " << r.dump();
    EXPECT_EQ(r["order"], "ok") << model;
    ASSERT_TRUE(r["calls"].is_array() && !r["calls"].empty()) << model << ": " << r.dump();
    if (model != "mistral") {
      EXPECT_EQ(r["calls"].size(), 1u) << model;
    }
    EXPECT_GT(r["chunks"].get<int>(), 3) << "the call streams in pieces: " << r.dump();
    for (const json& call : r["calls"]) {
      const std::string id = call["id"];
      EXPECT_EQ(id.size(), model == "mistral" ? 9u : 29u) << id;
      const json args = json::parse(call["arguments"].get<std::string>(), nullptr, false);
      ASSERT_TRUE(args.is_object()) << model << ": " << call.dump();
      if (model == "llama3") {
        EXPECT_EQ(call["name"], "get_weather");
      }
      if (call["name"] == "get_weather") {
        EXPECT_TRUE(args["city"] == "Paris" || args["city"] == "Oslo" || args["city"] == "Rome")
            << call.dump();
        ASSERT_TRUE(args["days"].is_number_integer()) << call.dump();
        EXPECT_GE(args["days"].get<int>(), 1);
        EXPECT_LE(args["days"].get<int>(), 7);
      } else {
        EXPECT_EQ(call["name"], "get_time") << call.dump();
        EXPECT_TRUE(args["zone"] == "UTC" || args["zone"] == "CET") << call.dump();
      }
    }
    EXPECT_EQ(r["followup"]["finish_reason"], "length") << model << ": " << r.dump();
  }

  // Not streamed: content null beside the calls.
  const std::vector<std::string> headers = {"Content-Type: application/json",
                                            "Authorization: Bearer " + std::string(kKey)};
  const json tools = json::parse(R"([{"type": "function", "function": {"name": "ping",
      "parameters": {"type": "object", "properties": {"n": {"enum": [1, 2]}}, "required": ["n"]}}}])");
  auto post = [&](const json& body) {
    return CurlRequest(base + "/v1/chat/completions", "", "POST", body.dump(), headers);
  };
  const json question = {{{"role", "user"}, {"content", "Ping?"}}};
  CurlResult r = post({{"model", "hermes"},
                       {"messages", question},
                       {"tools", tools},
                       {"tool_choice", "required"},
                       {"max_tokens", 60}});
  ASSERT_EQ(r.status, 200) << r.body;
  const json response = json::parse(r.body);
  const json& message = response["choices"][0]["message"];
  EXPECT_TRUE(message["content"].is_null()) << r.body;
  ASSERT_EQ(message["tool_calls"].size(), 1u) << r.body;
  EXPECT_EQ(message["tool_calls"][0]["type"], "function");
  EXPECT_EQ(message["tool_calls"][0]["function"]["name"], "ping");
  EXPECT_EQ(response["choices"][0]["finish_reason"], "tool_calls");

  // Refusals name the field.
  auto refused = [&](const json& body, const std::string& param) {
    CurlResult bad = post(body);
    EXPECT_EQ(bad.status, 400) << bad.body;
    EXPECT_NE(bad.body.find("\"param\":\"" + param + "\""), std::string::npos) << bad.body;
  };
  refused({{"model", "notools"}, {"messages", question}, {"tools", tools}}, "tools");
  refused({{"model", "hermes"},
           {"messages", question},
           {"tools", tools},
           {"tool_choice", {{"type", "function"}, {"function", {{"name", "pong"}}}}}},
          "tool_choice");
  refused({{"model", "hermes"},
           {"messages", question},
           {"tools", tools},
           {"tool_choice", "required"},
           {"response_format", {{"type", "json_object"}}}},
          "response_format");
  refused({{"model", "hermes"}, {"messages", question}, {"tool_choice", "required"}},
          "tool_choice");
  EXPECT_EQ(daemon.Stop(), 0) << daemon.Stderr();
}

// A model whose vocabulary has its tool-call marker as a control token
// (Llama 3.1's <|python_tag|>, as in Meta's files) writes the marker as that
// token: the daemon looks its id up and keeps its text for the parser, which
// then reads a call (python_tag followed by anything but JSON is a call of
// "python"). Without tools the same token adds no text, as every control
// token. The logit bias makes the random-weight model emit only the marker.
TEST(ToolCallServingTest, AMarkerControlTokenReachesTheParser) {
  const json fixtures = Fixtures();
  TempDir dir;
  model::SynthOptions shape = TinyModelShape();
  shape.context_length = 8192;
  for (const json& t : fixtures["templates"]) {
    if (t["name"] == "meta-llama/Llama-3.1-8B-Instruct") shape.chat_template = t["chat_template"];
  }
  ASSERT_TRUE(shape.chat_template.has_value());
  shape.extra_control_tokens = {"<|python_tag|>"};
  const std::filesystem::path path = dir.path() / "llama3.gguf";
  ASSERT_TRUE(model::WriteSynthGguf(shape, path).ok());
  std::unique_ptr<tokenizer::Tokenizer> tok = TokenizerOf(path);
  ASSERT_NE(tok, nullptr);
  const std::optional<int32_t> marker = tok->TokenId("<|python_tag|>");
  ASSERT_TRUE(marker.has_value());
  ASSERT_EQ(tok->token_type(*marker), tokenizer::TokenType::kControl);

  DaemonOptions options;
  options.api_toml = "tcp = \"127.0.0.1:0\"\n";
  options.extra_toml = absl::StrCat("[[model]]\nid = \"llama3\"\npath = \"", path.string(),
                                    "\"\n\n[[tenant]]\nname = \"alpha\"\napi_keys_sha256 = [\"",
                                    tenants::ApiKeySha256(kKey), "\"]\n");
  DaemonProcess daemon(dir.path(), options);
  ASSERT_TRUE(daemon.Start()) << daemon.Stderr();
  ASSERT_TRUE(daemon.WaitModelReady("llama3")) << daemon.Stderr();
  const std::string url =
      absl::StrCat("http://127.0.0.1:", daemon.ApiTcpPort(), "/v1/chat/completions");
  const std::vector<std::string> headers = {"Content-Type: application/json",
                                            "Authorization: Bearer " + std::string(kKey)};
  json body = {{"model", "llama3"},
               {"messages", {{{"role", "user"}, {"content", "Run it"}}}},
               {"logit_bias", {{std::to_string(*marker), 100}}},
               {"max_tokens", 3}};
  CurlResult plain = CurlRequest(url, "", "POST", body.dump(), headers);
  ASSERT_EQ(plain.status, 200) << plain.body;
  const json plain_choice = json::parse(plain.body)["choices"][0];
  EXPECT_EQ(plain_choice["message"]["content"], "") << plain.body;
  EXPECT_FALSE(plain_choice["message"].contains("tool_calls")) << plain.body;

  body["tools"] = json::parse(R"([{"type": "function", "function": {"name": "ping",
      "parameters": {"type": "object", "properties": {}}}}])");
  CurlResult r = CurlRequest(url, "", "POST", body.dump(), headers);
  ASSERT_EQ(r.status, 200) << r.body;
  const json choice = json::parse(r.body)["choices"][0];
  EXPECT_EQ(choice["finish_reason"], "length") << r.body;  // the call was cut at max_tokens
  EXPECT_TRUE(choice["message"]["content"].is_null()) << r.body;
  ASSERT_TRUE(choice["message"]["tool_calls"].is_array()) << r.body;
  ASSERT_EQ(choice["message"]["tool_calls"].size(), 1u) << r.body;
  const json& call = choice["message"]["tool_calls"][0]["function"];
  EXPECT_EQ(call["name"], "python") << r.body;
  EXPECT_EQ(call["arguments"], R"({"code":"<|python_tag|><|python_tag|>"})") << r.body;
  EXPECT_EQ(daemon.Stop(), 0) << daemon.Stderr();
}

}  // namespace
}  // namespace tokenmill::testing
