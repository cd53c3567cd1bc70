#include "runtime/sampling/sampler.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/sampling/sampling_rng.h"

namespace tokenmill::sampling {
namespace {

SamplingParams Seeded(float temperature, uint64_t seed = 7) {
  SamplingParams params;
  params.temperature = temperature;
  params.seed = seed;
  return params;
}

// Pseudo-random logits in [-4, 4) from the sampler's own platform-independent stream.
std::vector<float> RandomLogits(int n, uint64_t seed) {
  SamplingRng rng(seed);
  std::vector<float> logits(static_cast<size_t>(n));
  for (float& x : logits) x = static_cast<float>(rng.Uniform() * 8.0 - 4.0);
  return logits;
}

std::vector<double> Softmax(const std::vector<float>& logits) {
  const float max = *std::max_element(logits.begin(), logits.end());
  std::vector<double> p(logits.size());
  double sum = 0;
  for (size_t i = 0; i < logits.size(); ++i) sum += p[i] = std::exp(double(logits[i]) - max);
  for (double& x : p) x /= sum;
  return p;
}

std::vector<float> LogitsOf(const std::vector<double>& probs) {
  std::vector<float> logits;
  for (double p : probs) logits.push_back(static_cast<float>(std::log(p)));
  return logits;
}

int32_t SampleToken(Sampler& sampler, const std::vector<float>& logits) {
  absl::StatusOr<SampledToken> out = sampler.Sample(logits);
  EXPECT_TRUE(out.ok()) << out.status();
  return out.ok() ? out->token : -1;
}

TEST(SamplingRngTest, GoldenStreamAndUniformRange) {
  // Golden values from an independent Python model of splitmix64 + xoshiro256**: they pin the
  // generator so that seeded outputs stay the same across platforms and releases.
  SamplingRng a(42), c(43);
  EXPECT_EQ(a.Next(), 1546998764402558742ULL);
  EXPECT_EQ(a.Next(), 6990951692964543102ULL);
  EXPECT_NE(c.Next(), 1546998764402558742ULL);
  for (int i = 0; i < 1000; ++i) {
    const double u = a.Uniform();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
  }
}

TEST(SamplerTest, GreedyPicksArgmaxAndLowestIdOnTies) {
  Sampler sampler(Seeded(0.0f), 6);
  EXPECT_EQ(SampleToken(sampler, {0.1f, 3.0f, -1.0f, 2.9f, 0.0f, 1.0f}), 1);
  EXPECT_EQ(SampleToken(sampler, {0.1f, 3.0f, -1.0f, 3.0f, 0.0f, 3.0f}), 1);
  EXPECT_EQ(SampleToken(sampler, {5.0f, 5.0f, 5.0f, 5.0f, 5.0f, 5.0f}), 0);
}

TEST(SamplerTest, LogitBiasIsAddedBeforeEverythingElse) {
  const std::vector<float> logits = RandomLogits(300, 3);
  // +100 on one token: drawn every time at temperature 1, and greedy picks it.
  SamplingParams forced = Seeded(1.0f, 11);
  forced.logit_bias = {{123, 100.0f}};
  Sampler sampler(forced, 300);
  for (int i = 0; i < 200; ++i) ASSERT_EQ(SampleToken(sampler, logits), 123) << "draw " << i;
  forced.temperature = 0.0f;
  Sampler greedy(forced, 300);
  EXPECT_EQ(SampleToken(greedy, logits), 123);

  // -100 on the argmax: greedy takes the runner-up; a small bias moves the logit by exactly it.
  const int32_t best = static_cast<int32_t>(
      std::max_element(logits.begin(), logits.end()) - logits.begin());
  SamplingParams banned = Seeded(0.0f);
  banned.logit_bias = {{best, -100.0f}, {7, 0.5f}};
  Sampler ban(banned, 300);
  std::vector<float> runner_up = logits;
  runner_up[static_cast<size_t>(best)] = -1e9f;
  runner_up[7] += 0.5f;
  const int32_t second = static_cast<int32_t>(
      std::max_element(runner_up.begin(), runner_up.end()) - runner_up.begin());
  EXPECT_EQ(SampleToken(ban, logits), second);
  auto processed = ban.ProcessLogits(logits);
  ASSERT_TRUE(processed.ok());
  EXPECT_FLOAT_EQ((*processed)[7], logits[7] + 0.5f);
  EXPECT_FLOAT_EQ((*processed)[static_cast<size_t>(best)], logits[static_cast<size_t>(best)] - 100.0f);
}

TEST(SamplerTest, TinyTemperatureMatchesGreedy) {
  for (uint64_t seed = 0; seed < 20; ++seed) {
    const std::vector<float> logits = RandomLogits(300, seed);
    Sampler greedy(Seeded(0.0f), 300);
    Sampler tiny(Seeded(0.001f, seed), 300);
    EXPECT_EQ(SampleToken(greedy, logits), SampleToken(tiny, logits)) << "seed " << seed;
  }
}

TEST(SamplerTest, TopKOneEqualsGreedy) {
  for (uint64_t seed = 0; seed < 20; ++seed) {
    const std::vector<float> logits = RandomLogits(300, seed);
    SamplingParams params = Seeded(1.5f, seed);
    params.top_k = 1;
    Sampler top1(params, 300);
    Sampler greedy(Seeded(0.0f), 300);
    EXPECT_EQ(SampleToken(top1, logits), SampleToken(greedy, logits)) << "seed " << seed;
  }
}

// Draws `n` tokens and returns how often each came up.
std::vector<int> Histogram(Sampler& sampler, const std::vector<float>& logits, int n) {
  std::vector<int> counts(logits.size(), 0);
  for (int i = 0; i < n; ++i) ++counts[static_cast<size_t>(SampleToken(sampler, logits))];
  return counts;
}

TEST(SamplerTest, TopPKeepsSmallestSetReachingP) {
  const std::vector<float> logits = LogitsOf({0.05, 0.5, 0.15, 0.3});
  SamplingParams params = Seeded(1.0f);
  params.top_p = 0.75f;  // 0.5 < 0.75 <= 0.5 + 0.3: keeps tokens 1 and 3
  Sampler sampler(params, 4);
  const std::vector<int> counts = Histogram(sampler, logits, 20000);
  EXPECT_EQ(counts[0], 0);
  EXPECT_EQ(counts[2], 0);
  // Renormalized: token 1 has 0.5 / 0.8 = 0.625; 5 sigma of a binomial over 20000 is ~0.017.
  EXPECT_NEAR(counts[1] / 20000.0, 0.625, 0.02);

  params.top_p = 0.49f;  // the top token alone reaches it
  Sampler only_top(params, 4);
  EXPECT_EQ(Histogram(only_top, logits, 2000)[1], 2000);
}

TEST(SamplerTest, TopPOnLargeVocabularyGrowsSelection) {
  // Flat logits: reaching p = 0.9 needs 90% of 5000 tokens, past the first guesses.
  const int vocab = 5000;
  std::vector<float> logits(vocab, 0.0f);
  logits[17] = 1.0f;
  SamplingParams params = Seeded(1.0f);
  params.top_p = 0.9f;
  Sampler sampler(params, vocab);
  std::vector<int> counts = Histogram(sampler, logits, 5000);
  // Ties are broken by lower id, so the kept set is token 17 plus the lowest ids.
  int high_ids = 0;
  for (int i = 4600; i < vocab; ++i) high_ids += counts[static_cast<size_t>(i)];
  EXPECT_EQ(high_ids, 0);
  EXPECT_GT(counts[17], 0);
}

TEST(SamplerTest, MinPDropsTokensBelowFractionOfTop) {
  const std::vector<float> logits = LogitsOf({0.5, 0.3, 0.15, 0.05});
  SamplingParams params = Seeded(1.0f);
  params.min_p = 0.2f;  // threshold 0.1: keeps 0.5, 0.3, 0.15
  Sampler sampler(params, 4);
  const std::vector<int> counts = Histogram(sampler, logits, 20000);
  EXPECT_EQ(counts[3], 0);
  EXPECT_GT(counts[2], 0);
  EXPECT_NEAR(counts[2] / 20000.0, 0.15 / 0.95, 0.02);
}

TEST(SamplerTest, PenaltiesChangeLogitsExactlyAsSpecified) {
  SamplingParams params = Seeded(1.0f);
  params.repetition_penalty = 1.5f;
  params.frequency_penalty = 0.5f;
  params.presence_penalty = 0.25f;
  Sampler sampler(params, 5);
  const int32_t prompt[] = {0, 1};
  ASSERT_TRUE(sampler.AcceptPrompt(prompt).ok());
  ASSERT_TRUE(sampler.Accept(2).ok());
  ASSERT_TRUE(sampler.Accept(2).ok());
  ASSERT_TRUE(sampler.Accept(3).ok());
  const std::vector<float> logits = {2.0f, -2.0f, 1.0f, 0.5f, 3.0f};
  absl::StatusOr<std::span<const float>> processed = sampler.ProcessLogits(logits);
  ASSERT_TRUE(processed.ok());
  const std::vector<float> expected = {
      2.0f / 1.5f,                       // prompt token, positive: divided
      -2.0f * 1.5f,                      // prompt token, negative: multiplied
      1.0f / 1.5f - (2 * 0.5f + 0.25f),  // generated twice
      0.5f / 1.5f - (0.5f + 0.25f),      // generated once
      3.0f,                              // never seen
  };
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_FLOAT_EQ((*processed)[i], expected[i]) << "token " << i;
  }

