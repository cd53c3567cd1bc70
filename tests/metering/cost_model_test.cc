// CostModel rates against hand-computed values, the exactness of the step
// split and of revenue, and the CostLedger identity node = attributed + idle
// over simulated runs with fake time.
#include "metering/cost_model.h"

#include <chrono>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tokenmill::metering {
namespace {

// Prices a step and commits it, as Metering does once the store took it.
int64_t Record(CostLedger& ledger, const std::string& device, std::chrono::nanoseconds t,
               double joules) {
  const PricedStep step = ledger.PriceStep(device, t, joules);
  ledger.CommitStep(step);
  return step.cost_nano;
}

using std::chrono::milliseconds;
using std::chrono::nanoseconds;
using std::chrono::seconds;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

using TimePoint = std::chrono::steady_clock::time_point;
const TimePoint kStart = TimePoint{} + std::chrono::hours(1);

// An 8-GPU-class node: 320k over 4 years, 0.12/kWh at PUE 1.3, 0.40/h
// network, 2.10/h debt service, 0.50/h other; two devices weighted 3:1.
CostInputs RealisticInputs() {
  CostInputs in;
  in.capex = 320000.0;
  in.depreciation_years = 4.0;
  in.power_usd_per_kwh = 0.12;
  in.pue = 1.3;
  in.network_usd_per_hour = 0.40;
  in.debt_service_usd_per_hour = 2.10;
  in.other_usd_per_hour = 0.50;
  in.prefill_token_weight = 0.25;
  in.devices.push_back({.id = "cuda:0", .cost_weight = 3.0, .watts = 700.0});
  in.devices.push_back({.id = "cuda:1", .cost_weight = 1.0, .watts = std::nullopt});
  return in;
}

CostModelPtr MakeModel(CostInputs in) {
  absl::StatusOr<CostModelPtr> model = CostModel::Create(std::move(in));
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? *model : nullptr;
}

// Hand-computed: 4 x 365.25 x 86400 = 126230400 s of depreciation.
constexpr double kCapexPerS = 320000.0 / 126230400.0;  // 0.0025350470...
constexpr double kFixedPerS = kCapexPerS + (0.40 + 2.10 + 0.50) / 3600.0;

TEST(CostModelTest, RatesFromARealisticConfig) {
  const CostModelPtr model = MakeModel(RealisticInputs());
  ASSERT_NE(model, nullptr);
  const NodeCostRates& r = model->rates();
  EXPECT_NEAR(r.capex_per_s, 0.0025350470251223, 1e-15);
  EXPECT_NEAR(r.network_per_s, 0.40 / 3600, 1e-18);
  EXPECT_NEAR(r.debt_per_s, 2.10 / 3600, 1e-18);
  EXPECT_NEAR(r.other_per_s, 0.50 / 3600, 1e-18);
  EXPECT_NEAR(r.fixed_per_s(), 0.0033683803584556, 1e-15);
  EXPECT_NEAR(r.energy_per_joule, 0.12 * 1.3 / 3.6e6, 1e-22);  // 4.333e-8 per joule
  EXPECT_NEAR(model->DeviceFixedPerSecond("cuda:0"), 0.75 * kFixedPerS, 1e-15);
  EXPECT_NEAR(model->DeviceFixedPerSecond("cuda:1"), 0.25 * kFixedPerS, 1e-15);
  EXPECT_EQ(model->DeviceFixedPerSecond("cuda:7"), 0.0);
}

TEST(CostModelTest, StepCostIsDeviceTimePlusEnergyRoundedOnce) {
  const CostModelPtr model = MakeModel(RealisticInputs());
  ASSERT_NE(model, nullptr);
  // 10 ms on cuda:0 at 700 W: 0.01 x 0.0025262853 + 7 x 4.3333e-8 = 25566.19 nano.
  EXPECT_EQ(model->StepCostNano("cuda:0", milliseconds(10), 7.0), 25566);
  // Energy alone on a device without a fixed share; 1 kWh at PUE 1.3.
  EXPECT_EQ(model->StepCostNano("unknown", nanoseconds(0), 3.6e6), 156000000);
  EXPECT_EQ(model->StepCostNano("cuda:1", nanoseconds(0), 0.0), 0);
  // Nonsense inputs count as zero rather than making a negative cost.
  EXPECT_EQ(model->StepCostNano("cuda:1", -seconds(5), -1.0), 0);
  EXPECT_EQ(model->StepCostNano("cuda:1", nanoseconds(0), std::nan("")), 0);
}

TEST(CostModelTest, AllZeroWeightsShareTheFixedCostEqually) {
  CostInputs in = RealisticInputs();
  in.devices[0].cost_weight = 0;
  in.devices[1].cost_weight = 0;
  const CostModelPtr model = MakeModel(in);
  ASSERT_NE(model, nullptr);
  EXPECT_NEAR(model->DeviceFixedPerSecond("cuda:0"), 0.5 * kFixedPerS, 1e-15);
  EXPECT_NEAR(model->DeviceFixedPerSecond("cuda:1"), 0.5 * kFixedPerS, 1e-15);
}

TEST(CostModelTest, InvalidInputsAreRefusedNamingTheField) {
  struct Case {
    void (*mutate)(CostInputs&);
    std::string field;
  };
  const Case cases[] = {
      {[](CostInputs& in) { in.depreciation_years = 0; }, "cost.depreciation_years"},
      {[](CostInputs& in) { in.depreciation_years = std::nan(""); }, "cost.depreciation_years"},
      {[](CostInputs& in) { in.pue = 0.9; }, "cost.pue"},
      {[](CostInputs& in) { in.capex = -1; }, "cost.capex"},
      {[](CostInputs& in) { in.power_usd_per_kwh = -0.1; }, "cost.power_usd_per_kwh"},
      {[](CostInputs& in) { in.network_usd_per_hour = -1; }, "cost.network_usd_per_hour"},
      {[](CostInputs& in) { in.debt_service_usd_per_hour = -1; }, "cost.debt_service_usd_per_hour"},
      {[](CostInputs& in) { in.other_usd_per_hour = INFINITY; }, "cost.other_usd_per_hour"},
      {[](CostInputs& in) { in.prefill_token_weight = 0; }, "cost.prefill_token_weight"},
      {[](CostInputs& in) { in.devices.clear(); }, "devices"},
      {[](CostInputs& in) { in.devices[1].cost_weight = -1; }, "device[cuda:1].cost_weight"},
      {[](CostInputs& in) { in.devices[0].watts = 0.0; }, "device[cuda:0].watts"},
      {[](CostInputs& in) { in.devices[1].id = "cuda:0"; }, "device[cuda:0]"},
      {[](CostInputs& in) { in.devices[1].id = ""; }, "device.id"},
  };
  for (const Case& c : cases) {
    CostInputs in = RealisticInputs();
    c.mutate(in);
    absl::StatusOr<CostModelPtr> model = CostModel::Create(in);
    ASSERT_FALSE(model.ok()) << c.field;
    EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(model.status().message()), HasSubstr(c.field));
  }
}

