// ModelInstance end to end on a tiny model: batching, chunked prefill,
// preemption by recompute, prefix sharing by salt, cancellation, deadlines,
// two instances on one device.
#include "runtime/instance/model_instance.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "devices/cpu/cpu_executor.h"
#include "gtest/gtest.h"
#include "tests/fakes/fake_clock.h"
#include "tests/fakes/fake_executor.h"
#include "tests/runtime/instance_test_util.h"

namespace tokenmill::runtime {
namespace {

using testing::Collector;
using testing::Greedy;
using testing::InstanceSetup;
using testing::PromptOf;
using testing::ReleaseAtExit;
using testing::StartInstance;
using testing::TestDevice;

// A private executor over the instances' model, stepped by hand: the oracle.
// Blocks 0..63 are its own.
struct Oracle {
  Oracle() {
    absl::StatusOr<model::LoadedModel> m = model::SynthesizeModel(testing::TinyShape());
    EXPECT_TRUE(m.ok()) << m.status();
    if (!m.ok()) return;
    model = std::make_unique<model::LoadedModel>(std::move(*m));
    devices::ExecutorOptions eo;
    eo.block_tokens = 16;
    eo.kv_type = devices::KvType::kF32;
    eo.kv_blocks = 64;
    eo.threads = 1;
    eo.max_batch_tokens = 512;
    absl::StatusOr<devices::ExecutorPtr> e = devices::cpu::CreateCpuExecutor(model->spec, eo);
    EXPECT_TRUE(e.ok()) << e.status();
    if (e.ok()) exec = std::move(*e);
    for (uint32_t i = 0; i < 64; ++i) table.push_back(i);
  }
  std::unique_ptr<model::LoadedModel> model;
  devices::ExecutorPtr exec;
  std::vector<uint32_t> table;
};

// Greedy tokens of the oracle.
std::vector<int32_t> OracleGreedy(const std::vector<int32_t>& prompt, int32_t max_tokens) {
  Oracle oracle;
  if (oracle.exec == nullptr) return {};
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
    s.block_table = std::span<const uint32_t>(oracle.table.data(), blocks);
    s.logits = devices::LogitsWanted::kLast;
    batch.seqs.push_back(s);
    auto o = oracle.exec->Forward(batch);
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

// Prompt logprobs (echo with logprobs): every prompt token after the first
// gets the log-softmax of the logits the executor computed at the position
// before it, with its top alternatives, over a prompt prefilled in several
// chunks, even when the prompt's blocks are in the prefix cache (a cached
// token has no logits: the request computes its prompt in full). The tokens
// it generates are the greedy ones.
TEST(ModelInstanceTest, PromptLogprobsAreTheModelsOwnForEveryPromptToken) {
  TestDevice device(8 << 20);
  InstanceSetup setup;
  setup.max_batch_tokens = 16;  // a 45-token prompt in 3 chunks
  auto instance = StartInstance(device, setup);
  ASSERT_NE(instance, nullptr);
  const auto prompt = PromptOf(45, 6);

  // The oracle: one step over the whole prompt with every row's logits.
  Oracle oracle;
  ASSERT_NE(oracle.exec, nullptr);
  devices::Batch batch;
  devices::SequenceStep step;
  step.seq_id = 1;
  step.tokens = prompt;
  step.block_table = std::span<const uint32_t>(oracle.table.data(), 3);
  step.logits = devices::LogitsWanted::kAll;
  batch.seqs.push_back(step);
  auto all = oracle.exec->Forward(batch);
  ASSERT_TRUE(all.ok()) << all.status();
  const size_t vocab = static_cast<size_t>(all->vocab_size);

  for (const bool cached_first : {false, true}) {
    if (cached_first) {
      // The same prompt without prompt logprobs: its full blocks go to the cache.
      Collector plain;
      ASSERT_TRUE(instance->Submit(Greedy("t", prompt, 1), plain.Sink()).ok());
      ASSERT_TRUE(plain.Wait());
    }
    Collector c;
    GenerationRequest r = Greedy("t", prompt, 4);
    r.request_id = cached_first ? "after-cache" : "first";
    r.prompt_logprobs = 3;
    ASSERT_TRUE(instance->Submit(std::move(r), c.Sink()).ok());
    ASSERT_TRUE(c.Wait());
    EXPECT_EQ(c.usage().cached_tokens, 0);
    EXPECT_EQ(c.tokens(), OracleGreedy(prompt, 4));
    const std::vector<GeneratedToken> got = c.prompt();
    ASSERT_EQ(got.size(), prompt.size()) << "cached_first " << cached_first;
    EXPECT_EQ(got[0].id, prompt[0]);
    EXPECT_TRUE(std::isnan(got[0].logprob));
    for (size_t p = 1; p < prompt.size(); ++p) {
      const std::span<const float> row(all->logits.data() + (p - 1) * vocab, vocab);
      const float max_logit = *std::max_element(row.begin(), row.end());
      double sum = 0.0;
      for (float x : row) sum += std::exp(static_cast<double>(x - max_logit));
      const double log_z = max_logit + std::log(sum);
      EXPECT_EQ(got[p].id, prompt[p]);
      EXPECT_NEAR(got[p].logprob, row[prompt[p]] - log_z, 1e-4) << p;
      ASSERT_EQ(got[p].top.size(), 3u);
      const int32_t best =
          static_cast<int32_t>(std::max_element(row.begin(), row.end()) - row.begin());
      EXPECT_EQ(got[p].top[0].token, best) << p;
      EXPECT_NEAR(got[p].top[0].logprob, max_logit - log_z, 1e-4) << p;
      EXPECT_GE(got[p].top[0].logprob, got[p].top[1].logprob);
      EXPECT_GE(got[p].top[1].logprob, got[p].top[2].logprob);
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

// Steps are held and let go one at a time (fake executor): the cancel
// arrives while the fourth step runs, so exactly its token is still sent.
TEST(ModelInstanceTest, CancelEndsTheRequestAndFreesItsBlocks) {
  TestDevice device(TestDevice::FakeArena{64});
  Collector c, next;  // outlive the instance, whose Stop may still call their sinks
  InstanceSetup setup;
  setup.fake_steps = std::make_shared<fakes::FakeStepControl>();
  fakes::FakeStepControl& steps = *setup.fake_steps;
  steps.Hold();
  auto instance = StartInstance(device, setup);
  ASSERT_NE(instance, nullptr);
  ReleaseAtExit release(steps);
  auto handle = instance->Submit(Greedy("t", PromptOf(40, 5), 400), c.Sink());
  ASSERT_TRUE(handle.ok());
  steps.Allow(3);
  ASSERT_TRUE(steps.AwaitStarted(4));  // three tokens sent, the fourth step held
  EXPECT_EQ(c.tokens().size(), 3u);
  (*handle)->Cancel();
  steps.Allow(1);
  ASSERT_TRUE(c.Wait());
  EXPECT_EQ(c.reason(), FinishReason::kCancelled);
  EXPECT_EQ(c.tokens().size(), 4u) << "the step under way when the cancel came still sends";
  // The engine published its stats when it went idle after the cancel; a
  // new request's first step (held) comes after that and publishes nothing
  // before it ends, so the stats read now are those of the idle instance.
  ASSERT_TRUE(instance->Submit(Greedy("t", PromptOf(8, 6), 2), next.Sink()).ok());
  ASSERT_TRUE(steps.AwaitStarted(5));
  EXPECT_EQ(instance->Stats().kv_blocks_used, 0u);
  EXPECT_EQ(instance->Stats().running, 0u);
  EXPECT_EQ(instance->Stats().waiting, 0u);
  EXPECT_EQ(steps.steps().size(), 5u) << "no step ran after the cancel";
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
  TestDevice device(TestDevice::FakeArena{64});
  fakes::FakeClock clock;
  InstanceSetup setup;
  setup.clock = &clock;
  setup.fake_steps = std::make_shared<fakes::FakeStepControl>();
  Collector c;  // outlives the instance
  auto instance = StartInstance(device, setup);
  ASSERT_NE(instance, nullptr);
  // A deadline that passed while the request was queued: it ends without
  // running a step.
  auto request = Greedy("t", PromptOf(20, 3), 450);
  request.deadline = clock.Now() - std::chrono::milliseconds(1);
  ASSERT_TRUE(instance->Submit(std::move(request), c.Sink()).ok());
  ASSERT_TRUE(c.Wait());
  EXPECT_EQ(c.reason(), FinishReason::kDeadline);
  EXPECT_TRUE(c.tokens().empty());
  EXPECT_EQ(setup.fake_steps->started(), 0u);
}

// A deadline that passes while the request streams ends it there, with the
// tokens it had. The instance reads time from a fake clock that each step
// moves by its device time (10 ms), and steps are let go one at a time: the
// deadline, 45 ms after submission, passes during the fifth step, so the
// request ends with exactly five tokens, whatever the machine's speed.
TEST(ModelInstanceTest, DeadlineEndsARequestMidStream) {
  TestDevice device(TestDevice::FakeArena{64});
  fakes::FakeClock clock;
  InstanceSetup setup;
  setup.clock = &clock;
  setup.fake_steps = std::make_shared<fakes::FakeStepControl>();
  fakes::FakeStepControl& steps = *setup.fake_steps;
  steps.SetStepTime(std::chrono::milliseconds(10), &clock);
  steps.Hold();
  Collector c;  // outlives the instance
  auto instance = StartInstance(device, setup);
  ASSERT_NE(instance, nullptr);
  ReleaseAtExit release(steps);

  const auto prompt = PromptOf(20, 3);
  auto request = Greedy("t", prompt, 400);
  request.deadline = clock.Now() + std::chrono::milliseconds(45);
  ASSERT_TRUE(instance->Submit(std::move(request), c.Sink()).ok());
  // Four steps: 40 ms, before the deadline; each sends its token.
  steps.Allow(4);
  ASSERT_TRUE(steps.AwaitStarted(5));
  EXPECT_EQ(c.tokens().size(), 4u);
  EXPECT_FALSE(c.done());
  // The fifth step ends at 50 ms: its token is sent, then the deadline ends
  // the request before a sixth step.
  steps.Allow(1);
  ASSERT_TRUE(c.Wait());
  EXPECT_EQ(c.reason(), FinishReason::kDeadline);
  std::vector<int32_t> want;
  int32_t last = prompt.back();
  for (int i = 0; i < 5; ++i) want.push_back(last = fakes::FakeExecutor::NextToken(last, 300));
  EXPECT_EQ(c.tokens(), want);
  EXPECT_EQ(steps.started(), 5u);
  EXPECT_EQ(c.usage().completion_tokens, 5);
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

// A request keeps the text of the control tokens it names (tool-call
// markers) and of no other.
TEST(ModelInstanceTest, OnlyTheNamedControlTokensAddText) {
  TestDevice device(4 << 20);
  auto instance = StartInstance(device, InstanceSetup{});
  ASSERT_NE(instance, nullptr);
  const tokenizer::Tokenizer& tok = instance->tokenizer();
  ASSERT_TRUE(tok.bos_id().has_value());
  const int32_t bos = *tok.bos_id();
  ASSERT_FALSE(tok.IsEos(bos));
  auto run = [&](std::vector<int32_t> kept) {
    GenerationRequest r = Greedy("t", PromptOf(8, 0), 3);
    r.sampling.logit_bias = {{bos, 100.0f}};
    r.kept_control_tokens = std::move(kept);
    Collector c;
    EXPECT_TRUE(instance->Submit(std::move(r), c.Sink()).ok());
    EXPECT_TRUE(c.Wait());
    EXPECT_EQ(c.tokens(), std::vector<int32_t>(3, bos));
    return c.text();
  };
  EXPECT_EQ(run({}), "");
  EXPECT_EQ(run({bos + 1}), "");
  const std::string name(tok.TokenText(bos));
  ASSERT_FALSE(name.empty());
  EXPECT_EQ(run({bos}), name + name + name);
}

// Two backlogged tenants with weights 2:1 on one instance: weighted service
// (w_in x prompt + w_out x generated tokens) splits 2:1 within 10%, and the
// normalized difference stays within the VTC bound at every observation.
// The fake executor lets the steps go one at a time, and the test reads the
// tenants' service between every two steps, so every step is observed.
TEST(ModelInstanceTest, BackloggedTenantsShareByWeightWithinTheVtcBound) {
  TestDevice device(TestDevice::FakeArena{256});
  // Declared before the instance so they outlive its engine thread even when
  // an assertion returns early.
  std::vector<std::unique_ptr<Collector>> cs;
  InstanceSetup setup;
  setup.max_seqs = 4;
  setup.max_batch_tokens = 64;
  setup.fake_steps = std::make_shared<fakes::FakeStepControl>();
  fakes::FakeStepControl& steps = *setup.fake_steps;
  steps.Hold();
  auto instance = StartInstance(device, setup);
  ASSERT_NE(instance, nullptr);
  ReleaseAtExit release(steps);
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
  // The engine publishes the tenants' service after each step, before it
  // starts the next: while step n + 1 is held, what it shows is step n's.
  steps.Allow(1);
  for (uint64_t n = 1;; ++n) {
    ASSERT_TRUE(steps.AwaitStarted(n + 1)) << "step " << n + 1 << " never came";
    const auto services = instance->TenantServices();
    const sched::TenantService* a = nullptr;
    const sched::TenantService* b = nullptr;
    for (const auto& [name, service] : services) {
      if (name == "a") a = &service;
      if (name == "b") b = &service;
    }
    // Observe while both are backlogged (each has work waiting), until one
    // runs out.
    const bool backlogged = a != nullptr && b != nullptr && a->waiting > 0 && b->waiting > 0;
    if (!backlogged && observations > 0) break;
    if (backlogged) {
      wa = a->weighted_tokens;
      wb = b->weighted_tokens;
      worst_gap = std::max(worst_gap, std::abs(wa / 2.0 - wb / 1.0));
      ++observations;
    }
    steps.Allow(1);
  }
  steps.ReleaseAll();
  ASSERT_GT(observations, 100);
  ASSERT_GT(wb, 100.0);
  std::printf(
      "%d steps observed: weighted service a %.0f b %.0f ratio %.3f, worst gap %.1f "
      "(bound %.0f)\n",
      observations, wa, wb, wa / wb, worst_gap, bound);
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

// Two models on one device, both backlogged: the arbiter grants the device
// to each in turn. Both instances run fake executors that share one step
// control, so their steps form one sequence in grant order. The first step
// is held until the other instance waits for the device; from then on both
// always hold or wait, and as each step charges the same device time,
// grants must alternate strictly until one runs out of work, whatever the
// threads' timing.
TEST(ModelInstanceTest, TwoInstancesOnOneDeviceAlternate) {
  TestDevice device(TestDevice::FakeArena{256});
  auto steps = std::make_shared<fakes::FakeStepControl>();
  steps->Hold();
  std::vector<std::unique_ptr<Collector>> ca, cb;
  InstanceSetup one;
  one.id = "one";
  one.fake_steps = steps;
  InstanceSetup two;
  two.id = "two";
  two.fake_steps = steps;
  auto a = StartInstance(device, one);
  auto b = StartInstance(device, two);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  ReleaseAtExit release(*steps);
  constexpr int kTokens = 60;
  for (int i = 0; i < 4; ++i) {
    ca.push_back(std::make_unique<Collector>());
    cb.push_back(std::make_unique<Collector>());
    ASSERT_TRUE(a->Submit(Greedy("x", PromptOf(16, i), kTokens), ca.back()->Sink()).ok());
    ASSERT_TRUE(b->Submit(Greedy("y", PromptOf(16, 50 + i), kTokens), cb.back()->Sink()).ok());
  }
  ASSERT_TRUE(steps->AwaitStarted(1));  // one instance holds the device, its step held
  // Until the other blocks in the arbiter. The arbiter has no notification
  // for it: its state is polled (a condition, not a time window); the
  // deadline only turns a hang into a failure.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  auto other_waits = [&] {
    for (const auto& s : device.arbiter.Stats()) {
      if (s.waiting) return true;
    }
    return false;
  };
  while (!other_waits()) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "the second instance never waited";
    std::this_thread::yield();
  }
  steps->ReleaseAll();
  for (auto& c : ca) ASSERT_TRUE(c->Wait());
  for (auto& c : cb) ASSERT_TRUE(c->Wait());
  std::string order;
  for (const auto& step : steps->steps()) order += step.executor == "one" ? 'a' : 'b';
  ASSERT_NE(order.find('a'), std::string::npos) << order;
  ASSERT_NE(order.find('b'), std::string::npos) << order;
  const size_t end = std::min(order.rfind('a'), order.rfind('b'));
  for (size_t i = 0; i < end; ++i) {
    ASSERT_NE(order[i], order[i + 1]) << "grants " << i << " and " << i + 1 << " of " << order;
  }
  for (auto& c : ca) EXPECT_EQ(c->tokens().size(), static_cast<size_t>(kTokens));
  for (auto& c : cb) EXPECT_EQ(c->tokens().size(), static_cast<size_t>(kTokens));
  uint64_t grants = 0;
  for (const auto& s : device.arbiter.Stats()) grants += s.grants;
  EXPECT_EQ(grants, order.size());
}

}  // namespace
}  // namespace tokenmill::runtime
