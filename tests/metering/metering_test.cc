// Metering on its own, as the daemon builds it (a real MeterStore in a temp
// dir, a CostLedger, prices pushed in as values) and as the engine thread drives it
// (the instance's UsageObserver): revenue exact per request at any price,
// cost attributed only once the store holds the step, and the client's
// request id kept through a crash.
#include "metering/metering.h"

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "metering/cost_model.h"
#include "nlohmann/json.hpp"
#include "runtime/instance/usage_observer.h"
#include "storage/meter_store.h"
#include "tests/fakes/fake_clock.h"
#include "tests/support/store_reads.h"
#include "tests/support/temp_dir.h"

namespace tokenmill::metering {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using ::tokenmill::testing::TempDir;

constexpr char kModel[] = "tiny";
constexpr char kDevice[] = "cpu";

CostInputs Inputs() {
  CostInputs in;
  in.capex = 320000.0;
  in.power_usd_per_kwh = 0.12;
  in.pue = 1.3;
  in.network_usd_per_hour = 0.4;
  in.devices.push_back({kDevice, 1.0, 200.0});
  return in;
}

class MeteringUnitTest : public ::testing::Test {
 protected:
  void SetUp() override { Open(); }

  void Open() {
    storage::MeterStoreOptions o;
    o.dir = dir_.path() / "data";
    auto store = storage::MeterStore::Open(o);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    auto model = CostModel::Create(Inputs());
    ASSERT_TRUE(model.ok()) << model.status();
    ledger_ = std::make_unique<CostLedger>(*model, clock_.Now());
    MeteringSources sources;
    sources.watts = [](const std::string&) { return 200.0; };
    metering_ = std::make_unique<Metering>(*store_, *ledger_, nullptr, clock_, sources);
    metering_->SetTenantPrices(tenant_prices_);
    observer_ = metering_->ObserverFor(kModel, kDevice);
  }

  void Close() {
    observer_.reset();
    metering_.reset();
    ledger_.reset();
    store_.reset();
  }

  // A tenant's prices, pushed as the daemon pushes them on a tenant change.
  void PutTenant(const std::string& name, double in, double out) {
    tenant_prices_[name] = Prices{in, out};
    metering_->SetTenantPrices(tenant_prices_);
  }

  runtime::StepUsage Step(std::vector<runtime::SequenceUsage> seqs) {
    runtime::StepUsage step;
    step.model = kModel;
    step.device = kDevice;
    step.at = std::chrono::system_clock::now();
    step.device_time = milliseconds(7);
    step.batch_size = static_cast<int32_t>(seqs.size());
    step.seqs = std::move(seqs);
    return step;
  }

  runtime::RequestRecord Finished(const std::string& id, const std::string& tenant) {
    runtime::RequestRecord r;
    r.request_id = id;
    r.tenant = tenant;
    r.model = kModel;
    r.device = kDevice;
    r.finished_wall = std::chrono::system_clock::now();
    return r;
  }

  json Ledger(const std::string& id) {
    auto record = ::tokenmill::testing::LedgerRecord(*store_, id);
    EXPECT_TRUE(record.ok() && record->has_value()) << id;
    if (!record.ok() || !record->has_value()) return json();
    return json::parse(**record);
  }

  uint64_t StoredCost() {
    auto total = ::tokenmill::testing::UsageTotal(*store_);
    EXPECT_TRUE(total.ok()) << total.status();
    return total.ok() ? total->cost_nusd : 0;
  }

  int64_t Attributed() {
    metering_->Tick();
    return ledger_->Totals().at(kDevice).attributed_nano;
  }

