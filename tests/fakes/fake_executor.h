// FakeExecutor: a devices::Executor that computes nothing. Its "model" is a
// fixed rule, the greedy next token after t is NextToken(t), so tests know
// every token in advance; it keeps the arena page mapping an executor keeps
// and refuses blocks in unmapped slots as the real ones do. A shared
// FakeStepControl lets a test hold each step at its start and let steps go
// one at a time, see which sequences each step ran, charge each step a fixed
// device time, and move a FakeClock by that time as the step "runs".
//
// Header-only. As for every executor, one engine thread calls Forward; the
// control is thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "devices/executor.h"
#include "devices/kv_arena.h"
#include "devices/kv_layout.h"
#include "devices/model_spec.h"
#include "tests/fakes/fake_clock.h"

namespace tokenmill::fakes {

// What a test steers and sees of the steps of FakeExecutors: one executor's,
// or those of several on one device, whose steps the device arbiter orders
// (they then form one sequence here, in grant order). Outlives the executors
// (instances own those); shared with them.
class FakeStepControl {
 public:
  struct Step {
    std::string executor;           // the name the executor was made with
    std::vector<uint64_t> seq_ids;  // its batch's sequences
  };

  // Steps start only as the test allows them (Allow); until Hold, every
  // step runs at once.
  void Hold() {
    absl::MutexLock lock(&mu_);
    held_ = true;
  }
  // Lets `steps` more held steps run.
  void Allow(uint64_t steps) {
    absl::MutexLock lock(&mu_);
    permits_ += steps;
  }
  // Every step from now on runs at once (also what a test does before it
  // stops an instance whose engine thread may be held).
  void ReleaseAll() {
    absl::MutexLock lock(&mu_);
    held_ = false;
  }
  // Until the n-th step (1-based) has started, i.e. the engine thread is in
  // that step's Forward (held there while steps are held). False on timeout.
  bool AwaitStarted(uint64_t n, absl::Duration timeout = absl::Seconds(60)) {
    absl::MutexLock lock(&mu_);
    auto started = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return started_ >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&started), timeout);
  }
  uint64_t started() const {
    absl::MutexLock lock(&mu_);
    return started_;
  }
  // Every step so far, in the order they started.
  std::vector<Step> steps() const {
    absl::MutexLock lock(&mu_);
    return steps_;
  }
  // The next step fails with `status` (after it was allowed to start).
  void FailNextStep(absl::Status status) {
    absl::MutexLock lock(&mu_);
    fail_next_ = std::move(status);
  }

  // Device time each step reports (default 1 ms); when `clock` is set, the
  // step also moves it forward by that much, as if it took that long.
  void SetStepTime(std::chrono::nanoseconds time, FakeClock* clock = nullptr) {
    absl::MutexLock lock(&mu_);
    step_time_ = time;
    clock_ = clock;
  }

 private:
  friend class FakeExecutor;

  // Called by Forward: records the step, waits for its turn, returns how it ends.
  absl::Status Enter(Step step, std::chrono::nanoseconds& step_time) {
    FakeClock* clock = nullptr;
    absl::Status result;
    {
      absl::MutexLock lock(&mu_);
      ++started_;
      steps_.push_back(std::move(step));
      auto may_run = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !held_ || permits_ > 0; };
      mu_.Await(absl::Condition(&may_run));
      if (held_) --permits_;
      step_time = step_time_;
      clock = clock_;
      if (fail_next_) {
        result = *std::move(fail_next_);
        fail_next_.reset();
      }
    }
    if (clock != nullptr) clock->Advance(step_time);
    return result;
  }

  mutable absl::Mutex mu_;
  bool held_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t permits_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t started_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<Step> steps_ ABSL_GUARDED_BY(mu_);
  std::optional<absl::Status> fail_next_ ABSL_GUARDED_BY(mu_);
  std::chrono::nanoseconds step_time_ ABSL_GUARDED_BY(mu_){std::chrono::milliseconds(1)};
  FakeClock* clock_ ABSL_GUARDED_BY(mu_) = nullptr;
};

class FakeExecutor : public devices::Executor {
 public:
  // The greedy next token after `token` (never 0).
  static int32_t NextToken(int32_t token, int32_t vocab) {
    return 1 + static_cast<int32_t>((static_cast<int64_t>(token) * 31 + 7) % (vocab - 1));
  }

