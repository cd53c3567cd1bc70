// Number formats: f16/bf16 conversions against the naive ones for every
// 16-bit pattern (and float inputs around every rounding boundary),
// QuantizeRow round trips and layouts, DequantizeRow for every type.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "devices/cpu/kernels.h"
#include "devices/cpu/kernels_internal.h"
#include "tests/kernels/kernel_test_util.h"
#include "tests/reference/naive_ops.h"

namespace tokenmill::devices::cpu::testing {
namespace {

TEST(ConversionsTest, HalfToFloatAllPatterns) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const uint16_t v = static_cast<uint16_t>(h);
    ASSERT_EQ(Bits(HalfToFloat(v)), Bits(reference::HalfToFloatNaive(v))) << std::hex << h;
    ASSERT_EQ(Bits(Bf16ToFloat(v)), Bits(reference::Bf16ToFloatNaive(v))) << std::hex << h;
  }
}

// Floats at, between (exact ties) and one ulp around every f16 / bf16 value,
// plus a sweep over all f32 patterns with a prime stride.
std::vector<float> BoundaryFloats(bool bf16) {
  std::vector<float> out;
  for (uint32_t h = 0; h < 65536; ++h) {
    const uint16_t v = static_cast<uint16_t>(h);
    const float f = bf16 ? reference::Bf16ToFloatNaive(v) : reference::HalfToFloatNaive(v);
    if (std::isnan(f)) continue;
    out.push_back(f);
    if (std::isinf(f)) continue;
    const float next = bf16 ? reference::Bf16ToFloatNaive(static_cast<uint16_t>(v + 1))
                            : reference::HalfToFloatNaive(static_cast<uint16_t>(v + 1));
    if (std::isnan(next) || std::isinf(next)) continue;
    const float tie = static_cast<float>((static_cast<double>(f) + next) / 2.0);
    out.push_back(tie);
    out.push_back(std::nextafter(tie, 0.0f));
    out.push_back(std::nextafter(tie, tie * 2.0f));
  }
  for (uint64_t u = 0; u < (uint64_t{1} << 32); u += 40009) out.push_back(FromBits(uint32_t(u)));
  return out;
}

TEST(ConversionsTest, FloatToHalfMatchesNaive) {
  for (float f : BoundaryFloats(false)) {
    ASSERT_EQ(FloatToHalf(f), reference::FloatToHalfNaive(f)) << std::hexfloat << f;
  }
}

TEST(ConversionsTest, FloatToBf16MatchesNaive) {
  for (float f : BoundaryFloats(true)) {
    ASSERT_EQ(FloatToBf16(f), reference::FloatToBf16Naive(f)) << std::hexfloat << f;
  }
}

// Anchors computed by hand, so that kernel and naive cannot agree on a wrong
// answer.
TEST(ConversionsTest, KnownValues) {
  EXPECT_EQ(FloatToHalf(1.0f), 0x3c00);
  EXPECT_EQ(FloatToHalf(-2.0f), 0xc000);
  EXPECT_EQ(FloatToHalf(65504.0f), 0x7bff);
  EXPECT_EQ(FloatToHalf(65519.996f), 0x7bff);
  EXPECT_EQ(FloatToHalf(65520.0f), 0x7c00);                      // tie to even: overflows
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -24)), 0x0001);         // smallest subnormal
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -25)), 0x0000);         // tie to even: zero
  EXPECT_EQ(FloatToHalf(std::ldexp(3.0f, -25)), 0x0002);         // tie to even: 2
  EXPECT_EQ(FloatToHalf(1.0f + std::ldexp(1.0f, -11)), 0x3c00);  // tie, even stays
  EXPECT_EQ(FloatToHalf(1.0f + std::ldexp(3.0f, -11)), 0x3c02);  // tie, odd goes up
  EXPECT_EQ(FloatToHalf(INFINITY), 0x7c00);
  EXPECT_EQ(FloatToHalf(-INFINITY), 0xfc00);
  EXPECT_EQ(FloatToHalf(NAN) & 0x7e00, 0x7e00);
  EXPECT_EQ(HalfToFloat(0x3555), 0.333251953125f);
  EXPECT_EQ(HalfToFloat(0x0001), std::ldexp(1.0f, -24));
  EXPECT_TRUE(std::isnan(HalfToFloat(0x7c01)));
  EXPECT_EQ(FloatToBf16(1.0f), 0x3f80);
  EXPECT_EQ(FloatToBf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);  // tie, even stays
  EXPECT_EQ(FloatToBf16(1.0f + std::ldexp(3.0f, -8)), 0x3f82);  // tie, odd goes up
  EXPECT_EQ(FloatToBf16(3.4028235e38f), 0x7f80);                // rounds to Inf
  EXPECT_EQ(FloatToBf16(-INFINITY), 0xff80);
  EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(NAN))));
  EXPECT_EQ(Bf16ToFloat(0x4049), 3.140625f);
}

