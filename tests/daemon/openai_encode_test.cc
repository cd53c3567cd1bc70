// Prompt preparation off the HTTP loop thread: a real HTTP server, a real
// InstanceManager with a tiny synthesized model, the real EncodePool, and an
// encode observer that holds encodings at their start (a gate), so that each
// test knows, without sleeping, that a prompt is being encoded.
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "daemon/encode_pool.h"
#include "daemon/openai_api.h"
#include "gtest/gtest.h"
#include "runtime/model/synth.h"
#include "tests/fakes/fake_device.h"
#include "tests/support/http_client.h"
#include "tests/support/temp_dir.h"
#include "tests/support/tiny_model.h"

namespace tokenmill::daemon {
namespace {

using nlohmann::json;
using tokenmill::testing::CurlRequest;
using tokenmill::testing::CurlResult;
using namespace std::chrono_literals;

constexpr char kAlphaKey[] = "sk-test-alpha";
constexpr char kBetaKey[] = "sk-test-beta";
constexpr char kGammaKey[] = "sk-test-gamma";
constexpr char kSlowKey[] = "sk-test-slow";
constexpr char kNarrowKey[] = "sk-test-narrow";
constexpr auto kDeadline = 30s;

// Holds every encoding at its start while closed; records the threads.
class EncodeGate {
 public:
  void Enter() {
    std::unique_lock lock(mu_);
    threads_.push_back(std::this_thread::get_id());
    changed_.notify_all();
    changed_.wait(lock, [this] { return open_; });
  }
  void Open() {
    std::lock_guard lock(mu_);
    open_ = true;
    changed_.notify_all();
  }
  void Close() {
    std::lock_guard lock(mu_);
    open_ = false;
  }
  // True once `n` encodings have started.
  bool WaitEntered(size_t n) {
    std::unique_lock lock(mu_);
    return changed_.wait_for(lock, kDeadline, [&] { return threads_.size() >= n; });
  }
  std::vector<std::thread::id> threads() {
    std::lock_guard lock(mu_);
    return threads_;
  }

 private:
  std::mutex mu_;
  std::condition_variable changed_;
  bool open_ = true;
  std::vector<std::thread::id> threads_;
};

// Polls `done` until true or the deadline (a condition, not a sleep).
template <typename F>
bool Eventually(F done) {
  const auto deadline = std::chrono::steady_clock::now() + kDeadline;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(2ms);
  }
  return true;
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

devices::DeviceInfo CpuInfo() {
  devices::DeviceInfo info;
  info.id = "cpu";
  info.kind = devices::DeviceKind::kCpu;
  info.memory_total_bytes = uint64_t{8} << 30;
  return info;
}

class OpenAiEncodeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const model::SynthOptions shape = tokenmill::testing::TinyModelShape(
        devices::TensorType::kF32, /*vocab_size=*/300, /*context_length=*/4096);
    model_path_ = dir_.path() / "tiny.gguf";
    ASSERT_TRUE(model::WriteSynthGguf(shape, model_path_).ok());
    for (auto [name, key] :
         {std::pair{"alpha", kAlphaKey}, std::pair{"beta", kBetaKey}, std::pair{"gamma", kGammaKey},
          std::pair{"slow", kSlowKey}, std::pair{"narrow", kNarrowKey}}) {
      tenants::TenantPolicy policy;
      policy.name = name;
      policy.api_keys_sha256 = {tenants::ApiKeySha256(key)};
      if (policy.name == "slow") policy.rate_limit_tokens_per_s = 1;  // a 2-token bucket
      if (policy.name == "narrow") {                                  // 3 sequences in flight
        policy.max_concurrent = 1;
        policy.max_queue = 2;
      }
      ASSERT_TRUE(registry_.Put(policy).ok());
    }
    runtime::InstanceManagerOptions options;
    options.default_max_seqs = 4;
    options.default_max_batch_tokens = 64;
    options.cpu_threads = 1;
    options.kv_memory = [](const devices::Device&) {
      return devices::KvArenaBudget{.bytes = uint64_t{8} << 20};
    };
    auto manager = runtime::InstanceManager::Create({&cpu_}, registry_, clock_, options);
    ASSERT_TRUE(manager.ok()) << manager.status();
    instances_ = std::move(*manager);
    LoadModel();
  }

