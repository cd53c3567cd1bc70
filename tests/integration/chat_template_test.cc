// The real tokenmilld renders chats with the template the model file
// carries: a synthesized GGUF with Meta's Llama 3.1 template serves a chat
// whose prompt has exactly the tokens of @huggingface/jinja's rendering of
// it (from tests/chat/fixtures), a model without a template serves the
// plain format and says so, and one whose template does not parse fails to
// load with the reason.
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

}  // namespace
}  // namespace tokenmill::testing
