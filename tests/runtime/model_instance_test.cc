// ModelInstance end to end on a tiny model: batching, chunked prefill,
// preemption by recompute, prefix sharing by salt, cancellation, deadlines,
// two instances on one device.
#include "runtime/instance/model_instance.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <thread>

#include "devices/cpu/cpu_executor.h"
#include "gtest/gtest.h"
#include "tests/runtime/instance_test_util.h"

namespace tokenmill::runtime {
namespace {

using testing::Collector;
using testing::Greedy;
using testing::InstanceSetup;
using testing::PromptOf;
using testing::StartInstance;
using testing::TestDevice;

// Greedy tokens by stepping a private executor by hand: the oracle.
std::vector<int32_t> OracleGreedy(const std::vector<int32_t>& prompt, int32_t max_tokens) {
  auto m = model::SynthesizeModel(testing::TinyShape());
  EXPECT_TRUE(m.ok());
  devices::ExecutorOptions eo;
  eo.block_tokens = 16;
  eo.kv_type = devices::KvType::kF32;
  eo.kv_blocks = 64;
  eo.threads = 1;
  eo.max_batch_tokens = 512;
  auto exec = devices::cpu::CreateCpuExecutor(m->spec, eo);
  EXPECT_TRUE(exec.ok());
  std::vector<uint32_t> table(64);
  for (uint32_t i = 0; i < 64; ++i) table[i] = i;
  std::vector<int32_t> tokens = prompt;
  std::vector<int32_t> out;
  int32_t start = 0;
  std::vector<int32_t> step_tokens = prompt;
  for (int32_t i = 0; i < max_tokens; ++i) {
    devices::Batch batch;
    devices::SequenceStep s;
    s.seq_id = 1;
    s.tokens = step_tokens;
    s.start_pos = start;
    const size_t blocks = (static_cast<size_t>(start) + step_tokens.size() + 15) / 16;
    s.block_table = std::span<const uint32_t>(table.data(), blocks);
    s.logits = devices::LogitsWanted::kLast;
    batch.seqs.push_back(s);
    auto o = (*exec)->Forward(batch);
    EXPECT_TRUE(o.ok()) << o.status();
    const auto& l = o->logits;
    const int32_t next = static_cast<int32_t>(std::max_element(l.begin(), l.end()) - l.begin());
    out.push_back(next);
    start += static_cast<int32_t>(step_tokens.size());
    step_tokens = {next};
  }
  return out;
}

TEST(ModelInstanceTest, GreedyMatchesTheExecutorSteppedByHand) {
  TestDevice device(4 << 20);
  auto instance = StartInstance(device, InstanceSetup{});
  ASSERT_NE(instance, nullptr);
  const auto prompt = PromptOf(37, 1);
  Collector c;
  auto handle = instance->Submit(Greedy("t", prompt, 24), c.Sink());
  ASSERT_TRUE(handle.ok()) << handle.status();
  ASSERT_TRUE(c.Wait());
  EXPECT_EQ(c.reason(), FinishReason::kLength);
  EXPECT_EQ(c.tokens(), OracleGreedy(prompt, 24));
  EXPECT_EQ(c.usage().prompt_tokens, 37);
  EXPECT_EQ(c.usage().completion_tokens, 24);
}

// A greedy request whose caller wants no logprobs takes its tokens from the
// executor's argmax (LogitsWanted::kArgmax: on a GPU only ids come back):
// the same tokens, and no logprob computed (0); with logprobs wanted the
// instance samples from the logits and reports them (< 0).
TEST(ModelInstanceTest, GreedyWithoutLogprobsTakesTheExecutorsArgmax) {
  TestDevice device(4 << 20);
  auto instance = StartInstance(device, InstanceSetup{});
  ASSERT_NE(instance, nullptr);
  const auto prompt = PromptOf(29, 4);
  const std::vector<int32_t> want = OracleGreedy(prompt, 16);
  for (const bool wants_logprobs : {false, true}) {
    Collector c;
    GenerationRequest r = Greedy("t", prompt, 16);
    r.request_id = wants_logprobs ? "with" : "without";
    r.wants_logprobs = wants_logprobs;
    ASSERT_TRUE(instance->Submit(std::move(r), c.Sink()).ok());
    ASSERT_TRUE(c.Wait());
    EXPECT_EQ(c.tokens(), want) << "wants_logprobs " << wants_logprobs;
    const std::vector<float> logprobs = c.logprobs();
    ASSERT_EQ(logprobs.size(), want.size());
    for (float lp : logprobs) {
      if (wants_logprobs) {
        EXPECT_LT(lp, 0.0f);
      } else {
        EXPECT_EQ(lp, 0.0f);
      }
    }
  }
}

// Many requests at once (chunked prefill over several steps, decodes batched)
// give each exactly what it gives alone.
TEST(ModelInstanceTest, ConcurrentRequestsEqualTheirSoloRuns) {
  TestDevice device(8 << 20);
  InstanceSetup setup;
  setup.max_seqs = 6;
  setup.max_batch_tokens = 48;
  auto instance = StartInstance(device, setup);
  ASSERT_NE(instance, nullptr);
  constexpr int kRequests = 10;
  std::vector<std::vector<int32_t>> prompts;
  std::vector<std::unique_ptr<Collector>> collectors;
  for (int i = 0; i < kRequests; ++i) {
    prompts.push_back(PromptOf(10 + 7 * i, 100 + i));
    collectors.push_back(std::make_unique<Collector>());
    ASSERT_TRUE(
        instance
            ->Submit(Greedy(i % 2 ? "a" : "b", prompts.back(), 12 + i), collectors.back()->Sink())
            .ok());
  }
  for (int i = 0; i < kRequests; ++i) {
    ASSERT_TRUE(collectors[i]->Wait());
    EXPECT_EQ(collectors[i]->tokens(), OracleGreedy(prompts[i], 12 + i)) << "request " << i;
  }
  EXPECT_GT(instance->Stats().steps, 0u);
}

// A KV arena too small for every sequence at once: sequences are preempted
// and recomputed, and each still makes exactly its unpreempted tokens.
TEST(ModelInstanceTest, PreemptedSequencesFinishWithIdenticalTokens) {
  // f32 KV block of the tiny shape = 8 KiB; 16 KiB pages hold 2 blocks; 10
  // pages = 20 blocks = 320 positions for 6 sequences of 72 positions.
  TestDevice device(10 * (16 << 10), 16 << 10);
  InstanceSetup setup;
  setup.max_seqs = 6;
  setup.max_batch_tokens = 96;
  auto instance = StartInstance(device, setup);
  ASSERT_NE(instance, nullptr);
  std::vector<std::vector<int32_t>> prompts;
  std::vector<std::unique_ptr<Collector>> collectors;
  for (int i = 0; i < 6; ++i) {
    prompts.push_back(PromptOf(24, 300 + i));
    collectors.push_back(std::make_unique<Collector>());
    ASSERT_TRUE(instance
                    ->Submit(Greedy("t" + std::to_string(i % 3), prompts.back(), 48),
                             collectors.back()->Sink())
                    .ok());
  }
  int preempted_requests = 0;
  for (int i = 0; i < 6; ++i) {
    ASSERT_TRUE(collectors[i]->Wait());
    ASSERT_TRUE(collectors[i]->error().ok()) << collectors[i]->error();
    EXPECT_EQ(collectors[i]->tokens(), OracleGreedy(prompts[i], 48)) << "request " << i;
    preempted_requests += collectors[i]->usage().preemptions > 0;
  }
  EXPECT_GT(instance->Stats().preemptions, 0u) << "the arena was meant to force preemption";
  EXPECT_GT(preempted_requests, 0);
}

TEST(ModelInstanceTest, CancelEndsTheRequestAndFreesItsBlocks) {
  TestDevice device(4 << 20);
  auto instance = StartInstance(device, InstanceSetup{});
  ASSERT_NE(instance, nullptr);
  Collector c;
  auto handle = instance->Submit(Greedy("t", PromptOf(40, 5), 400), c.Sink());
  ASSERT_TRUE(handle.ok());
  ASSERT_TRUE(c.WaitForTokens(3));
  (*handle)->Cancel();
  ASSERT_TRUE(c.Wait());
  EXPECT_EQ(c.reason(), FinishReason::kCancelled);
  EXPECT_LT(c.tokens().size(), 400u);
  for (int i = 0; i < 200 && instance->Stats().kv_blocks_used > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(instance->Stats().kv_blocks_used, 0u);
  EXPECT_EQ(instance->Stats().running, 0u);
  EXPECT_TRUE(instance->idle());
}

// Tenants with one salt share a computed prefix; another salt never sees it.
TEST(ModelInstanceTest, PrefixIsSharedWithinACacheGroupOnly) {
  TestDevice device(4 << 20);
  auto instance = StartInstance(device, InstanceSetup{});
  ASSERT_NE(instance, nullptr);
  sched::TenantShare group;
  group.cache_salt = "group:g";
  instance->SetTenantShare("a", group);
  instance->SetTenantShare("b", group);
  sched::TenantShare own;
  own.cache_salt = "tenant:c";
  instance->SetTenantShare("c", own);
  const auto prompt = PromptOf(50, 9);  // 3 full blocks + 2 tokens
  auto run = [&](const std::string& tenant) {
    Collector c;
    EXPECT_TRUE(instance->Submit(Greedy(tenant, prompt, 4), c.Sink()).ok());
    EXPECT_TRUE(c.Wait());
    return std::make_pair(c.usage().cached_tokens, c.tokens());
  };
  const auto [a_cached, a_tokens] = run("a");
  const auto [b_cached, b_tokens] = run("b");
  const auto [c_cached, c_tokens] = run("c");
  EXPECT_EQ(a_cached, 0);
  EXPECT_EQ(b_cached, 48) << "b shares a's cache group";
  EXPECT_EQ(c_cached, 0) << "c is in no group: it must not hit a's blocks";
  EXPECT_EQ(a_tokens, b_tokens);
  EXPECT_EQ(a_tokens, c_tokens);
}

TEST(ModelInstanceTest, DeadlineEndsARequest) {
  TestDevice device(4 << 20);
  auto instance = StartInstance(device, InstanceSetup{});
  ASSERT_NE(instance, nullptr);
  Collector c;
  // A deadline that passed while the request was queued: it ends without
  // running (the tiny model would otherwise finish any length in moments).
  auto request = Greedy("t", PromptOf(20, 3), 450);
  request.deadline = std::chrono::steady_clock::now() - std::chrono::milliseconds(1);
  ASSERT_TRUE(instance->Submit(std::move(request), c.Sink()).ok());
  ASSERT_TRUE(c.Wait());
  EXPECT_EQ(c.reason(), FinishReason::kDeadline);
}

// A deadline that passes while the request streams ends it there, with the
// tokens it had. The instance reads time from an injected clock, and the
// sink holds the engine thread after the third token until the test has
// moved the clock past the deadline: no race with a fast tiny model, no sleep.
TEST(ModelInstanceTest, DeadlineEndsARequestMidStream) {
  TestDevice device(4 << 20);
  absl::Mutex clock_mu;
  std::chrono::steady_clock::time_point now{std::chrono::hours(100000)};
  InstanceSetup setup;
  setup.clock = [&] {
    absl::MutexLock lock(&clock_mu);
    return now;
  };
  auto instance = StartInstance(device, setup);
  ASSERT_NE(instance, nullptr);

  absl::Mutex mu;
  std::vector<int32_t> tokens;
  bool holding = false, released = false, done = false;
  FinishReason reason = FinishReason::kStop;
  GenerationSink sink = [&](GenerationUpdate u) {
    absl::MutexLock lock(&mu);
    for (const auto& t : u.tokens) tokens.push_back(t.id);
    if (u.finished) {
      done = true;
      reason = u.finish_reason;
      return;
    }
    if (tokens.size() >= 3 && !released) {
      holding = true;  // the engine thread waits here for the test
      mu.Await(absl::Condition(&released));
    }
  };
  auto request = Greedy("t", PromptOf(20, 3), 400);
  request.deadline = setup.clock() + std::chrono::seconds(10);
  ASSERT_TRUE(instance->Submit(std::move(request), sink).ok());
  {
    absl::MutexLock lock(&mu);
    ASSERT_TRUE(mu.AwaitWithTimeout(absl::Condition(&holding), absl::Seconds(60)));
  }
  {
    absl::MutexLock lock(&clock_mu);
    now += std::chrono::seconds(11);
  }
  size_t tokens_at_deadline;
  {
    absl::MutexLock lock(&mu);
    tokens_at_deadline = tokens.size();
    released = true;
    ASSERT_TRUE(mu.AwaitWithTimeout(absl::Condition(&done), absl::Seconds(60)));
  }
  EXPECT_EQ(reason, FinishReason::kDeadline);
  EXPECT_GE(tokens_at_deadline, 3u);
  EXPECT_LT(tokens.size(), 400u);
  // At most the step in flight when the clock moved adds tokens.
  EXPECT_LE(tokens.size(), tokens_at_deadline + 1);
}

TEST(ModelInstanceTest, SubmitValidatesAndDrainRefuses) {
  TestDevice device(4 << 20);
  auto instance = StartInstance(device, InstanceSetup{});
  ASSERT_NE(instance, nullptr);
  Collector c;
  EXPECT_EQ(instance->Submit(Greedy("t", {}, 4), c.Sink()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(instance->Submit(Greedy("t", {1, 300}, 4), c.Sink()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(instance->Submit(Greedy("t", PromptOf(500, 1), 20), c.Sink()).status().code(),
            absl::StatusCode::kInvalidArgument);
  Collector running;
  ASSERT_TRUE(instance->Submit(Greedy("t", PromptOf(8, 1), 30), running.Sink()).ok());
  instance->Drain();
  EXPECT_EQ(instance->Submit(Greedy("t", PromptOf(8, 1), 4), c.Sink()).status().code(),
            absl::StatusCode::kUnavailable);
  ASSERT_TRUE(running.Wait()) << "a request admitted before the drain finishes";
  EXPECT_EQ(running.reason(), FinishReason::kLength);
  instance->Stop();
  EXPECT_EQ(instance->Stats().kv_pages, 0u) << "Stop gives every page back";
  EXPECT_EQ(device.arena->Stats().pages_free, device.arena->Stats().pages_total);
}

TEST(ModelInstanceTest, StopCancelsWhatIsLeft) {
  TestDevice device(4 << 20);
  auto instance = StartInstance(device, InstanceSetup{});
  ASSERT_NE(instance, nullptr);
  std::vector<std::unique_ptr<Collector>> cs;
  for (int i = 0; i < 4; ++i) {
    cs.push_back(std::make_unique<Collector>());
    ASSERT_TRUE(instance->Submit(Greedy("t", PromptOf(30, i), 450), cs.back()->Sink()).ok());
  }
  instance->Stop();
  for (auto& c : cs) {
    ASSERT_TRUE(c->done());
    EXPECT_EQ(c->reason(), FinishReason::kCancelled);
  }
}

// Two backlogged tenants with weights 2:1 on one instance: weighted service
// (w_in x prompt + w_out x generated tokens) splits 2:1 within 10%, and the
// normalized difference stays within the VTC bound at every observation.
TEST(ModelInstanceTest, BackloggedTenantsShareByWeightWithinTheVtcBound) {
  TestDevice device(8 << 20);
  // Declared before the instance so they outlive its engine thread even when
  // an assertion returns early.
  std::vector<std::unique_ptr<Collector>> cs;
  InstanceSetup setup;
  setup.max_seqs = 4;
  setup.max_batch_tokens = 64;
  auto instance = StartInstance(device, setup);
  ASSERT_NE(instance, nullptr);
  sched::TenantShare heavy;
  heavy.weight = 2.0;
  heavy.cache_salt = "tenant:a";
  sched::TenantShare light;
  light.weight = 1.0;
  light.cache_salt = "tenant:b";
  instance->SetTenantShare("a", heavy);
  instance->SetTenantShare("b", light);
  constexpr int kPerTenant = 120;
  constexpr int kPrompt = 12;
  constexpr int kOutput = 12;
  for (int i = 0; i < kPerTenant; ++i) {
    for (const char* tenant : {"a", "b"}) {
      cs.push_back(std::make_unique<Collector>());
      ASSERT_TRUE(instance
                      ->Submit(Greedy(tenant, PromptOf(kPrompt, 1000 + cs.size()), kOutput),
                               cs.back()->Sink())
                      .ok());
    }
  }
  // VTC bound (Sheng et al.): 2 x max(w_in x longest prompt, w_out x tokens
  // the running set can still produce) / smallest weight; w_in 1, w_out 2.
  const double bound = 2.0 * std::max(1.0 * kPrompt, 2.0 * setup.max_seqs * kOutput) / 1.0;
  double worst_gap = 0.0;
  double wa = 0.0, wb = 0.0;
  int observations = 0;
  for (int i = 0; i < 60000; ++i) {
    const auto services = instance->TenantServices();
    const sched::TenantService* a = nullptr;
    const sched::TenantService* b = nullptr;
    for (const auto& [name, service] : services) {
      if (name == "a") a = &service;
      if (name == "b") b = &service;
    }
    // Observe while both are backlogged (each has work waiting): from when
    // both first are (submissions reach the engine in batches) until one
    // runs out.
    const bool backlogged = a != nullptr && b != nullptr && a->waiting > 0 && b->waiting > 0;
    if (!backlogged && observations > 0) break;
    if (backlogged) {
      wa = a->weighted_tokens;
      wb = b->weighted_tokens;
      worst_gap = std::max(worst_gap, std::abs(wa / 2.0 - wb / 1.0));
      ++observations;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  ASSERT_GT(observations, 20);
  ASSERT_GT(wb, 100.0);
  std::printf("weighted service a %.0f b %.0f ratio %.3f, worst gap %.1f (bound %.0f)\n", wa, wb,
              wa / wb, worst_gap, bound);
  EXPECT_NEAR(wa / wb, 2.0, 0.2) << "a " << wa << " b " << wb;
  EXPECT_LE(worst_gap, bound);
  for (auto& c : cs) ASSERT_TRUE(c->Wait());
}

// Records what an instance meters, and checks it against what its sinks
// receive: a token is metered before it is sent, a request is metered once.
class RecordingObserver : public UsageObserver {
 public:
  struct PerRequest {
    int64_t prompt = 0, recomputed = 0, cached = 0, generated = 0;
    int finishes = 0;
    FinishReason outcome = FinishReason::kError;
  };
  absl::Status OnStep(const StepUsage& step) override {
    absl::MutexLock lock(&mu_);
    ++steps_;
    EXPECT_EQ(step.model, "tiny");
    EXPECT_EQ(static_cast<size_t>(step.batch_size), step.seqs.size());
    EXPECT_GT(step.device_time.count(), 0);
    for (const SequenceUsage& u : step.seqs) {
      PerRequest& r = requests_[std::string(u.request_id)];
      r.prompt += u.prompt_tokens;
      r.recomputed += u.recomputed_tokens;
      r.cached += u.cached_tokens;
      r.generated += u.generated_tokens;
    }
    return absl::OkStatus();
  }
  void OnFinish(const RequestRecord& record) override {
    absl::MutexLock lock(&mu_);
    PerRequest& r = requests_[record.request_id];
    ++r.finishes;
    r.outcome = record.outcome;
    EXPECT_EQ(record.usage.completion_tokens, r.generated) << record.request_id;
  }
  PerRequest Get(const std::string& id) {
    absl::MutexLock lock(&mu_);
    return requests_[id];
  }

 private:
  absl::Mutex mu_;
  int steps_ = 0;
  std::map<std::string, PerRequest> requests_;
};

TEST(ModelInstanceTest, EveryTokenIsMeteredBeforeItIsSentAndEveryRequestOnce) {
  TestDevice device(10 * (16 << 10), 16 << 10);  // small: forces preemption and recompute
  auto observer = std::make_unique<RecordingObserver>();
  RecordingObserver* seen = observer.get();
  InstanceSetup setup;
  setup.max_seqs = 6;
  setup.max_batch_tokens = 96;
  auto instance = testing::StartInstance(device, setup, std::move(observer));
  ASSERT_NE(instance, nullptr);
  instance->SetTenantShare("a", sched::TenantShare{.cache_salt = "group:g"});
  instance->SetTenantShare("b", sched::TenantShare{.cache_salt = "group:g"});
  struct Client {
    std::string id;
    std::vector<int32_t> prompt;
    absl::Mutex mu;
    int64_t received = 0;
    bool metered_first = true;
    bool finished = false;
  };
  std::vector<std::unique_ptr<Client>> clients;
  for (int i = 0; i < 8; ++i) {
    auto c = std::make_unique<Client>();
    c->id = "req-" + std::to_string(i);
    c->prompt = PromptOf(24 + (i % 2) * 16, i < 4 ? 1 : 2);  // shared prefixes
    clients.push_back(std::move(c));
  }
  for (auto& c : clients) {
    auto request = Greedy(c->id.back() % 2 ? "a" : "b", c->prompt, 40);
    request.request_id = c->id;
    Client* client = c.get();
    ASSERT_TRUE(instance
                    ->Submit(std::move(request),
                             [client, seen](GenerationUpdate u) {
                               absl::MutexLock lock(&client->mu);
                               client->received += static_cast<int64_t>(u.tokens.size());
                               const auto metered = seen->Get(client->id);
                               if (metered.generated < client->received)
                                 client->metered_first = false;
                               if (u.finished && metered.finishes != 1)
                                 client->metered_first = false;
                               client->finished = u.finished;
                             })
                    .ok());
  }
  for (auto& c : clients) {
    absl::MutexLock lock(&c->mu);
    // Waits on the client's own flag (its sink sets it), with a generous
    // deadline instead of polling.
    c->mu.AwaitWithTimeout(absl::Condition(&c->finished), absl::Seconds(20));
    ASSERT_TRUE(c->finished) << c->id;
    EXPECT_TRUE(c->metered_first) << c->id << ": a token or the end was sent before it was metered";
    const auto m = seen->Get(c->id);
    EXPECT_EQ(m.finishes, 1) << c->id;
    EXPECT_EQ(m.generated, 40) << c->id;
    EXPECT_EQ(m.generated, c->received) << c->id;
    EXPECT_EQ(m.prompt + m.cached, static_cast<int64_t>(c->prompt.size()))
        << c->id << ": every prompt token is computed once or served from the cache";
  }
  EXPECT_GT(instance->Stats().preemptions, 0u);
}

// Two models on one device, both backlogged: both make progress, and the
// arbiter splits the device between them.
TEST(ModelInstanceTest, TwoInstancesOnOneDeviceBothProgress) {
  TestDevice device(8 << 20);
  InstanceSetup one;
  one.id = "one";
  InstanceSetup two;
  two.id = "two";
  two.shape = testing::TinyShape(devices::TensorType::kF16, 12);
  auto a = StartInstance(device, one);
  auto b = StartInstance(device, two);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  std::vector<std::unique_ptr<Collector>> ca, cb;
  for (int i = 0; i < 4; ++i) {
    ca.push_back(std::make_unique<Collector>());
    cb.push_back(std::make_unique<Collector>());
    ASSERT_TRUE(a->Submit(Greedy("x", PromptOf(16, i), 120), ca.back()->Sink()).ok());
    ASSERT_TRUE(b->Submit(Greedy("y", PromptOf(16, 50 + i), 120), cb.back()->Sink()).ok());
  }
  // Midway, both must have produced tokens (neither starves the other).
  bool both = false;
  for (int i = 0; i < 4000 && !both; ++i) {
    both = a->Stats().generated_tokens > 20 && b->Stats().generated_tokens > 20;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_TRUE(both);
  for (auto& c : ca) ASSERT_TRUE(c->Wait());
  for (auto& c : cb) ASSERT_TRUE(c->Wait());
  const auto stats = device.arbiter.Stats();
  ASSERT_EQ(stats.size(), 2u);
  EXPECT_GT(stats[0].grants, 10u);
  EXPECT_GT(stats[1].grants, 10u);
}

}  // namespace
}  // namespace tokenmill::runtime
