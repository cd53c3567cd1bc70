// Helpers for the runtime tests: a tiny synthesized model on a host KV arena
// (or a fake executor on a fake arena) with a device arbiter, and a
// collector of a request's streamed updates.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "devices/cpu/cpu_executor.h"
#include "devices/kv_arena.h"
#include "gtest/gtest.h"
#include "runtime/instance/model_instance.h"
#include "runtime/model/synth.h"
#include "runtime/node/device_arbiter.h"
#include "runtime/support/clock.h"
#include "tests/fakes/fake_executor.h"
#include "tests/fakes/fake_kv_arena.h"
#include "tests/support/tiny_model.h"

namespace tokenmill::runtime::testing {

inline model::SynthOptions TinyShape(devices::TensorType type = devices::TensorType::kF32,
                                     uint64_t seed = 11) {
  model::SynthOptions o =
      tokenmill::testing::TinyModelShape(type, /*vocab_size=*/300, /*context_length=*/512);
  o.seed = seed;
  return o;
}

// Everything a request's sink received, and a wait for its end.
class Collector {
 public:
  GenerationSink Sink() {
    return [this](GenerationUpdate u) {
      absl::MutexLock lock(&mu_);
      for (auto& t : u.prompt) prompt_.push_back(std::move(t));
      for (const auto& t : u.tokens) {
        tokens_.push_back(t.id);
        logprobs_.push_back(t.logprob);
      }
      text_ += u.text;
      ++updates_;
      if (u.finished) {
        done_ = true;
        reason_ = u.finish_reason;
        error_ = u.error;
        usage_ = u.usage;
      }
    };
  }
  // True when at least n tokens (or the final update) came within the timeout.
  bool WaitForTokens(size_t n,
                     std::chrono::milliseconds timeout = std::chrono::milliseconds(20000)) {
    absl::MutexLock lock(&mu_);
    auto enough = [this, n]()
                      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return tokens_.size() >= n || done_; };
    return mu_.AwaitWithTimeout(absl::Condition(&enough), absl::FromChrono(timeout)) &&
           tokens_.size() >= n;
  }
  // True when the final update came within the timeout.
  bool Wait(std::chrono::milliseconds timeout = std::chrono::milliseconds(20000)) {
    absl::MutexLock lock(&mu_);
    return mu_.AwaitWithTimeout(absl::Condition(&done_), absl::FromChrono(timeout));
  }
  std::vector<int32_t> tokens() const {
    absl::MutexLock lock(&mu_);
    return tokens_;
  }
  std::vector<float> logprobs() const {
    absl::MutexLock lock(&mu_);
    return logprobs_;
  }
  // Prompt logprobs (GenerationRequest::prompt_logprobs), in prompt order.
  std::vector<GeneratedToken> prompt() const {
    absl::MutexLock lock(&mu_);
    return prompt_;
  }
  std::string text() const {
    absl::MutexLock lock(&mu_);
    return text_;
  }
  FinishReason reason() const {
    absl::MutexLock lock(&mu_);
    return reason_;
  }
  absl::Status error() const {
    absl::MutexLock lock(&mu_);
    return error_;
  }
  GenerationUsage usage() const {
    absl::MutexLock lock(&mu_);
    return usage_;
  }
  bool done() const {
    absl::MutexLock lock(&mu_);
    return done_;
  }

 private:
  mutable absl::Mutex mu_;
  std::vector<int32_t> tokens_;
  std::vector<float> logprobs_;
  std::vector<GeneratedToken> prompt_;
  std::string text_;
  int updates_ = 0;
  bool done_ = false;
  FinishReason reason_ = FinishReason::kError;
  absl::Status error_;
  GenerationUsage usage_;
};

// One device: a KV arena (host memory, or a fake one of `pages` pages that
// holds no memory) and its arbiter.
struct TestDevice {
  explicit TestDevice(size_t arena_bytes, size_t page_bytes = 16 << 10) : arbiter("cpu") {
    auto a = devices::CreateHostKvArena(arena_bytes, page_bytes);
    EXPECT_TRUE(a.ok()) << a.status();
    if (a.ok()) arena = std::move(*a);
  }
  struct FakeArena {
    uint32_t pages;
    size_t page_bytes = 16 << 10;
  };
  explicit TestDevice(FakeArena fake)
      : arena(std::make_unique<fakes::FakeKvArena>(fake.pages, fake.page_bytes)), arbiter("cpu") {}
  devices::KvArenaPtr arena;
  DeviceArbiter arbiter;
  SteadyClock steady;  // the instances' clock unless InstanceSetup names one
};