  void LoadModel() {
    runtime::ModelLoadSpec spec;
    spec.id = "tiny";
    spec.path = model_path_;
    spec.context = 1024;
    ASSERT_TRUE(instances_->Load(spec).ok());
    auto ready = instances_->WaitLoaded("tiny", kDeadline);
    ASSERT_TRUE(ready.ok()) << ready.status();
    ASSERT_EQ(ready->state, runtime::InstanceState::kReady) << ready->error;
  }

  // The data path as the node wires it, with these pool options.
  void Start(EncodePool::Options pool_options) {
    pool_ = std::make_unique<EncodePool>(pool_options);
    api_ = std::make_unique<OpenAiApi>(registry_, *instances_, *pool_,
                                       [this](std::function<void()> fn) { server_->Post(fn); });
    api_->set_encode_observer([this] { gate_.Enter(); });
    socket_ = (dir_.path() / "api.sock").string();
    http::HttpServerOptions server_options;
    server_options.listeners.push_back({http::Listener::Kind::kUnix, socket_, 0600});
    server_ = std::make_unique<http::HttpServer>(
        server_options, [this](http::HttpRequest request, http::ResponseWriterPtr response) {
          if (api_->Handle(request, response)) return;
          SendError(*response, absl::NotFoundError("no endpoint"));
        });
    ASSERT_TRUE(server_->Start().ok());
  }

  void TearDown() override {
    gate_.Open();
    if (pool_) pool_->Stop();
    server_.reset();
    if (instances_) instances_->Stop();
  }

  CurlResult Post(const std::string& key, const std::string& prompt = "Hello there",
                  int max_tokens = 2) {
    json body = {
        {"model", "tiny"}, {"prompt", prompt}, {"max_tokens", max_tokens}, {"ignore_eos", true}};
    return CurlRequest("http://localhost/v1/completions", socket_, "POST", body.dump(),
                       {"Content-Type: application/json", "Authorization: Bearer " + key},
                       /*timeout_ms=*/30000);
  }
  // A completion with n choices.
  CurlResult PostChoices(const std::string& key, int n) {
    json body = {{"model", "tiny"},
                 {"prompt", "Hello there"},
                 {"max_tokens", 2},
                 {"ignore_eos", true},
                 {"n", n}};
    return CurlRequest("http://localhost/v1/completions", socket_, "POST", body.dump(),
                       {"Content-Type: application/json", "Authorization: Bearer " + key},
                       /*timeout_ms=*/30000);
  }
  std::future<CurlResult> PostAsync(const std::string& key,
                                    const std::string& prompt = "Hello there") {
    return std::async(std::launch::async, [this, key, prompt] { return Post(key, prompt); });
  }

  std::thread::id LoopThread() {
    std::promise<std::thread::id> id;
    server_->Post([&id] { id.set_value(std::this_thread::get_id()); });
    auto future = id.get_future();
    EXPECT_EQ(future.wait_for(kDeadline), std::future_status::ready);
    return future.get();
  }

  tokenmill::testing::TempDir dir_;
  std::filesystem::path model_path_;
  runtime::SteadyClock clock_;
  tenants::TenantRegistry registry_;
  fakes::FakeDevice cpu_{CpuInfo()};
  std::unique_ptr<runtime::InstanceManager> instances_;
  EncodeGate gate_;
  std::unique_ptr<EncodePool> pool_;
  std::unique_ptr<OpenAiApi> api_;
  std::string socket_;
  std::unique_ptr<http::HttpServer> server_;
};

TEST_F(OpenAiEncodeTest, LoopAnswersWhileAPromptIsEncodedOnAPoolThread) {
  Start({.threads = 1});
  const std::thread::id loop = LoopThread();
  gate_.Close();
  std::future<CurlResult> completion = PostAsync(kAlphaKey);
  ASSERT_TRUE(gate_.WaitEntered(1));
  // The loop serves another client while that prompt is held in encoding.
  CurlResult models = CurlRequest("http://localhost/v1/models", socket_, "GET", "",
                                  {std::string("Authorization: Bearer ") + kBetaKey}, 10000);
  EXPECT_EQ(models.status, 200) << "the loop thread is blocked by an encoding";
  EXPECT_NE(gate_.threads()[0], loop);
  EXPECT_EQ(api_->preparing(), 1u);
  gate_.Open();
  CurlResult done = completion.get();
  EXPECT_EQ(done.status, 200) << done.body;
  EXPECT_EQ(json::parse(done.body)["usage"]["completion_tokens"], 2);
  EXPECT_TRUE(Eventually([&] { return api_->preparing() == 0; }));
}