  // Temperature divides after the penalties.
  SamplingParams hot = params;
  hot.temperature = 0.5f;
  Sampler hot_sampler(hot, 5);
  ASSERT_TRUE(hot_sampler.AcceptPrompt(prompt).ok());
  ASSERT_TRUE(hot_sampler.Accept(2).ok());
  ASSERT_TRUE(hot_sampler.Accept(2).ok());
  ASSERT_TRUE(hot_sampler.Accept(3).ok());
  processed = hot_sampler.ProcessLogits(logits);
  ASSERT_TRUE(processed.ok());
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_FLOAT_EQ((*processed)[i], expected[i] / 0.5f) << "token " << i;
  }
}

TEST(SamplerTest, PresencePenaltyChangesGreedyChoice) {
  SamplingParams params = Seeded(0.0f);
  params.presence_penalty = 1.0f;
  Sampler sampler(params, 3);
  const std::vector<float> logits = {1.0f, 1.5f, 0.0f};
  EXPECT_EQ(SampleToken(sampler, logits), 1);
  ASSERT_TRUE(sampler.Accept(1).ok());
  EXPECT_EQ(SampleToken(sampler, logits), 0);  // 1.5 - 1 < 1
}

TEST(SamplerTest, SameSeedSameTokensDifferentSeedDiffers) {
  const std::vector<float> logits = RandomLogits(300, 3);
  auto run = [&](uint64_t seed) {
    SamplingParams params = Seeded(1.0f, seed);
    params.top_k = 50;
    params.top_p = 0.95f;
    Sampler sampler(params, 300);
    std::vector<int32_t> tokens;
    for (int i = 0; i < 200; ++i) {
      tokens.push_back(SampleToken(sampler, logits));
      EXPECT_TRUE(sampler.Accept(tokens.back()).ok());
    }
    return tokens;
  };
  EXPECT_EQ(run(1234), run(1234));
  EXPECT_NE(run(1234), run(1235));
}