TEST(QuantizeTest, Q8_0RoundTripWithinHalfStep) {
  const std::vector<float> x = RandomFloats(32 * 64, 21, -5.0f, 5.0f);
  std::vector<uint8_t> q(TensorBytes(TensorType::kQ8_0, x.size()));
  QuantizeRow(TensorType::kQ8_0, x.data(), static_cast<int64_t>(x.size()), q.data());
  TensorView view{.name = "q",
                  .type = TensorType::kQ8_0,
                  .shape = {1, int64_t(x.size())},
                  .data = q.data(),
                  .bytes = q.size()};
  std::vector<float> back(x.size());
  DequantizeRow(view, 0, back.data());
  for (size_t b = 0; b < x.size() / 32; ++b) {
    float amax = 0.0f;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[b * 32 + j]));
    const double d = amax / 127.0f;
    const double d16 = HalfToFloat(reference::FloatToHalfNaive(static_cast<float>(d)));
    // Rounding to the step d, plus the step itself stored as f16 (q <= 127).
    const double tol = d / 2.0 + 127.0 * std::fabs(d - d16) + 1e-7;
    for (int j = 0; j < 32; ++j) {
      ASSERT_NEAR(back[b * 32 + j], x[b * 32 + j], tol) << "block " << b << " j=" << j;
    }
  }
}

// Activation quantization rounds exactly as std::round (ties away from
// zero), in PrepareActivationRows as the matmuls get it, for both prepared
// formats: random rows, and rows whose max is 127 (so the scale is 1 and
// values land on exact ties, one ulp either side, and just below 0.5).
TEST(QuantizeTest, PreparedActivationsRoundHalfAwayFromZero) {
  constexpr int64_t kCols = 512;
  std::vector<float> x = RandomFloats(kCols * 3, 23, -3.0f, 3.0f);
  for (int64_t i = 0; i < kCols; ++i) x[i] *= 1e-3f;
  std::vector<float> ties(kCols);
  for (int64_t i = 0; i < kCols; ++i) {
    const float tie = static_cast<float>(i % 61) - 30.5f;  // -30.5 .. 29.5
    const float around[] = {tie,
                            std::nextafter(tie, -100.0f),
                            std::nextafter(tie, 100.0f),
                            0.49999997f,
                            -0.49999997f,
                            0.5f,
                            -0.5f,
                            126.5f};
    ties[i] = around[(i / 61) % 8];
    if (i % 256 == 0) ties[i] = 127.0f;  // every Q8_0 block and Q8_K super-block: max 127
    if (i % 32 == 0) ties[i] = (i / 32) % 2 ? 127.0f : -127.0f;
  }
  x.insert(x.end(), ties.begin(), ties.end());
  const int64_t rows = static_cast<int64_t>(x.size()) / kCols;
  const int64_t row_bytes = internal::Q8RowBytes(kCols);
  std::vector<uint8_t> scratch(static_cast<size_t>(rows * row_bytes));
  PrepareActivationRows(DetectIsa(), kActivationQ8_0 | kActivationQ8K, x.data(), kCols, 0, rows,
                        scratch.data());
  for (int64_t r = 0; r < rows; ++r) {
    const float* v = x.data() + r * kCols;
    const uint8_t* row = scratch.data() + r * row_bytes;
    const std::vector<uint8_t> q8 = reference::QuantizeQ8_0Naive(v, kCols);
    for (size_t i = 0; i < q8.size(); ++i) ASSERT_EQ(row[i], q8[i]) << "row " << r << " byte " << i;
    const auto* q8k = reinterpret_cast<const int8_t*>(row + internal::Q8KValuesOffset(kCols));
    for (int64_t b = 0; b < kCols / 256; ++b) {
      float amax = 0.0f;
      for (int i = 0; i < 256; ++i) amax = std::max(amax, std::fabs(v[256 * b + i]));
      const float id = amax > 0.0f ? 127.0f / amax : 0.0f;
      for (int i = 0; i < 256; ++i) {
        const float want = std::clamp(std::round(v[256 * b + i] * id), -127.0f, 127.0f);
        ASSERT_EQ(q8k[256 * b + i], static_cast<int8_t>(want))
            << "row " << r << " value " << 256 * b + i << " = " << v[256 * b + i];
      }
    }
  }
}

TEST(QuantizeTest, Q4_0RoundTripWithinHalfStepExceptTopClamp) {
  const std::vector<float> x = RandomFloats(32 * 64, 22, -5.0f, 5.0f);
  std::vector<uint8_t> q(TensorBytes(TensorType::kQ4_0, x.size()));
  QuantizeRow(TensorType::kQ4_0, x.data(), static_cast<int64_t>(x.size()), q.data());
  TensorView view{.name = "q",
                  .type = TensorType::kQ4_0,
                  .shape = {1, int64_t(x.size())},
                  .data = q.data(),
                  .bytes = q.size()};
  std::vector<float> back(x.size());
  DequantizeRow(view, 0, back.data());
  for (size_t b = 0; b < x.size() / 32; ++b) {
    float max = 0.0f;
    for (int j = 0; j < 32; ++j) {
      if (std::fabs(x[b * 32 + j]) > std::fabs(max)) max = x[b * 32 + j];
    }
    const double d = max / -8.0f;
    const double d16 = HalfToFloat(reference::FloatToHalfNaive(static_cast<float>(d)));
    for (int j = 0; j < 32; ++j) {
      // q = x/d + 8 in [0, 16]; 16 clamps to 15, a full step off.
      const bool clamped = x[b * 32 + j] / d >= 7.5;
      const double tol = (clamped ? 1.0 : 0.5) * std::fabs(d) + 8.0 * std::fabs(d - d16) + 1e-7;
      ASSERT_NEAR(back[b * 32 + j], x[b * 32 + j], tol) << "block " << b << " j=" << j;
    }
  }
}

