// Element-wise kernels (RmsNorm, SiluMul, Add, Dot, Axpy, StoreF16) on every
// ISA against the naive ops, lengths with SIMD tails, NaN-poisoned outputs;
// RoPE (both pairings, Llama 3 scaling, GGUF freq factors); ISA detection.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cmath>
#include <numbers>
#include <string>
#include <vector>

#include "devices/cpu/kernels.h"
#include "tests/kernels/kernel_test_util.h"
#include "tests/reference/naive_ops.h"

namespace tokenmill::devices::cpu::testing {
namespace {

// Lengths around the 8- and 16-lane widths and a model-sized one.
const int64_t kLengths[] = {1, 7, 8, 9, 15, 16, 17, 31, 33, 64, 100, 4096 + 32};

// RmsNorm: the f32 sum of squares (lanes of <= ~260 terms) is off by < 1e-6
// relative; the scale and two products add a few ulps.
constexpr double kRmsNormRelTol = 1e-5;
// SiluMul: exp is a Cephes-style polynomial (~2e-7 relative), then a divide
// and a multiply: within 1e-6 of the f64 result.
constexpr double kSiluRelTol = 1e-6;
// Dot products: f32 accumulation over lanes; bounded by 1e-5 of sum |a_i b_i|.
constexpr double kDotTol = 1e-5;
// Axpy: one fused (or mul + add) rounding per element: 2 ulps of |y| + |a x|.
constexpr double kAxpyTol = 2.0 * 1.1920929e-7;

TEST(IsaTest, DetectsAndHonoursTheCap) {
  const char* saved = getenv("TOKENMILL_CPU_ISA");
  const std::string saved_value = saved ? saved : "";
  unsetenv("TOKENMILL_CPU_ISA");
  const Isa hw = DetectIsa();
  setenv("TOKENMILL_CPU_ISA", "scalar", 1);
  EXPECT_EQ(DetectIsa(), Isa::kScalar);
  setenv("TOKENMILL_CPU_ISA", "avx2", 1);
  EXPECT_EQ(DetectIsa(), std::min(hw, Isa::kAvx2));
  setenv("TOKENMILL_CPU_ISA", "avx512", 1);
  EXPECT_EQ(DetectIsa(), hw);
  if (saved) {
    setenv("TOKENMILL_CPU_ISA", saved_value.c_str(), 1);
  } else {
    unsetenv("TOKENMILL_CPU_ISA");
  }
  EXPECT_STREQ(IsaName(Isa::kScalar), "scalar");
  EXPECT_STREQ(IsaName(Isa::kAvx2), "avx2");
  EXPECT_STREQ(IsaName(Isa::kAvx512), "avx512");
#if defined(__x86_64__)
  // Every x86-64 CPU this project targets has at least AVX2 (a test machine
  // without it would silently skip the SIMD paths).
  EXPECT_GE(hw, Isa::kAvx2);
#endif
}

TEST(OpsTest, RmsNorm) {
  for (int64_t n : kLengths) {
    const std::vector<float> x = RandomFloats(n, 1, -3.0f, 3.0f);
    const std::vector<float> weight = RandomFloats(n, 2, 0.5f, 1.5f);
    std::vector<float> want(static_cast<size_t>(n));
    reference::RmsNormNaive(x.data(), weight.data(), n, 1e-5f, want.data());
    for (Isa isa : IsasToTest()) {
      std::vector<float> out(static_cast<size_t>(n), kPoison);
      RmsNorm(isa, x.data(), weight.data(), n, 1e-5f, out.data());
      std::vector<float> in_place = x;
      RmsNorm(isa, in_place.data(), weight.data(), n, 1e-5f, in_place.data());
      for (int64_t i = 0; i < n; ++i) {
        const size_t k = static_cast<size_t>(i);
        ASSERT_NEAR(out[k], want[k], kRmsNormRelTol * std::fabs(want[k]) + 1e-30)
            << IsaName(isa) << " n=" << n << " i=" << i;
        ASSERT_EQ(in_place[k], out[k]) << IsaName(isa) << " aliasing, n=" << n;
      }
    }
  }
}

TEST(OpsTest, SiluMul) {
  for (int64_t n : kLengths) {
    std::vector<float> gate = RandomFloats(n, 3, -20.0f, 20.0f);
    // Ends of the range: exp(-x) overflows f32 below -88 and vanishes above.
    const float edges[] = {-100.0f, -88.5f, -87.0f, 0.0f, -0.0f, 1e-30f, 88.0f, 100.0f};
    for (size_t i = 0; i < std::size(edges) && i < gate.size(); ++i)
      gate[i * 997 % gate.size()] = edges[i];
    const std::vector<float> up = RandomFloats(n, 4, -2.0f, 2.0f);
    std::vector<float> want = gate;
    reference::SiluMulNaive(want.data(), up.data(), n);
    for (Isa isa : IsasToTest()) {
      std::vector<float> got = gate;
      SiluMul(isa, got.data(), up.data(), n);
      for (size_t i = 0; i < got.size(); ++i) {
        // Below x = -87 the result is ~1e-36 or less: an absolute floor.
        ASSERT_NEAR(got[i], want[i], kSiluRelTol * std::fabs(want[i]) + 1e-35)
            << IsaName(isa) << " n=" << n << " x=" << gate[i];
      }
    }
  }
}

TEST(OpsTest, AddIsExact) {
  for (int64_t n : kLengths) {
    const std::vector<float> x = RandomFloats(n, 5), y0 = RandomFloats(n, 6);
    for (Isa isa : IsasToTest()) {
      std::vector<float> y = y0;
      Add(isa, y.data(), x.data(), n);
      for (size_t i = 0; i < y.size(); ++i) ASSERT_EQ(y[i], y0[i] + x[i]) << IsaName(isa);
    }
  }
}

TEST(OpsTest, DotF32AndF16) {
  for (int64_t n : kLengths) {
    const std::vector<float> a = RandomFloats(n, 7, -2.0f, 2.0f), b = RandomFloats(n, 8);
    std::vector<uint16_t> a16(static_cast<size_t>(n));
    std::vector<float> a16f(static_cast<size_t>(n));
    for (size_t i = 0; i < a16.size(); ++i) {
      a16[i] = reference::FloatToHalfNaive(a[i]);
      a16f[i] = reference::HalfToFloatNaive(a16[i]);
    }
    const double want32 = reference::MatVecNaiveF64(a.data(), 1, n, b.data())[0];
    const double want16 = reference::MatVecNaiveF64(a16f.data(), 1, n, b.data())[0];
    double l1_32 = 0.0, l1_16 = 0.0;
    for (size_t i = 0; i < a.size(); ++i) {
      l1_32 += std::fabs(static_cast<double>(a[i]) * b[i]);
      l1_16 += std::fabs(static_cast<double>(a16f[i]) * b[i]);
    }
    for (Isa isa : IsasToTest()) {
      EXPECT_NEAR(DotF32(isa, a.data(), b.data(), n), want32, kDotTol * l1_32)
          << IsaName(isa) << " n=" << n;
      EXPECT_NEAR(DotF16(isa, a16.data(), b.data(), n), want16, kDotTol * l1_16)
          << IsaName(isa) << " n=" << n;
    }
  }
}

TEST(OpsTest, AxpyF32AndF16) {
  const float a = -0.75f;
  for (int64_t n : kLengths) {
    const std::vector<float> x = RandomFloats(n, 9), y0 = RandomFloats(n, 10);
    std::vector<uint16_t> x16(static_cast<size_t>(n));
    for (size_t i = 0; i < x16.size(); ++i) x16[i] = reference::FloatToHalfNaive(x[i]);
    for (Isa isa : IsasToTest()) {
      std::vector<float> y32 = y0, y16 = y0;
      AxpyF32(isa, a, x.data(), y32.data(), n);
      AxpyF16(isa, a, x16.data(), y16.data(), n);
      for (size_t i = 0; i < y0.size(); ++i) {
        const double x16f = reference::HalfToFloatNaive(x16[i]);
        const double want32 = y0[i] + static_cast<double>(a) * x[i];
        const double want16 = y0[i] + static_cast<double>(a) * x16f;
        ASSERT_NEAR(y32[i], want32, kAxpyTol * (std::fabs(y0[i]) + std::fabs(a * x[i])))
            << IsaName(isa) << " n=" << n << " i=" << i;
        ASSERT_NEAR(y16[i], want16, kAxpyTol * (std::fabs(y0[i]) + std::fabs(a * x16f)))
            << IsaName(isa) << " n=" << n << " i=" << i;
      }
    }
  }
}

TEST(OpsTest, StoreF16MatchesNaiveBitForBit) {
  // Random values plus specials: ties, subnormals, overflow, Inf, NaN.
  std::vector<float> x = RandomFloats(1000, 11, -70000.0f, 70000.0f);
  const std::vector<float> small = RandomFloats(200, 12, -1e-4f, 1e-4f);
  x.insert(x.end(), small.begin(), small.end());
  for (float v : {0.0f, -0.0f, 1.0f + 1.0f / 2048, 65504.0f, 65519.99f, 65520.0f, 1e-8f, 3e-8f,
                  5.9604645e-8f, INFINITY, -INFINITY, NAN, -NAN}) {
    x.push_back(v);
  }
  for (int64_t n : {int64_t{1}, int64_t{15}, int64_t{17}, static_cast<int64_t>(x.size())}) {
    for (Isa isa : IsasToTest()) {
      std::vector<uint16_t> out(static_cast<size_t>(n) + 1, 0xabcd);
      StoreF16(isa, x.data() + x.size() - n, out.data(), n);
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_EQ(out[static_cast<size_t>(i)],
                  reference::FloatToHalfNaive(x[x.size() - n + static_cast<size_t>(i)]))
            << IsaName(isa) << " n=" << n << " i=" << i;
      }
      EXPECT_EQ(out.back(), 0xabcd) << "wrote past n";
    }
  }
}

ModelHyperparams RopeParams(int32_t head_dim, float theta) {
  ModelHyperparams hp;
  hp.head_dim = head_dim;
  hp.rope_theta = theta;
  return hp;
}

// The kernels keep inv_freq in f32 (the contract), so the angle pos *
// inv_freq is off by up to pos * ulp(inv_freq) / 2 = pos * 6e-8 radians; the
// rotated pair moves by that times its length, plus f32 rounding.
void ExpectRopeMatches(const ModelHyperparams& hp, const float* freq_factors) {
  const int32_t heads = 3;
  std::vector<float> inv(static_cast<size_t>(hp.head_dim / 2), kPoison);
  RopeInvFrequencies(hp, freq_factors, inv.data());
  const std::vector<double> want_inv = reference::RopeInvFrequenciesNaive(hp, freq_factors);
  for (size_t i = 0; i < inv.size(); ++i) {
    ASSERT_NEAR(inv[i], want_inv[i], 1e-7 * want_inv[i]) << "i=" << i;
  }
  for (RopeStyle style : {RopeStyle::kAdjacentPairs, RopeStyle::kHalves}) {
    for (int32_t pos : {0, 1, 17, 1000, 8191, 100000}) {
      const std::vector<float> x = RandomFloats(heads * hp.head_dim, 13 + pos);
      std::vector<float> got = x, want = x;
      Rope(got.data(), heads, hp.head_dim, pos, inv.data(), style);
      reference::RopeNaive(want.data(), heads, hp.head_dim, pos, hp, freq_factors, style);
      const double tol = (pos * 1.2e-7 + 1e-6) * 2.0;  // |pair| <= sqrt(2)
      for (size_t i = 0; i < x.size(); ++i) {
        ASSERT_NEAR(got[i], want[i], tol)
            << "style=" << static_cast<int>(style) << " pos=" << pos << " i=" << i;
      }
    }
  }
}

TEST(RopeTest, PlainFrequencies) { ExpectRopeMatches(RopeParams(64, 10000.0f), nullptr); }

// Linear scaling (Gemma 3 4B+): position p of a global layer rotates as
// p / factor unscaled would; a local layer's frequencies are its own.
TEST(RopeTest, LinearScalingOfGlobalLayersOnly) {
  ModelHyperparams hp = RopeParams(64, 1000000.0f);
  hp.rope_linear_factor = 8.0f;
  hp.rope_theta_local = 10000.0f;
  ExpectRopeMatches(hp, nullptr);
  std::vector<float> scaled(32), plain(32), local(32), local_plain(32);
  RopeInvFrequencies(hp, nullptr, scaled.data());
  RopeInvFrequencies(RopeParams(64, 1000000.0f), nullptr, plain.data());
  RopeInvFrequencies(hp, nullptr, local.data(), /*local=*/true);
  ModelHyperparams unscaled_local = RopeParams(64, 1000000.0f);
  unscaled_local.rope_theta_local = 10000.0f;
  RopeInvFrequencies(unscaled_local, nullptr, local_plain.data(), /*local=*/true);
  for (size_t i = 0; i < scaled.size(); ++i) {
    EXPECT_FLOAT_EQ(scaled[i], plain[i] / 8.0f) << i;
    EXPECT_EQ(local[i], local_plain[i]) << i;
  }
}

TEST(RopeTest, Llama3Scaling) {
  ModelHyperparams hp = RopeParams(128, 500000.0f);
  hp.rope_scaling = {
      .factor = 8.0f, .low_freq_factor = 1.0f, .high_freq_factor = 4.0f, .original_context = 8192};
  ExpectRopeMatches(hp, nullptr);
  // The highest frequency is kept, the lowest divided by the factor.
  const std::vector<double> base =
      reference::RopeInvFrequenciesNaive(RopeParams(128, 500000.0f), nullptr);
  const std::vector<double> scaled = reference::RopeInvFrequenciesNaive(hp, nullptr);
  EXPECT_DOUBLE_EQ(scaled.front(), base.front());
  EXPECT_DOUBLE_EQ(scaled.back(), base.back() / 8.0);
  // Something in between is blended: strictly between the two.
  int blended = 0;
  for (size_t i = 0; i < base.size(); ++i) {
    if (scaled[i] < base[i] && scaled[i] > base[i] / 8.0) ++blended;
  }
  EXPECT_GT(blended, 0);
}

TEST(RopeTest, GgufFreqFactors) {
  const ModelHyperparams hp = RopeParams(64, 500000.0f);
  std::vector<float> factors = RandomFloats(32, 14, 1.0f, 8.0f);
  ExpectRopeMatches(hp, factors.data());
}

// Hand-checked pairing: at pos 1 with one frequency of pi/2 radians, pair
// (a, b) -> (-b, a).
TEST(RopeTest, PairingOfBothStyles) {
  const float inv[2] = {static_cast<float>(std::numbers::pi / 2), 0.0f};
  float adjacent[4] = {1, 2, 3, 4};
  Rope(adjacent, 1, 4, 1, inv, RopeStyle::kAdjacentPairs);
  EXPECT_NEAR(adjacent[0], -2.0f, 1e-6);
  EXPECT_NEAR(adjacent[1], 1.0f, 1e-6);
  EXPECT_FLOAT_EQ(adjacent[2], 3.0f);
  EXPECT_FLOAT_EQ(adjacent[3], 4.0f);
  float halves[4] = {1, 2, 3, 4};
  Rope(halves, 1, 4, 1, inv, RopeStyle::kHalves);
  EXPECT_NEAR(halves[0], -3.0f, 1e-6);
  EXPECT_FLOAT_EQ(halves[1], 2.0f);
  EXPECT_NEAR(halves[2], 1.0f, 1e-6);
  EXPECT_FLOAT_EQ(halves[3], 4.0f);
}

}  // namespace
}  // namespace tokenmill::devices::cpu::testing