TEST_F(OpenAiEncodeTest, FullQueueAnswers429ForTheTenantAnd503ForAll) {
  Start({.threads = 1, .max_queued = 2, .max_queued_per_key = 1});
  gate_.Close();
  std::future<CurlResult> running = PostAsync(kAlphaKey);
  ASSERT_TRUE(gate_.WaitEntered(1));
  std::future<CurlResult> waiting = PostAsync(kAlphaKey);
  ASSERT_TRUE(Eventually([&] { return pool_->stats().queued == 1; }));

  // alpha has its one waiting place: 429 for alpha alone.
  CurlResult tenant_full = Post(kAlphaKey);
  EXPECT_EQ(tenant_full.status, 429) << tenant_full.body;
  EXPECT_EQ(HeaderValue(tenant_full, "Retry-After"), "1");
  EXPECT_EQ(json::parse(tenant_full.body)["error"]["code"], "rate_limit_exceeded");

  std::future<CurlResult> other_tenant = PostAsync(kBetaKey);
  ASSERT_TRUE(Eventually([&] { return pool_->stats().queued == 2; }));
  // Every waiting place is taken: 503 for anyone.
  CurlResult all_full = Post(kGammaKey);
  EXPECT_EQ(all_full.status, 503) << all_full.body;
  EXPECT_EQ(HeaderValue(all_full, "Retry-After"), "1");

  gate_.Open();
  EXPECT_EQ(running.get().status, 200);
  EXPECT_EQ(waiting.get().status, 200);
  EXPECT_EQ(other_tenant.get().status, 200);
  // The refused requests took no place: the queue serves again.
  EXPECT_EQ(Post(kGammaKey).status, 200);
  EXPECT_TRUE(Eventually([&] { return api_->preparing() == 0; }));
}