TEST(CostModelTest, SplitWeighsPromptTokensAndHandsOutEveryNano) {
  const CostModelPtr model = MakeModel(RealisticInputs());  // prefill weight 0.25
  ASSERT_NE(model, nullptr);
  // Weights 100 x 0.25 = 25, 25, 50: quotas 25, 25, 50 of 100.
  const TokenShare shares[] = {{.prompt_tokens = 100, .generated_tokens = 0},
                               {.prompt_tokens = 0, .generated_tokens = 25},
                               {.prompt_tokens = 100, .generated_tokens = 25}};
  EXPECT_THAT(model->Split(100, shares), ElementsAre(25, 25, 50));
  // 10 over three equal weights: 3.33 each, the first gets the spare one.
  const TokenShare equal[] = {{.prompt_tokens = 0, .generated_tokens = 1},
                              {.prompt_tokens = 0, .generated_tokens = 1},
                              {.prompt_tokens = 0, .generated_tokens = 1}};
  EXPECT_THAT(model->Split(10, equal), ElementsAre(4, 3, 3));
  // All-zero shares split equally; empty input gives nothing.
  const TokenShare zero[] = {{}, {}};
  EXPECT_THAT(model->Split(7, zero), ElementsAre(4, 3));
  EXPECT_TRUE(model->Split(7, {}).empty());
  // A zero-weight share next to others gets nothing.
  const TokenShare mixed[] = {{}, {.prompt_tokens = 0, .generated_tokens = 3}};
  EXPECT_THAT(model->Split(5, mixed), ElementsAre(0, 5));
}