  TempDir dir_;
  fakes::FakeClock clock_;
  std::map<std::string, Prices> tenant_prices_;
  storage::MeterStorePtr store_;
  std::unique_ptr<CostLedger> ledger_;
  std::unique_ptr<Metering> metering_;
  runtime::UsageObserverPtr observer_;
};

// round((prompt x in + generated x out) / 1e6) in nano-units, computed here
// in integers from the prices' pico-units per token (price x 1e6), half up.
int64_t ExpectedRevenueNano(int64_t prompt, int64_t generated, int64_t in_pico, int64_t out_pico) {
  const int64_t pico = prompt * in_pico + generated * out_pico;
  return (pico + 500) / 1000;
}

// A decode token at 0.0375 per million tokens earns 37.5 nano-units: rounding
// it per step billed 38 each (+1.3%). Every request's revenue must be the
// rounded revenue of its own totals, at prices with more than three decimals.
TEST_F(MeteringUnitTest, RequestRevenueIsRoundedOncePerRequest) {
  PutTenant("frac", 0.0375, 0.123456);
  const int kRequests = 5;
  std::vector<int> generated(kRequests, 0);
  // Step 0: every request's prompt (different lengths); then decodes, with
  // requests finishing at different steps.
  std::vector<runtime::SequenceUsage> prefill;
  std::vector<std::string> ids;
  for (int r = 0; r < kRequests; ++r) ids.push_back("req-" + std::to_string(r));
  for (int r = 0; r < kRequests; ++r) {
    runtime::SequenceUsage u;
    u.request_id = ids[r];
    u.tenant = "frac";
    u.prompt_tokens = 3 + 7 * r;
    u.generated_tokens = 1;
    prefill.push_back(u);
    generated[r] = 1;
  }
  ASSERT_TRUE(observer_->OnStep(Step(prefill)).ok());
  for (int step = 1; step < 40; ++step) {
    std::vector<runtime::SequenceUsage> seqs;
    for (int r = 0; r < kRequests; ++r) {
      if (step >= 10 + 7 * r) continue;  // request r is done
      runtime::SequenceUsage u;
      u.request_id = ids[r];
      u.tenant = "frac";
      u.generated_tokens = 1;
      seqs.push_back(u);
      ++generated[r];
    }
    if (seqs.empty()) break;
    ASSERT_TRUE(observer_->OnStep(Step(seqs)).ok());
  }
  uint64_t revenue_sum = 0;
  for (int r = 0; r < kRequests; ++r) {
    observer_->OnFinish(Finished(ids[r], "frac"));
    const json rec = Ledger(ids[r]);
    ASSERT_EQ(rec["generated_tokens"].get<int64_t>(), generated[r]);
    ASSERT_EQ(rec["prompt_tokens"].get<int64_t>(), 3 + 7 * r);
    EXPECT_EQ(rec["revenue_nusd"].get<int64_t>(),
              ExpectedRevenueNano(3 + 7 * r, generated[r], 37500, 123456))
        << ids[r] << " with " << generated[r] << " generated tokens";
    revenue_sum += rec["revenue_nusd"].get<uint64_t>();
  }
  // The usage counters are the sum of the steps, which is the sum of the
  // requests' exact revenues.
  auto stored = ::tokenmill::testing::UsageTotal(*store_);
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(stored->revenue_nusd, revenue_sum);
}

// A step the store refuses is not sent (OnStep fails) and must not count as
// attributed cost either: attributed cost equals the store's usage cost.
TEST_F(MeteringUnitTest, CostIsAttributedOnlyOnceTheStoreCommits) {
  PutTenant("a", 1.0, 2.0);
  runtime::SequenceUsage ok;
  ok.request_id = "fine";
  ok.tenant = "a";
  ok.prompt_tokens = 12;
  ok.generated_tokens = 1;
  ASSERT_TRUE(observer_->OnStep(Step({ok})).ok());
  EXPECT_GT(Attributed(), 0);
  EXPECT_EQ(static_cast<uint64_t>(Attributed()), StoredCost());

  // A request id the store refuses (over 256 bytes): nothing is written.
  const std::string too_long(300, 'x');
  runtime::SequenceUsage refused = ok;
  refused.request_id = too_long;
  ok.prompt_tokens = 0;
  const absl::Status s = observer_->OnStep(Step({ok, refused}));
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(static_cast<uint64_t>(Attributed()), StoredCost())
      << "cost of a step the store refused was attributed";
  // The refused step is idle cost, not lost: node = attributed + idle.
  clock_.Advance(std::chrono::seconds(2));
  metering_->Tick();
  const auto t = ledger_->Totals().at(kDevice);
  EXPECT_EQ(t.attributed_nano + t.idle_nano, t.node_nano);
}

// The ledger's intervals close at the injected clock's now: ten seconds on
// the fake clock are ten seconds of wall time, all of it idle without steps,
// however long the test itself took.
TEST_F(MeteringUnitTest, IntervalsCloseAtTheInjectedClocksNow) {
  metering_->Tick();
  const DeviceCostTotals before = ledger_->Totals().at(kDevice);
  EXPECT_EQ(before.wall_seconds, 0.0);
  clock_.Advance(std::chrono::seconds(10));
  metering_->Tick();
  const DeviceCostTotals after = ledger_->Totals().at(kDevice);
  EXPECT_EQ(after.wall_seconds, 10.0);
  EXPECT_GT(after.node_nano, 0);
  EXPECT_EQ(after.idle_nano, after.node_nano);
  // Another tick without time passing closes an empty interval.
  metering_->Tick();
  EXPECT_EQ(ledger_->Totals().at(kDevice).wall_seconds, 10.0);
}

// A request a crash interrupts keeps the client's X-Request-Id in its ledger
// record, as a finished one does.
TEST_F(MeteringUnitTest, InterruptedRequestKeepsTheClientRequestId) {
  PutTenant("a", 1.0, 2.0);
  runtime::SequenceUsage u;
  u.request_id = "0190-our-id";
  u.client_request_id = "client-order-17";
  u.tenant = "a";
  u.prompt_tokens = 5;
  u.generated_tokens = 1;
  ASSERT_TRUE(observer_->OnStep(Step({u})).ok());
  u.prompt_tokens = 0;
  ASSERT_TRUE(observer_->OnStep(Step({u})).ok());
  // No OnFinish: the process dies here. The next start recovers it.
  Close();
  Open();
  auto recovered = metering_->RecoverInterrupted();
  ASSERT_TRUE(recovered.ok()) << recovered.status();
  EXPECT_EQ(*recovered, 1u);
  const json rec = Ledger("0190-our-id");
  EXPECT_EQ(rec["outcome"], "interrupted");
  EXPECT_EQ(rec.value("client_request_id", ""), "client-order-17") << rec.dump();
  EXPECT_EQ(rec["generated_tokens"], 2);
  EXPECT_EQ(rec["revenue_nusd"], ExpectedRevenueNano(5, 2, 1000000, 2000000));
}

}  // namespace
}  // namespace tokenmill::metering
