// The engine thread's metering step path allocates nothing per sequence: a
// counting operator new (this binary's own) counts what Metering's OnStep
// allocates on the calling thread, with the store's own allocations left out
// (the sink below pauses counting while it writes), once the step path's
// buffers have grown to the batch. Before prices were values and buffers
// were reused, every sequence of every step allocated its request id, tenant
// and client id strings and looked its tenant up in the registry.
#include <chrono>
#include <cstddef>
#include <cstdlib>
#include <map>
#include <new>
#include <span>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "metering/cost_model.h"
#include "metering/metering.h"
#include "prometheus/registry.h"
#include "telemetry/runtime_metrics.h"
#include "tests/fakes/fake_meter_sink.h"

namespace {

thread_local bool counting = false;
thread_local size_t allocations = 0;

void* Allocate(std::size_t n) {
  if (counting) ++allocations;
  void* p = std::malloc(n == 0 ? 1 : n);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}

}  // namespace

void* operator new(std::size_t n) { return Allocate(n); }
void* operator new[](std::size_t n) { return Allocate(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }

namespace tokenmill::metering {
namespace {

// Counts nothing of what the store does: the claim is about Metering.
class UncountedSink : public storage::MeterSink {
 public:
  absl::Status RecordStep(const storage::StepRecord& step) override {
    Pause p;
    return fake_.RecordStep(step);
  }
  void RecordSteps(std::span<const storage::StepRecord* const> steps,
                   std::span<absl::Status> results) override {
    Pause p;
    fake_.RecordSteps(steps, results);
  }
  absl::StatusOr<bool> FinishRequest(std::string_view id, std::string_view record,
                                     const std::vector<storage::UsageDelta>& usage) override {
    Pause p;
    return fake_.FinishRequest(id, record, usage);
  }
  absl::StatusOr<size_t> RecoverInterrupted(
      const std::function<std::string(const storage::InterruptedRequest&)>& make) override {
    return fake_.RecoverInterrupted(make);
  }
  absl::Status WriteHealth() const override { return fake_.WriteHealth(); }
  fakes::FakeMeterSink fake_;

 private:
  struct Pause {
    bool was = counting;
    Pause() { counting = false; }
    ~Pause() { counting = was; }
  };
};

CostInputs Inputs() {
  CostInputs in;
  in.capex = 320000.0;
  in.power_usd_per_kwh = 0.12;
  in.network_usd_per_hour = 0.4;
  in.devices.push_back({"cuda:0", 1.0, 700.0});
  return in;
}

class MeteringAllocTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    auto model = CostModel::Create(Inputs());
    ASSERT_TRUE(model.ok());
    ledger_ = std::make_unique<CostLedger>(*model, clock_.Now());
    if (GetParam()) {
      metrics_ = std::make_unique<telemetry::RuntimeMetrics>(
          registry_, [] { return telemetry::RuntimeSnapshot{}; });
    }
    MeteringSources sources;
    sources.watts = [](const std::string&) { return std::optional<double>(700.0); };
    metering_ = std::make_unique<Metering>(sink_, *ledger_, metrics_.get(), clock_, sources);
    metering_->SetModelPrices({{"llama", Prices{0.1, 0.3}}});
    std::map<std::string, Prices> tenants;
    for (int t = 0; t < 4; ++t) tenants["tenant-" + std::to_string(t)] = Prices{0.0375, 0.123456};
    metering_->SetTenantPrices(tenants);
    observer_ = metering_->ObserverFor("llama", "cuda:0");
    for (int i = 0; i < kSeqs; ++i) {
      ids_.push_back("0190a2b3-c4d5-7e6f-8091-" + std::to_string(100000000000 + i));
      client_ids_.push_back("client-order-number-" + std::to_string(1000000 + i));
      tenants_.push_back("tenant-" + std::to_string(i % 4));
    }
  }

  // A step of the first n sequences: a prompt on a request's first step, one
  // generated token on every step.
  runtime::StepUsage Step(int n, bool prefill) {
    runtime::StepUsage step;
    step.model = "llama";
    step.device = "cuda:0";
    step.at = std::chrono::system_clock::now();
    step.device_time = std::chrono::milliseconds(30);
    step.batch_size = n;
    for (int i = 0; i < n; ++i) {
      runtime::SequenceUsage u;
      u.request_id = ids_[i];
      u.client_request_id = client_ids_[i];
      u.tenant = tenants_[i];
      u.prompt_tokens = prefill ? 100 + i : 0;
      u.generated_tokens = 1;
      step.seqs.push_back(u);
    }
    return step;
  }

  static constexpr int kSeqs = 256;
  runtime::SteadyClock clock_;
  UncountedSink sink_;
  prometheus::Registry registry_;
  std::unique_ptr<telemetry::RuntimeMetrics> metrics_;
  std::unique_ptr<CostLedger> ledger_;
  std::unique_ptr<Metering> metering_;
  runtime::UsageObserverPtr observer_;
  std::vector<std::string> ids_, client_ids_, tenants_;
};

TEST_P(MeteringAllocTest, DecodeStepsAllocateNothing) {
  // Warm-up: every request's first step (its entry), at the largest batch.
  ASSERT_TRUE(observer_->OnStep(Step(kSeqs, true)).ok());
  ASSERT_TRUE(observer_->OnStep(Step(kSeqs, false)).ok());
  // Decode steps of changing sizes (requests leave and come back to the
  // batch), built before counting: the engine builds its StepUsage itself.
  std::vector<runtime::StepUsage> steps;
  for (int s = 0; s < 60; ++s) steps.push_back(Step(s % 3 == 0 ? kSeqs : 17 + 7 * s % 200, false));
  allocations = 0;
  counting = true;
  for (const runtime::StepUsage& step : steps) {
    if (!observer_->OnStep(step).ok()) break;
  }
  counting = false;
  EXPECT_EQ(allocations, 0u) << "allocations in " << steps.size() << " metered steps of up to "
                             << kSeqs << " sequences";
  EXPECT_EQ(sink_.fake_.steps(), steps.size() + 2);
}

INSTANTIATE_TEST_SUITE_P(WithAndWithoutMetrics, MeteringAllocTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "WithMetrics" : "WithoutMetrics";
                         });

}  // namespace
}  // namespace tokenmill::metering