TEST(CostModelTest, SplitOfRandomInputsIsExactAndFair) {
  CostInputs in = RealisticInputs();
  std::mt19937_64 rng(42);
  std::uniform_int_distribution<int> count(1, 40);
  std::uniform_int_distribution<int64_t> tokens(0, 4096);
  std::uniform_int_distribution<int> zero_one(0, 4);
  std::uniform_real_distribution<double> weight(0.01, 3.0);
  std::uniform_int_distribution<int64_t> total_nano(0, int64_t{1} << 40);
  for (int round = 0; round < 2000; ++round) {
    in.prefill_token_weight = weight(rng);
    const CostModelPtr model = MakeModel(in);
    ASSERT_NE(model, nullptr);
    std::vector<TokenShare> shares(count(rng));
    double weight_sum = 0;
    for (TokenShare& s : shares) {
      // Decode steps are mostly one generated token; some sequences are idle.
      s.prompt_tokens = zero_one(rng) == 0 ? tokens(rng) : 0;
      s.generated_tokens = zero_one(rng) == 0 ? 0 : 1;
      weight_sum += s.prompt_tokens * in.prefill_token_weight + s.generated_tokens;
    }
    const int64_t total = round % 10 == 0 ? round : total_nano(rng);
    const std::vector<int64_t> parts = model->Split(total, shares);
    ASSERT_EQ(parts.size(), shares.size());
    EXPECT_EQ(std::accumulate(parts.begin(), parts.end(), int64_t{0}), total);
    for (size_t i = 0; i < shares.size(); ++i) {
      const double w =
          shares[i].prompt_tokens * in.prefill_token_weight + shares[i].generated_tokens;
      const double quota = weight_sum > 0 ? static_cast<double>(total) * w / weight_sum
                                          : static_cast<double>(total) / shares.size();
      EXPECT_GE(parts[i], 0);
      // Each part is its quota rounded down or up (a little slack for the
      // double quota computed here).
      EXPECT_LE(std::abs(static_cast<double>(parts[i]) - quota), 1.0 + quota * 1e-12)
          << "round " << round << " share " << i;
      if (weight_sum > 0 && w == 0) {
        EXPECT_EQ(parts[i], 0);
      }
    }
  }
}

TEST(CostModelTest, RevenueAtPerMillionPrices) {
  // 0.15 and 0.60 per Mtok: 150 and 600 nano per token.
  EXPECT_EQ(CostModel::PricePicoPerToken(0.15), 150000);
  EXPECT_EQ(CostModel::RevenueNano(1000, 100, 0.15, 0.60), 150000 + 60000);
  EXPECT_EQ(CostModel::RevenuePico(1000, 100, 0.15, 0.60), 210000000);
  // 0.0375 per Mtok is 37.5 nano per token: exact in pico, rounded half up
  // to nano.
  EXPECT_EQ(CostModel::RevenuePico(1, 0, 0.0375, 0), 37500);
  EXPECT_EQ(CostModel::RevenueNano(1, 0, 0.0375, 0), 38);
  EXPECT_EQ(CostModel::RevenueNano(2, 0, 0.0375, 0), 75);
  EXPECT_EQ(CostModel::RevenueNano(0, 0, 5, 5), 0);
  EXPECT_EQ(CostModel::RevenueNano(-5, 3, 1, 1), 3000);  // negative counts count as 0
  // No overflow: saturates.
  EXPECT_EQ(CostModel::RevenuePico(int64_t{1} << 62, 0, 1000, 0),
            std::numeric_limits<int64_t>::max());
}