// Pearson chi-square over 100k seeded draws. With 7 degrees of freedom the statistic stays below
// 24.32 with probability 0.999 when the sampler matches the softmax.
double ChiSquare(const std::vector<int>& counts, const std::vector<double>& expected_p, int n) {
  double chi = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    if (expected_p[i] == 0) {
      EXPECT_EQ(counts[i], 0) << "token " << i;
      continue;
    }
    const double e = expected_p[i] * n;
    chi += (counts[i] - e) * (counts[i] - e) / e;
  }
  return chi;
}

TEST(SamplerTest, EmpiricalDistributionMatchesSoftmax) {
  const int n = 100000;
  const std::vector<float> logits = {1.0f, 0.2f, -0.5f, 2.0f, 0.0f, 1.5f, -1.0f, 0.7f};
  Sampler sampler(Seeded(1.0f, 99), 8);
  const double chi = ChiSquare(Histogram(sampler, logits, n), Softmax(logits), n);
  EXPECT_LT(chi, 24.32);
}

TEST(SamplerTest, EmpiricalDistributionWithTemperatureAndTopK) {
  const int n = 100000;
  const std::vector<float> logits = {1.0f, 0.2f, -0.5f, 2.0f, 0.0f, 1.5f, -1.0f, 0.7f};
  SamplingParams params = Seeded(0.7f, 5);
  params.top_k = 5;  // keeps tokens 3, 5, 0, 7, 1
  Sampler sampler(params, 8);
  std::vector<float> expected_logits(8, -INFINITY);
  for (int id : {3, 5, 0, 7, 1}) expected_logits[static_cast<size_t>(id)] = logits[id] / 0.7f;
  // 4 degrees of freedom: below 18.47 with probability 0.999.
  const double chi = ChiSquare(Histogram(sampler, logits, n), Softmax(expected_logits), n);
  EXPECT_LT(chi, 18.47);
}