struct InstanceSetup {
  std::string id = "tiny";
  model::SynthOptions shape = TinyShape();
  int32_t max_seqs = 8;
  int32_t max_batch_tokens = 64;
  int32_t context = 512;
  uint32_t kv_blocks = 256;  // block id space
  int32_t threads = 2;
  const Clock* clock = nullptr;  // null: the device's steady clock
  // Set: the instance runs a FakeExecutor (named `id`) steered by it instead
  // of the CPU executor: the same model spec and tokenizer, tokens by
  // FakeExecutor::NextToken.
  std::shared_ptr<fakes::FakeStepControl> fake_steps;
};

inline std::unique_ptr<ModelInstance> StartInstance(TestDevice& device, const InstanceSetup& s,
                                                    UsageObserverPtr observer = nullptr) {
  absl::StatusOr<model::LoadedModel> m = model::SynthesizeModel(s.shape);
  EXPECT_TRUE(m.ok()) << m.status();
  if (!m.ok()) return nullptr;
  devices::ExecutorOptions eo;
  eo.block_tokens = 16;
  eo.kv_type = devices::KvType::kF32;
  eo.kv_arena = device.arena.get();
  eo.kv_blocks = s.kv_blocks;
  eo.threads = s.threads;
  eo.max_batch_tokens = s.max_batch_tokens;
  absl::StatusOr<devices::ExecutorPtr> exec =
      s.fake_steps ? std::make_unique<fakes::FakeExecutor>(s.id, m->spec, *device.arena,
                                                           s.kv_blocks, s.fake_steps)
                   : devices::cpu::CreateCpuExecutor(m->spec, eo);
  EXPECT_TRUE(exec.ok()) << exec.status();
  if (!exec.ok()) return nullptr;
  InstanceOptions io;
  io.id = s.id;
  io.device = "cpu";
  io.scheduler.max_seqs = s.max_seqs;
  io.scheduler.max_batch_tokens = s.max_batch_tokens;
  io.scheduler.context = s.context;
  auto instance =
      ModelInstance::Start(std::move(io), std::move(*m), std::move(*exec), *device.arena,
                           device.arbiter, s.clock ? *s.clock : device.steady, std::move(observer));
  EXPECT_TRUE(instance.ok()) << instance.status();
  return instance.ok() ? std::move(*instance) : nullptr;
}

// Lets every held step go when the scope ends: declared after an instance
// whose steps a test holds, it runs first, so the instance's Stop (which
// joins the engine thread) never waits on a held step, even when an
// assertion returned early.
class ReleaseAtExit {
 public:
  explicit ReleaseAtExit(fakes::FakeStepControl& steps) : steps_(steps) {}
  ~ReleaseAtExit() { steps_.ReleaseAll(); }
  ReleaseAtExit(const ReleaseAtExit&) = delete;
  ReleaseAtExit& operator=(const ReleaseAtExit&) = delete;

 private:
  fakes::FakeStepControl& steps_;
};

inline GenerationRequest Greedy(std::string tenant, std::vector<int32_t> prompt,
                                int32_t max_tokens) {
  GenerationRequest r;
  r.request_id = tenant + "-req";
  r.tenant = std::move(tenant);
  r.prompt = std::move(prompt);
  r.sampling.temperature = 0.0f;
  r.sampling.max_tokens = max_tokens;
  r.stop_at_eos = false;
  return r;
}

inline std::vector<int32_t> PromptOf(int32_t n, uint32_t seed, int32_t vocab = 300) {
  std::vector<int32_t> p(static_cast<size_t>(n));
  uint32_t x = seed * 2654435761u + 1;
  for (auto& t : p) {
    x = x * 1664525u + 1013904223u;
    t = 1 + static_cast<int32_t>((x >> 8) % static_cast<uint32_t>(vocab - 1));
  }
  return p;
}

}  // namespace tokenmill::runtime::testing