TEST_F(OpenAiEncodeTest, ClientGoneWhileEncodingLeavesNothingBehind) {
  Start({.threads = 1});
  gate_.Close();
  auto client = tokenmill::testing::RawClient::ConnectUnix(socket_);
  ASSERT_NE(client, nullptr);
  const std::string body = json{
      {"model", "tiny"},
      {"prompt", "go on"},
      {"max_tokens", 1000},
      {"ignore_eos", true}}.dump();
  ASSERT_TRUE(client->Send("POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                           std::string(kAlphaKey) + "\r\nContent-Type: application/json\r\n" +
                           "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body));
  ASSERT_TRUE(gate_.WaitEntered(1));
  // The request holds an in-flight place of its tenant while encoded.
  EXPECT_EQ(registry_.InFlight("alpha"), 1u);
  client->Close();
  ASSERT_TRUE(Eventually([&] { return server_->connection_count() == 0; }));
  gate_.Open();

  // Its result is dropped on the loop: its place is freed, the node serves on.
  EXPECT_TRUE(Eventually([&] { return api_->preparing() == 0; }));
  EXPECT_TRUE(Eventually([&] { return registry_.InFlight("alpha") == 0; }));
  CurlResult next = Post(kAlphaKey);
  EXPECT_EQ(next.status, 200) << next.body;
  EXPECT_TRUE(Eventually([&] { return registry_.InFlight("alpha") == 0; }));
}

TEST_F(OpenAiEncodeTest, ModelReloadedWhileEncodingIsNotServedByTheNewInstance) {
  Start({.threads = 1});
  gate_.Close();
  std::future<CurlResult> completion = PostAsync(kAlphaKey);
  ASSERT_TRUE(gate_.WaitEntered(1));
  // The encoding holds the old instance (its tokenizer) alive; the manager
  // drains and drops it, and a new one takes the id.
  ASSERT_TRUE(instances_->Unload("tiny").ok());
  ASSERT_TRUE(Eventually([&] { return !instances_->Get("tiny").ok(); }));
  LoadModel();
  gate_.Open();
  CurlResult r = completion.get();
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_EQ(json::parse(r.body)["error"]["code"], "model_not_ready");
  EXPECT_EQ(Post(kAlphaKey).status, 200);
}

TEST_F(OpenAiEncodeTest, TenantInDebtIsRefusedBeforeItsPromptIsEncoded) {
  Start({.threads = 1});
  CurlResult first = Post(kSlowKey, "a longer prompt of several tokens");
  ASSERT_EQ(first.status, 200) << first.body;
  ASSERT_EQ(gate_.threads().size(), 1u);
  CurlResult second = Post(kSlowKey, "a longer prompt of several tokens");
  EXPECT_EQ(second.status, 429) << second.body;
  EXPECT_GE(std::stoi(HeaderValue(second, "Retry-After")), 2);
  EXPECT_EQ(gate_.threads().size(), 1u) << "a refused prompt was encoded";
  EXPECT_EQ(registry_.InFlight("slow"), 0u);
}

TEST_F(OpenAiEncodeTest, PromptsEncodedTogetherAreAdmittedOneAfterTheOther) {
  // Both pass the early check (the bucket is full), are encoded at once,
  // and are admitted on the loop with their token counts: the first takes
  // the 2-token bucket into debt, so the second is refused.
  Start({.threads = 2});
  gate_.Close();
  std::future<CurlResult> a = PostAsync(kSlowKey, "a longer prompt of several tokens");
  std::future<CurlResult> b = PostAsync(kSlowKey, "another prompt of several tokens");
  ASSERT_TRUE(gate_.WaitEntered(2));
  EXPECT_EQ(registry_.InFlight("slow"), 2u);
  gate_.Open();
  std::vector<long> statuses = {a.get().status, b.get().status};
  std::sort(statuses.begin(), statuses.end());
  EXPECT_EQ(statuses, (std::vector<long>{200, 429}));
  EXPECT_TRUE(Eventually([&] { return registry_.InFlight("slow") == 0; }));
}

// Each choice of a request holds an in-flight place of its tenant, from
// before encoding to the end: `n` cannot multiply a tenant's sequences past
// max_concurrent + max_queue (3 for "narrow").
TEST_F(OpenAiEncodeTest, EveryChoiceHoldsAnInFlightPlace) {
  Start({.threads = 2});  // one held at the gate, one to refuse the second
  // More choices than the tenant may ever have in flight: 400, not encoded.
  CurlResult too_many = PostChoices(kNarrowKey, 4);
  EXPECT_EQ(too_many.status, 400) << too_many.body;
  EXPECT_EQ(json::parse(too_many.body)["error"]["param"], "n");
  EXPECT_TRUE(gate_.threads().empty());

  gate_.Close();
  std::future<CurlResult> two =
      std::async(std::launch::async, [this] { return PostChoices(kNarrowKey, 2); });
  ASSERT_TRUE(gate_.WaitEntered(1));
  EXPECT_EQ(registry_.InFlight("narrow"), 2u);
  // 2 + 2 > 3: refused for now, before encoding.
  CurlResult over = PostChoices(kNarrowKey, 2);
  EXPECT_EQ(over.status, 429) << over.body;
  EXPECT_EQ(json::parse(over.body)["error"]["code"], "rate_limit_exceeded");
  EXPECT_EQ(registry_.InFlight("narrow"), 2u);
  gate_.Open();
  CurlResult done = two.get();
  ASSERT_EQ(done.status, 200) << done.body;
  EXPECT_EQ(json::parse(done.body)["choices"].size(), 2u);
  EXPECT_TRUE(Eventually([&] { return registry_.InFlight("narrow") == 0; }));
  EXPECT_EQ(PostChoices(kNarrowKey, 3).status, 200);
}

TEST_F(OpenAiEncodeTest, StoppingThePoolAnswersWaitingRequests503) {
  Start({.threads = 1});
  gate_.Close();
  std::future<CurlResult> running = PostAsync(kAlphaKey);
  ASSERT_TRUE(gate_.WaitEntered(1));
  std::future<CurlResult> waiting = PostAsync(kBetaKey);
  ASSERT_TRUE(Eventually([&] { return pool_->stats().queued == 1; }));
  // Stop() answers the waiting request at once, then waits for the running one.
  std::thread stopper([this] { pool_->Stop(); });
  ASSERT_EQ(waiting.wait_for(kDeadline), std::future_status::ready);
  CurlResult refused = waiting.get();
  EXPECT_EQ(refused.status, 503) << refused.body;
  gate_.Open();
  stopper.join();
  EXPECT_EQ(running.get().status, 200);
  EXPECT_EQ(Post(kAlphaKey).status, 503);  // a stopped pool takes nothing
  EXPECT_TRUE(Eventually([&] { return api_->preparing() == 0; }));
}

}  // namespace
}  // namespace tokenmill::daemon
