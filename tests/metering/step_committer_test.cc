// The metering writer thread (durability = "power"): steps of several
// instances are committed in groups by one thread, and an engine thread's
// step returns from OnStep (after which the instance sends its tokens) only
// once the write holding it has committed. The store is the in-memory fake
// with its commit gate: a commit waits there until the test opens it.
#include "metering/step_committer.h"

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "metering/cost_model.h"
#include "metering/metering.h"
#include "tests/fakes/fake_clock.h"
#include "tests/fakes/fake_meter_sink.h"

namespace tokenmill::metering {
namespace {

CostInputs Inputs() {
  CostInputs in;
  in.capex = 100000.0;
  in.devices.push_back({"cuda:0", 1.0, 500.0});
  in.devices.push_back({"cuda:1", 1.0, 500.0});
  return in;
}

// One instance's engine thread: meters one step on a thread of its own and
// notes when OnStep returned (from then on, its tokens may be sent).
struct EngineThread {
  EngineThread(Metering& metering, std::string model, std::string device, std::string id)
      : observer(metering.ObserverFor(model, device)), request_id(std::move(id)) {
    step.model = std::move(model);
    step.device = std::move(device);
    step.at = std::chrono::system_clock::now();
    step.device_time = std::chrono::milliseconds(20);
    step.batch_size = 1;
    runtime::SequenceUsage u;
    u.request_id = request_id;
    u.tenant = "acme";
    u.prompt_tokens = 10;
    u.generated_tokens = 1;
    step.seqs.push_back(u);
  }
  void Start() {
    thread = std::thread([this] {
      status = observer->OnStep(step);
      released.Notify();
    });
  }
  void Join() { thread.join(); }

  runtime::UsageObserverPtr observer;
  std::string request_id;
  runtime::StepUsage step;
  absl::Status status;
  absl::Notification released;
  std::thread thread;
};

class StepCommitterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto model = CostModel::Create(Inputs());
    ASSERT_TRUE(model.ok());
    ledger_ = std::make_unique<CostLedger>(*model, clock_.Now());
    MeteringOptions options;
    options.group_commit = true;
    metering_ =
        std::make_unique<Metering>(sink_, *ledger_, nullptr, clock_, MeteringSources{}, options);
    metering_->SetModelPrices({{"llama", Prices{1.0, 2.0}}, {"qwen", Prices{1.0, 2.0}}});
  }

  fakes::FakeClock clock_;
  fakes::FakeMeterSink sink_;
  std::unique_ptr<CostLedger> ledger_;
  std::unique_ptr<Metering> metering_;
};

// A step's tokens are not released before its commit: with the store holding
// every commit, OnStep does not return; once the commit goes through, it
// returns OK and the step is in the store.
TEST_F(StepCommitterTest, StepIsReleasedOnlyAfterItsCommit) {
  sink_.SetGateOpen(false);
  EngineThread engine(*metering_, "llama", "cuda:0", "req-1");
  engine.Start();
  sink_.AwaitCommitsWaiting(1);  // the writer holds the step at the store
  // The commit cannot finish while the gate is shut, so nothing the engine
  // thread does after OnStep may have happened: no waiting with a timeout.
  EXPECT_FALSE(engine.released.HasBeenNotified()) << "tokens released before their commit";
  EXPECT_EQ(sink_.steps(), 0u);
  sink_.SetGateOpen(true);
  engine.released.WaitForNotification();
  engine.Join();
  EXPECT_TRUE(engine.status.ok()) << engine.status;
  EXPECT_EQ(sink_.steps(), 1u);
  EXPECT_EQ(sink_.UsageTotal().generated_tokens, 1u);
}

// Steps queued while a commit is in progress go out together: one write for
// all instances' steps, each engine thread released after it.
TEST_F(StepCommitterTest, StepsOfSeveralInstancesShareOneCommit) {
  sink_.SetGateOpen(false);
  EngineThread first(*metering_, "llama", "cuda:0", "req-0");
  first.Start();
  sink_.AwaitCommitsWaiting(1);  // the writer is in the store with the first step
  std::vector<std::unique_ptr<EngineThread>> others;
  for (int i = 1; i <= 3; ++i) {
    others.push_back(std::make_unique<EngineThread>(*metering_, i % 2 ? "qwen" : "llama",
                                                    i % 2 ? "cuda:1" : "cuda:0",
                                                    "req-" + std::to_string(i)));
    others.back()->Start();
  }
  // Wait on the committer's own count (polled: it has no hook) until all
  // three are queued; the deadline only bounds a broken build.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (metering_->queued_steps() < 3 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::yield();
  }
  EXPECT_EQ(metering_->queued_steps(), 3u);
  for (const auto& e : others) EXPECT_FALSE(e->released.HasBeenNotified());
  sink_.SetGateOpen(true);
  first.Join();
  for (const auto& e : others) {
    e->Join();
    EXPECT_TRUE(e->status.ok()) << e->status;
  }
  EXPECT_EQ(sink_.steps(), 4u);
  EXPECT_EQ(sink_.commits(), 2u) << "the three queued steps should commit in one write";
  EXPECT_EQ(sink_.UsageTotal().generated_tokens, 4u);
}

// A failed group write fails every step in it: none of them is released as
// committed, and none counts as attributed cost.
TEST_F(StepCommitterTest, AFailedGroupCommitFailsItsSteps) {
  sink_.FailNextWrites(1);
  EngineThread engine(*metering_, "llama", "cuda:0", "req-9");
  engine.Start();
  engine.Join();
  EXPECT_EQ(engine.status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(sink_.steps(), 0u);
  metering_->Tick();
  EXPECT_EQ(ledger_->Totals().at("cuda:0").attributed_nano, 0);
}

// A step the store refuses for its arguments fails alone; the others in its
// group commit.
TEST(StepCommitterDirectTest, ABadStepFailsAloneInItsGroup) {
  fakes::FakeMeterSink sink;
  StepCommitter committer(sink);
  storage::StepRecord good, bad;
  good.requests.push_back({"ok", "acme", "llama", "cpu", "", {}, 0});
  bad.requests.push_back({std::string(300, 'x'), "acme", "llama", "cpu", "", {}, 0});
  EXPECT_TRUE(committer.Commit(good).ok());
  EXPECT_EQ(committer.Commit(bad).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(sink.steps(), 1u);
}

}  // namespace
}  // namespace tokenmill::metering