TEST(CostModelTest, StepRevenueAddsUpToTheRequestsTotalExactly) {
  std::mt19937_64 rng(7);
  std::uniform_int_distribution<int64_t> prompt(0, 700);
  const double prices[][2] = {{0.15, 0.60}, {0.0375, 0.075}, {1.234567, 3.3333333}, {0, 0.07}};
  for (const auto& price : prices) {
    RequestRevenue revenue;
    int64_t per_step_sum = 0;
    int64_t naive_sum = 0;
    int64_t prompt_total = 0;
    int64_t generated_total = 0;
    int steps = 0;
    // A chunked prefill, then decode steps of one token each.
    for (int i = 0; i < 3; ++i, ++steps) {
      const int64_t p = prompt(rng);
      prompt_total += p;
      per_step_sum += revenue.AddStep(p, 0, price[0], price[1]);
      naive_sum += CostModel::RevenueNano(p, 0, price[0], price[1]);
    }
    for (int i = 0; i < 500; ++i, ++steps) {
      ++generated_total;
      const int64_t step = revenue.AddStep(0, 1, price[0], price[1]);
      EXPECT_GE(step, 0);
      per_step_sum += step;
      naive_sum += CostModel::RevenueNano(0, 1, price[0], price[1]);
    }
    const int64_t of_totals =
        CostModel::RevenueNano(prompt_total, generated_total, price[0], price[1]);
    EXPECT_EQ(per_step_sum, of_totals) << price[0];
    EXPECT_EQ(revenue.total_nano(), of_totals);
    EXPECT_EQ(revenue.total_pico(),
              CostModel::RevenuePico(prompt_total, generated_total, price[0], price[1]));
    // Rounding each step on its own is off by at most half a nano per step.
    EXPECT_LE(std::abs(naive_sum - of_totals), steps / 2 + 1);
  }
}

TEST(CostLedgerTest, OneIntervalAgainstHandComputedValues) {
  const CostModelPtr model = MakeModel(RealisticInputs());
  ASSERT_NE(model, nullptr);
  CostLedger ledger(model, kStart);
  EXPECT_EQ(Record(ledger, "cuda:0", milliseconds(10), 7.0), 25566);
  EXPECT_EQ(Record(ledger, "cuda:0", milliseconds(10), 7.0), 25566);
  // Nothing is closed before the first tick.
  EXPECT_EQ(ledger.Totals().at("cuda:0").attributed_nano, 0);

  ledger.Tick(kStart + seconds(60), {{"cuda:0", 42000.0}, {"cuda:1", 6000.0}});
  const auto totals = ledger.Totals();
  ASSERT_EQ(totals.size(), 2u);
  const DeviceCostTotals& a = totals.at("cuda:0");
  // 60 s x 0.0025262853/s = 151577116.13 nano; 42 kJ x 4.3333e-8 = 1820000 nano.
  EXPECT_EQ(a.node_nano, 151577116 + 1820000);
  EXPECT_EQ(a.attributed_nano, 2 * 25566);
  EXPECT_EQ(a.idle_nano, a.node_nano - 2 * 25566);
  EXPECT_EQ(a.by_component_nano.at("energy"), 1820000);
  EXPECT_DOUBLE_EQ(a.busy_seconds, 0.02);
  EXPECT_DOUBLE_EQ(a.wall_seconds, 60.0);
  EXPECT_DOUBLE_EQ(a.energy_joules, 42000.0);
  EXPECT_DOUBLE_EQ(a.step_energy_joules, 14.0);

  // cuda:1, idle: 60 s x 0.25 of the fixed rate = 50525705.38 nano, by
  // component 38025705.38 capex, 1666666.67 network, 8750000 debt,
  // 2083333.33 other: the spare nano goes to network (largest remainder).
  const DeviceCostTotals& b = totals.at("cuda:1");
  EXPECT_EQ(b.attributed_nano, 0);
  EXPECT_EQ(b.by_component_nano.at("capex"), 38025705);
  EXPECT_EQ(b.by_component_nano.at("network"), 1666667);
  EXPECT_EQ(b.by_component_nano.at("debt"), 8750000);
  EXPECT_EQ(b.by_component_nano.at("other"), 2083333);
  EXPECT_EQ(b.by_component_nano.at("energy"), 260000);  // 6 kJ
  EXPECT_EQ(b.node_nano, 50525705 + 260000);
  EXPECT_EQ(b.idle_nano, b.node_nano);
}

// Checks node == attributed + idle and node == sum of components, per device.
void ExpectIdentities(const std::map<std::string, DeviceCostTotals>& totals) {
  for (const auto& [device, t] : totals) {
    EXPECT_EQ(t.attributed_nano + t.idle_nano, t.node_nano) << device;
    int64_t components = 0;
    for (const auto& [name, nano] : t.by_component_nano) components += nano;
    EXPECT_EQ(components, t.node_nano) << device;
    EXPECT_EQ(t.by_component_nano.size(), std::size(kCostComponents)) << device;
  }
}

