// The reference forward's own bookkeeping: argmax ties, incremental and
// restarted positions give the logits of one whole pass.
#include "tests/reference/reference_model.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/model/synth.h"

namespace tokenmill::reference {
namespace {

TEST(ReferenceArgMaxTest, LowestIdWinsTies) {
  EXPECT_EQ(ArgMax(std::vector<float>{1.0f, 3.0f, 3.0f, 2.0f}), 1);
  EXPECT_EQ(ArgMax(std::vector<float>{-1.0f}), 0);
}

class ReferenceModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model::SynthOptions o;
    o.vocab_size = 300;
    o.weight_type = devices::TensorType::kF32;
    absl::StatusOr<model::LoadedModel> m = model::SynthesizeModel(o);
    ASSERT_TRUE(m.ok()) << m.status();
    spec_ = m->spec;
  }
  devices::ModelSpec spec_;
};

TEST_F(ReferenceModelTest, IncrementalAndRestartedPositionsMatchOnePass) {
  const std::vector<int32_t> tokens = {5, 17, 260, 3, 99, 42};
  ReferenceModel whole(spec_);
  const std::vector<float> want = whole.Forward(tokens, 0);
  ASSERT_EQ(want.size(), tokens.size() * 300);
  EXPECT_EQ(whole.cached_positions(), 6);

  ReferenceModel stepwise(spec_);
  std::vector<float> got;
  for (size_t i = 0; i < tokens.size(); ++i) {
    const std::vector<float> one =
        stepwise.Forward(std::span<const int32_t>(&tokens[i], 1), static_cast<int32_t>(i));
    got.insert(got.end(), one.begin(), one.end());
  }
  EXPECT_EQ(got, want);

  // Restarting at position 2 drops positions 2.. and recomputes them.
  const std::vector<float> again = stepwise.Forward(std::span<const int32_t>(tokens).subspan(2), 2);
  EXPECT_EQ(again, std::vector<float>(want.begin() + 2 * 300, want.end()));
  for (float f : want) ASSERT_TRUE(std::isfinite(f));
}

TEST_F(ReferenceModelTest, GreedyGenerateFollowsArgMax) {
  ReferenceModel model(spec_);
  const std::vector<int32_t> prompt = {1, 2, 3};
  const std::vector<int32_t> generated = model.GreedyGenerate(prompt, 4);
  ASSERT_EQ(generated.size(), 4u);
  ReferenceModel check(spec_);
  std::vector<int32_t> sequence = prompt;
  for (int32_t token : generated) {
    const std::vector<float> logits = check.Forward(sequence, 0);
    EXPECT_EQ(token, ArgMax(std::span<const float>(logits).last(300)));
    sequence.push_back(token);
  }
}

}  // namespace
}  // namespace tokenmill::reference