  // KV in `arena` pages (which outlives the executor), `kv_blocks` block ids
  // rounded up to whole pages, as the real executors do. `name` tells its
  // steps from other executors' in `control`.
  FakeExecutor(std::string name, devices::ModelSpec spec, devices::KvArena& arena,
               uint32_t kv_blocks, std::shared_ptr<FakeStepControl> control,
               int32_t block_tokens = 16, devices::KvType kv_type = devices::KvType::kF32)
      : name_(std::move(name)),
        spec_(std::move(spec)),
        layout_(devices::KvLayoutFor(spec_, block_tokens, kv_type)),
        control_(std::move(control)) {
    blocks_per_page_ = static_cast<uint32_t>(arena.page_bytes() / layout_.BlockBytes());
    if (blocks_per_page_ == 0) blocks_per_page_ = 1;
    kv_blocks_ = (kv_blocks + blocks_per_page_ - 1) / blocks_per_page_ * blocks_per_page_;
    slots_.assign(kv_blocks_ / blocks_per_page_, std::nullopt);
  }

  absl::StatusOr<devices::StepOutput> Forward(const devices::Batch& batch) override {
    const int32_t vocab = spec_.hp.vocab_size;
    std::vector<uint64_t> ids;
    for (const devices::SequenceStep& s : batch.seqs) {
      ids.push_back(s.seq_id);
      if (s.tokens.empty()) return absl::InvalidArgumentError("a sequence with no tokens");
      const size_t positions = static_cast<size_t>(s.start_pos) + s.tokens.size();
      const size_t needed = (positions + layout_.block_tokens - 1) / layout_.block_tokens;
      if (s.block_table.size() < needed) return absl::InvalidArgumentError("too few blocks");
      for (uint32_t b : s.block_table) {
        if (b >= kv_blocks_ || !slots_[b / blocks_per_page_]) {
          return absl::InvalidArgumentError(absl::StrCat("block ", b, " is not mapped"));
        }
      }
      for (int32_t t : s.tokens) {
        if (t < 0 || t >= vocab) return absl::InvalidArgumentError("token outside the vocabulary");
      }
    }
    devices::StepOutput out;
    out.vocab_size = vocab;
    if (absl::Status entered = control_->Enter({name_, std::move(ids)}, out.device_time);
        !entered.ok()) {
      return entered;
    }
    auto row = [&](int32_t after) {
      const size_t at = out.logits.size();
      out.logits.resize(at + static_cast<size_t>(vocab), 0.0f);
      out.logits[at + static_cast<size_t>(NextToken(after, vocab))] = 1.0f;
    };
    for (const devices::SequenceStep& s : batch.seqs) {
      switch (s.logits) {
        case devices::LogitsWanted::kNone:
          break;
        case devices::LogitsWanted::kLast:
          row(s.tokens.back());
          break;
        case devices::LogitsWanted::kAll:
          for (int32_t t : s.tokens) row(t);
          break;
        case devices::LogitsWanted::kArgmax:
          out.argmax.push_back(NextToken(s.tokens.back(), vocab));
          break;
      }
    }
    return out;
  }

  const devices::KvLayout& kv_layout() const override { return layout_; }
  uint32_t kv_blocks() const override { return kv_blocks_; }
  const devices::ModelSpec& spec() const override { return spec_; }
  uint32_t kv_blocks_per_page() const override { return blocks_per_page_; }

  absl::Status MapKvPage(uint32_t slot, uint32_t arena_page) override {
    if (slot >= slots_.size() || slots_[slot]) {
      return absl::InvalidArgumentError(absl::StrCat("slot ", slot, " is mapped or out of range"));
    }
    for (const auto& s : slots_) {
      if (s == arena_page) return absl::InvalidArgumentError("arena page mapped twice");
    }
    slots_[slot] = arena_page;
    return absl::OkStatus();
  }
  absl::Status UnmapKvPage(uint32_t slot) override {
    if (slot >= slots_.size() || !slots_[slot]) {
      return absl::InvalidArgumentError(absl::StrCat("slot ", slot, " is not mapped"));
    }
    slots_[slot].reset();
    return absl::OkStatus();
  }

 private:
  const std::string name_;
  devices::ModelSpec spec_;
  devices::KvLayout layout_;
  std::shared_ptr<FakeStepControl> control_;
  uint32_t blocks_per_page_ = 1;
  uint32_t kv_blocks_ = 0;
  std::vector<std::optional<uint32_t>> slots_;  // arena page behind each slot
};

}  // namespace tokenmill::fakes