TEST(CostLedgerTest, SimulatedRunKeepsNodeEqualToAttributedPlusIdleExactly) {
  const CostModelPtr model = MakeModel(RealisticInputs());
  ASSERT_NE(model, nullptr);
  CostLedger ledger(model, kStart);
  std::mt19937_64 rng(1234);
  std::uniform_int_distribution<int64_t> step_us(200, 50000);
  std::uniform_real_distribution<double> watts(80.0, 720.0);
  std::uniform_int_distribution<int> steps_per_tick(0, 60);
  std::uniform_int_distribution<int64_t> tick_ms(1, 2000);
  const std::string devices[] = {"cuda:0", "cuda:1"};

  TimePoint now = kStart;
  int64_t step_cost_sum = 0;
  int64_t expected_node = 0;
  for (int tick = 0; tick < 400; ++tick) {
    const milliseconds interval(tick_ms(rng));
    std::map<std::string, double> energy;
    int64_t interval_attributed = 0;
    for (const std::string& d : devices) {
      const int n = steps_per_tick(rng);
      for (int i = 0; i < n; ++i) {
        const nanoseconds t = std::chrono::microseconds(step_us(rng));
        // The step's energy estimate: power now x its device time.
        const double joules = watts(rng) * std::chrono::duration<double>(t).count();
        const int64_t cost = Record(ledger, d, t, joules);
        EXPECT_EQ(cost, model->StepCostNano(d, t, joules));
        interval_attributed += cost;
      }
      energy[d] = watts(rng) * std::chrono::duration<double>(interval).count();
      expected_node += std::llround(
          (std::chrono::duration<double>(interval).count() * model->DeviceFixedPerSecond(d)) * 1e9);
      expected_node += std::llround(energy[d] * model->rates().energy_per_joule * 1e9);
    }
    step_cost_sum += interval_attributed;
    now += interval;
    ledger.Tick(now, energy);
  }
  const auto totals = ledger.Totals();
  ExpectIdentities(totals);
  int64_t node = 0;
  int64_t attributed = 0;
  int64_t idle = 0;
  for (const auto& [device, t] : totals) {
    node += t.node_nano;
    attributed += t.attributed_nano;
    idle += t.idle_nano;
  }
  EXPECT_EQ(attributed + idle, node);
  EXPECT_EQ(attributed, step_cost_sum);
  EXPECT_EQ(node, expected_node);
  EXPECT_GT(attributed, 0);
  EXPECT_GT(idle, 0);
}

TEST(CostLedgerTest, IdleMayGoNegativeButTheIdentityHolds) {
  const CostModelPtr model = MakeModel(RealisticInputs());
  ASSERT_NE(model, nullptr);
  CostLedger ledger(model, kStart);
  // The step's energy estimate (700 J) exceeds what was measured (100 J).
  Record(ledger, "cuda:1", seconds(1), 700.0);
  ledger.Tick(kStart + seconds(1), {{"cuda:1", 100.0}});
  const DeviceCostTotals t = ledger.Totals().at("cuda:1");
  EXPECT_LT(t.idle_nano, 0);
  EXPECT_EQ(t.attributed_nano + t.idle_nano, t.node_nano);
  ExpectIdentities(ledger.Totals());
}

TEST(CostLedgerTest, UnknownDevicesAndBackwardTimeAreAccountedSafely) {
  const CostModelPtr model = MakeModel(RealisticInputs());
  ASSERT_NE(model, nullptr);
  CostLedger ledger(model, kStart);
  const int64_t cost = Record(ledger, "cpu", milliseconds(5), 1.0);
  EXPECT_EQ(cost, 43);  // energy only: 1 J x 4.333e-8
  ledger.Tick(kStart + seconds(1), {{"cpu", 10.0}});
  ledger.Tick(kStart, {});  // earlier than the last tick: an empty interval
  const auto totals = ledger.Totals();
  ASSERT_TRUE(totals.contains("cpu"));
  EXPECT_EQ(totals.at("cpu").attributed_nano, 43);
  EXPECT_EQ(totals.at("cpu").node_nano, 433);
  EXPECT_DOUBLE_EQ(totals.at("cuda:0").wall_seconds, 1.0);
  ExpectIdentities(totals);
}