TEST(SamplerTest, LogprobsAreLogSoftmaxOfProcessedLogits) {
  SamplingParams params = Seeded(0.8f);
  params.logprobs = 5;
  params.presence_penalty = 0.5f;
  params.top_k = 3;  // truncation must not change the reported distribution
  Sampler sampler(params, 300);
  ASSERT_TRUE(sampler.Accept(10).ok());
  std::vector<float> logits = RandomLogits(300, 11);
  logits[42] = logits[43] = 9.0f;  // a tie at the top: lower id first
  absl::StatusOr<SampledToken> out = sampler.Sample(logits);
  ASSERT_TRUE(out.ok());

  std::vector<float> processed = logits;
  processed[10] -= 0.5f;
  for (float& x : processed) x /= 0.8f;
  const std::vector<double> p = Softmax(processed);
  EXPECT_NEAR(out->logprob, std::log(p[static_cast<size_t>(out->token)]), 1e-4);
  ASSERT_EQ(out->top_logprobs().size(), 5u);
  std::vector<int32_t> order(300);
  for (int32_t i = 0; i < 300; ++i) order[static_cast<size_t>(i)] = i;
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return p[a] > p[b]; });
  EXPECT_EQ(order[0], 42);
  EXPECT_EQ(order[1], 43);
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(out->top[i].token, order[i]);
    EXPECT_NEAR(out->top[i].logprob, std::log(p[static_cast<size_t>(order[i])]), 1e-4);
  }

  // Greedy reports the untempered distribution.
  SamplingParams greedy_params = Seeded(0.0f);
  greedy_params.logprobs = 1;
  Sampler greedy(greedy_params, 300);
  out = greedy.Sample(logits);
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->token, 42);
  EXPECT_NEAR(out->logprob, std::log(Softmax(logits)[42]), 1e-4);
  EXPECT_EQ(out->top[0].token, 42);
}

TEST(SamplerTest, RejectsBadInput) {
  Sampler sampler(Seeded(1.0f), 4);
  EXPECT_EQ(sampler.Sample(std::vector<float>{1, 2, 3}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(sampler.Sample(std::vector<float>(4, -INFINITY)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(sampler.Sample(std::vector<float>(4, NAN)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(sampler.Accept(4).code(), absl::StatusCode::kInvalidArgument);
  const int32_t prompt[] = {0, -1};
  EXPECT_EQ(sampler.AcceptPrompt(prompt).code(), absl::StatusCode::kInvalidArgument);
  // NaN logits count as -inf; the finite ones still sample.
  EXPECT_EQ(SampleToken(sampler, {NAN, 1.0f, NAN, NAN}), 1);
}

TEST(SamplerTest, UnseededSamplersStillSample) {
  SamplingParams params;
  params.top_k = 2;
  Sampler sampler(params, 4);
  const int32_t token = SampleToken(sampler, {3.0f, 0.0f, 2.9f, -1.0f});
  EXPECT_TRUE(token == 0 || token == 2);
}

}  // namespace
}  // namespace tokenmill::sampling