// Pins the GGUF Q4_0 layout: x_j = j - 16, so max = -16, d = 2,
// q_j = int(x_j / 2 + 8.5) = (j + 1) / 2 and q_31 = 16 clamps to 15; byte i
// holds q_i in its low nibble and q_(i+16) in its high one.
TEST(QuantizeTest, Q4_0BlockLayout) {
  float x[32];
  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j - 16);
  uint8_t block[18];
  QuantizeRow(TensorType::kQ4_0, x, 32, block);
  EXPECT_EQ(LoadU16ForTest(block), 0x4000);  // f16 2.0
  EXPECT_EQ(block[2], 0x80);                 // q0 = 0, q16 = 8
  EXPECT_EQ(block[3], 0x91);                 // q1 = 1, q17 = 9
  EXPECT_EQ(block[17], 0xf8);                // q15 = 8, q31 = 15 (clamped)
}

TEST(QuantizeTest, Q8_0BlockLayout) {
  float x[32];
  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j) - 15.5f;  // max |x| = 15.5
  uint8_t block[34];
  QuantizeRow(TensorType::kQ8_0, x, 32, block);
  EXPECT_EQ(HalfToFloat(LoadU16ForTest(block)), HalfToFloat(FloatToHalf(15.5f / 127.0f)));
  EXPECT_EQ(static_cast<int8_t>(block[2]), -127);
  EXPECT_EQ(static_cast<int8_t>(block[33]), 127);
  EXPECT_EQ(static_cast<int8_t>(block[2 + 15]), -4);  // -0.5 * 127 / 15.5 = -4.097
}

// K-quants: the kernels' dequantization is the naive one, bit for bit, and
// quantizing loses what the format's precision says (RMS error over RMS of
// uniform [-1, 1) values; measured 0.061 Q4_K, 0.030 Q5_K, 0.015 Q6_K, near
// a uniform quantizer's step / sqrt(12) over 1 / sqrt(3)).
TEST(QuantizeTest, KQuantsRoundTrip) {
  const struct {
    TensorType type;
    double rms_bound;
  } cases[] = {{TensorType::kQ4_K, 0.07}, {TensorType::kQ5_K, 0.035}, {TensorType::kQ6_K, 0.016}};
  for (const auto& c : cases) {
    const int64_t rows = 3, cols = 512;
    const TestWeights w = MakeWeights(c.type, rows, cols, 29);
    const std::vector<float> values = RandomFloats(rows * cols, 29);
    ASSERT_EQ(w.bytes.size(), rows * TensorBytes(c.type, cols));
    double err2 = 0.0, x2 = 0.0;
    for (int64_t r = 0; r < rows; ++r) {
      std::vector<float> got(cols + 1, kPoison), want(cols);
      DequantizeRow(w.view, r, got.data());
      reference::DequantizeRowNaive(w.view, r, want.data());
      for (int64_t i = 0; i < cols; ++i) {
        ASSERT_EQ(Bits(got[i]), Bits(want[i])) << TensorTypeName(c.type) << " r=" << r;
        const double e = got[i] - values[r * cols + i];
        err2 += e * e;
        x2 += static_cast<double>(values[r * cols + i]) * values[r * cols + i];
      }
      EXPECT_TRUE(std::isnan(got[cols])) << "wrote past the row";
    }
    const double rms = std::sqrt(err2 / x2);
    std::printf("[ measured ] %s: relative RMS error %.3g\n", TensorTypeName(c.type), rms);
    EXPECT_LE(rms, c.rms_bound) << TensorTypeName(c.type);
    EXPECT_GT(rms, 0.0) << TensorTypeName(c.type);
  }
}

TEST(QuantizeTest, DequantizeRowMatchesNaiveForEveryType) {
  for (TensorType type : {TensorType::kF32, TensorType::kF16, TensorType::kBF16, TensorType::kQ8_0,
                          TensorType::kQ4_0}) {
    const TestWeights w = MakeWeights(type, 5, 96, 23);
    for (int64_t r = 0; r < 5; ++r) {
      std::vector<float> got(97, kPoison), want(96);
      DequantizeRow(w.view, r, got.data());
      reference::DequantizeRowNaive(w.view, r, want.data());
      for (size_t i = 0; i < want.size(); ++i) {
        ASSERT_EQ(Bits(got[i]), Bits(want[i])) << TensorTypeName(type) << " r=" << r;
      }
      EXPECT_TRUE(std::isnan(got[96])) << "wrote past the row";
    }
  }
}

}  // namespace
}  // namespace tokenmill::devices::cpu::testing