TEST(CostLedgerTest, SetModelMidRunChangesOnlyLaterIntervals) {
  const CostModelPtr cheap = MakeModel(RealisticInputs());
  CostInputs dear_inputs = RealisticInputs();
  dear_inputs.capex *= 2;
  dear_inputs.power_usd_per_kwh = 0.24;
  const CostModelPtr dear = MakeModel(dear_inputs);
  ASSERT_NE(cheap, nullptr);
  ASSERT_NE(dear, nullptr);

  // Two ledgers run the same first hour; one switches to the dear model.
  CostLedger stays(cheap, kStart);
  CostLedger switches(cheap, kStart);
  for (CostLedger* l : {&stays, &switches}) {
    Record(*l, "cuda:0", milliseconds(30), 20.0);
    l->Tick(kStart + seconds(10), {{"cuda:0", 6000.0}});
    Record(*l, "cuda:0", milliseconds(30), 20.0);
  }
  // SetModel closes the open interval [10 s, 15 s) with the cheap model.
  switches.SetModel(dear, kStart + seconds(15), {{"cuda:0", 3000.0}});
  stays.Tick(kStart + seconds(15), {{"cuda:0", 3000.0}});
  EXPECT_EQ(switches.model(), dear);
  const auto before_stays = stays.Totals();
  const auto before_switches = switches.Totals();
  for (const auto& [device, t] : before_stays) {
    const DeviceCostTotals& s = before_switches.at(device);
    EXPECT_EQ(s.node_nano, t.node_nano) << device;
    EXPECT_EQ(s.attributed_nano, t.attributed_nano) << device;
    EXPECT_EQ(s.by_component_nano, t.by_component_nano) << device;
  }

  // Later steps and intervals are priced with the dear model.
  const int64_t cheap_step = Record(stays, "cuda:0", milliseconds(30), 20.0);
  const int64_t dear_step = Record(switches, "cuda:0", milliseconds(30), 20.0);
  EXPECT_EQ(dear_step, dear->StepCostNano("cuda:0", milliseconds(30), 20.0));
  EXPECT_GT(dear_step, cheap_step);
  stays.Tick(kStart + seconds(25), {{"cuda:0", 6000.0}});
  switches.Tick(kStart + seconds(25), {{"cuda:0", 6000.0}});
  const auto after_stays = stays.Totals();
  const auto after_switches = switches.Totals();
  const int64_t cheap_interval =
      after_stays.at("cuda:0").node_nano - before_stays.at("cuda:0").node_nano;
  const int64_t dear_interval =
      after_switches.at("cuda:0").node_nano - before_switches.at("cuda:0").node_nano;
  EXPECT_EQ(cheap_interval, std::llround(10 * cheap->DeviceFixedPerSecond("cuda:0") * 1e9) +
                                std::llround(6000 * cheap->rates().energy_per_joule * 1e9));
  EXPECT_EQ(dear_interval, std::llround(10 * dear->DeviceFixedPerSecond("cuda:0") * 1e9) +
                               std::llround(6000 * dear->rates().energy_per_joule * 1e9));
  // Energy doubles in price; capex doubles, the rest does not.
  EXPECT_GT(dear_interval, cheap_interval);
  ExpectIdentities(after_switches);
}

TEST(CostLedgerTest, SetModelAddsItsNewDevices) {
  CostInputs one = RealisticInputs();
  one.devices.pop_back();
  CostLedger ledger(MakeModel(one), kStart);
  EXPECT_EQ(ledger.Totals().size(), 1u);
  ledger.SetModel(MakeModel(RealisticInputs()), kStart + seconds(1));
  ledger.Tick(kStart + seconds(2), {});
  const auto totals = ledger.Totals();
  ASSERT_EQ(totals.size(), 2u);
  EXPECT_DOUBLE_EQ(totals.at("cuda:0").wall_seconds, 2.0);
  EXPECT_DOUBLE_EQ(totals.at("cuda:1").wall_seconds, 1.0);
  ExpectIdentities(totals);
}

}  // namespace
}  // namespace tokenmill::metering
