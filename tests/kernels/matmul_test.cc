// MatMulRows on every ISA and weight type against the naive reference:
// shape classes (cols 32, 64, 224, 4128; rows 1, 7, 64; M 1..33), row ranges that
// start and end mid-matrix, outputs poisoned with NaN.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "devices/cpu/kernels.h"
#include "devices/cpu/kernels_internal.h"
#include "tests/kernels/kernel_test_util.h"
#include "tests/reference/naive_ops.h"

namespace tokenmill::devices::cpu::testing {
namespace {

// F32/F16/BF16 weights convert exactly to f32, so the only error is f32
// accumulation (at most ~70 terms per lane plus the lane sum): far below
// 1e-5 of the sum of |w_k x_k|.
constexpr double kFloatTol = 1e-5;
// Q8_0/Q4_0 against the naive dot of the same dequantized weights and
// dequantized Q8 activations: the int8 block dots are exact, leaving one
// rounding of d_w * d_x and the f32 accumulation.
constexpr double kQuantTol = 1e-5;
// Q8_0/Q4_0 against the f32 activations: each activation moves by at most
// d/2 from rounding plus 127 * |d - f16(d)| from storing d as f16, with
// d = max|x_block| / 127, so |error| <= sum_b sum_k |w_k| * that bound.
// QuantizationBound() computes it exactly per output; this slack covers f32.
constexpr double kQuantSlack = 1.001;

bool IsQuantized(TensorType t) { return t == TensorType::kQ8_0 || t == TensorType::kQ4_0; }

struct Shape {
  int64_t rows;
  int64_t cols;
  int64_t m;
};

std::vector<Shape> Shapes() {
  std::vector<Shape> shapes;
  // 224 = 7 blocks: the AVX-512 VNNI kernel's four-block, two-block and
  // one-block steps in one row (4128 = 129 blocks: four-block steps + one).
  for (int64_t cols : {32, 64, 224, 4096 + 32}) {
    for (int64_t rows : {1, 7, 64}) {
      for (int64_t m : {1, 2, 3, 4, 5, 16, 33}) {
        // The widest rows with the most activation rows cost the most under
        // ASan; 16 and 33 are covered on the narrower shapes.
        if (cols > 64 && rows == 64 && m > 5) continue;
        shapes.push_back({rows, cols, m});
      }
    }
  }
  shapes.push_back({64, 4096 + 32, 16});
  // The batched Q8_0 kernel (16-row weight tiles, from 6 activation rows in
  // groups of at most 16): tiles plus leftover rows, ranges that start
  // mid-tile, the smallest group and an uneven split (17 = 9 + 8).
  shapes.push_back({40, 224, 6});
  shapes.push_back({40, 224, 17});
  shapes.push_back({48, 96, 16});
  return shapes;
}

// Per-block bound of the activation quantization error (see kQuantSlack).
std::vector<double> QuantizationBound(const std::vector<float>& w, const float* x, int64_t rows,
                                      int64_t cols) {
  std::vector<double> bound(static_cast<size_t>(rows), 0.0);
  for (int64_t b = 0; b < cols / 32; ++b) {
    float amax = 0.0f;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[b * 32 + j]));
    const float d = amax / 127.0f;
    const double d16 = reference::HalfToFloatNaive(reference::FloatToHalfNaive(d));
    const double per_element = d / 2.0 + 127.0 * std::fabs(d - d16);
    for (int64_t r = 0; r < rows; ++r) {
      double wsum = 0.0;
      for (int j = 0; j < 32; ++j) wsum += std::fabs(w[r * cols + b * 32 + j]);
      bound[static_cast<size_t>(r)] += wsum * per_element;
    }
  }
  return bound;
}

std::vector<double> L1(const std::vector<float>& w, const float* x, int64_t rows, int64_t cols) {
  std::vector<double> l1(static_cast<size_t>(rows), 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t k = 0; k < cols; ++k) {
      l1[static_cast<size_t>(r)] += std::fabs(static_cast<double>(w[r * cols + k]) * x[k]);
    }
  }
  return l1;
}

class MatMulTest : public ::testing::TestWithParam<TensorType> {};

TEST_P(MatMulTest, MatchesNaiveOnEveryIsaAndShape) {
  const TensorType type = GetParam();
  uint32_t seed = 1;
  for (const Shape& s : Shapes()) {
    SCOPED_TRACE("rows=" + std::to_string(s.rows) + " cols=" + std::to_string(s.cols) +
                 " m=" + std::to_string(s.m));
    const TestWeights w = MakeWeights(type, s.rows, s.cols, seed++);
    const std::vector<float> wf = reference::DequantizeTensor(w.view);
    const std::vector<float> x = RandomFloats(s.m * s.cols, seed++, -2.0f, 2.0f);

    // What the kernel should see as activations: f32, or Q8_0 dequantized.
    std::vector<float> xq = x;
    if (IsQuantized(type)) {
      for (int64_t m = 0; m < s.m; ++m) {
        std::vector<uint8_t> q8 = reference::QuantizeQ8_0Naive(x.data() + m * s.cols, s.cols);
        TensorView view{.name = "x",
                        .type = TensorType::kQ8_0,
                        .shape = {1, s.cols},
                        .data = q8.data(),
                        .bytes = q8.size()};
        reference::DequantizeRowNaive(view, 0, xq.data() + m * s.cols);
      }
    }
    std::vector<std::vector<double>> want, l1, want_f32, q_bound;
    for (int64_t m = 0; m < s.m; ++m) {
      const float* xm = xq.data() + m * s.cols;
      want.push_back(reference::MatVecNaiveF64(wf.data(), s.rows, s.cols, xm));
      l1.push_back(L1(wf, xm, s.rows, s.cols));
      if (IsQuantized(type)) {
        const float* xf = x.data() + m * s.cols;
        want_f32.push_back(reference::MatVecNaiveF64(wf.data(), s.rows, s.cols, xf));
        q_bound.push_back(QuantizationBound(wf, xf, s.rows, s.cols));
      }
    }

    for (Isa isa : IsasToTest()) {
      SCOPED_TRACE(IsaName(isa));
      std::vector<uint8_t> scratch(ActivationScratchBytes(type, s.m, s.cols));
      PrepareActivationRows(isa, type, x.data(), s.cols, 0, s.m, scratch.data());
      if (IsQuantized(type)) {
        // The kernels' Q8 activations are exactly the naive quantization.
        for (int64_t m = 0; m < s.m; ++m) {
          const std::vector<uint8_t> q8 =
              reference::QuantizeQ8_0Naive(x.data() + m * s.cols, s.cols);
          const size_t row_bytes = scratch.size() / static_cast<size_t>(s.m);
          ASSERT_TRUE(std::equal(q8.begin(), q8.end(), scratch.begin() + m * row_bytes));
        }
      }
      const Activations act = BindActivations(type, x.data(), s.m, s.cols, scratch.data());
      // Full range, and a range that starts and ends mid-matrix.
      const std::vector<std::pair<int64_t, int64_t>> ranges = {
          {0, s.rows}, {s.rows / 3, std::max(s.rows / 3 + 1, 2 * s.rows / 3 + 1)}};
      for (const auto& [begin, end] : ranges) {
        const int64_t stride = s.rows + 3;
        std::vector<float> y(static_cast<size_t>(s.m * stride), kPoison);
        MatMulRows(isa, w.view, begin, end, act, y.data(), stride);
        for (int64_t m = 0; m < s.m; ++m) {
          for (int64_t n = 0; n < stride; ++n) {
            const float got = y[static_cast<size_t>(m * stride + n)];
            if (n < begin || n >= end) {
              ASSERT_TRUE(std::isnan(got)) << "wrote outside rows at m=" << m << " n=" << n;
              continue;
            }
            const size_t i = static_cast<size_t>(n);
            const double tol = (IsQuantized(type) ? kQuantTol : kFloatTol) * l1[m][i] + 1e-30;
            ASSERT_NEAR(got, want[m][i], tol) << "m=" << m << " n=" << n;
            if (IsQuantized(type)) {
              ASSERT_NEAR(got, want_f32[m][i], kQuantSlack * q_bound[m][i] + tol)
                  << "m=" << m << " n=" << n;
            }
          }
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllTypes, MatMulTest,
                         ::testing::Values(TensorType::kF32, TensorType::kF16, TensorType::kBF16,
                                           TensorType::kQ8_0, TensorType::kQ4_0),
                         [](const ::testing::TestParamInfo<TensorType>& info) {
                           return std::string(TensorTypeName(info.param));
                         });

// x rounded through Q8_K blocks of 256, written out here from the format's
// definition: d = max|x| / 127 (f32), q = round-half-away(x * 127 / max|x|).
std::vector<float> RoundThroughQ8K(const std::vector<float>& x) {
  std::vector<float> out(x.size());
  for (size_t b = 0; b < x.size() / 256; ++b) {
    float amax = 0.0f;
    for (size_t i = 0; i < 256; ++i) amax = std::max(amax, std::fabs(x[256 * b + i]));
    const float d = amax / 127.0f, id = amax > 0.0f ? 127.0f / amax : 0.0f;
    for (size_t i = 0; i < 256; ++i) out[256 * b + i] = d * std::round(x[256 * b + i] * id);
  }
  return out;
}

// K-quant weights (rows of whole 256-value super-blocks) on every ISA against
// the naive dot of the naively dequantized weights and the activations
// rounded through Q8_K: the integer dots are exact; what is left is f32
// rounding of the per-super-block d x sum terms, which carry each sub-block's
// offset (Q4_K/Q5_K store w + min as unsigned values, Q6_K w + 32), so the
// bound is on the sum of |w x| plus |x| (measured <= 3e-8 of it).
constexpr double kKQuantTol = 1e-6;

class KQuantMatMulTest : public ::testing::TestWithParam<TensorType> {};

TEST_P(KQuantMatMulTest, MatchesNaiveOnEveryIsaAndShape) {
  const TensorType type = GetParam();
  uint32_t seed = 100;
  double worst = 0.0;
  // 2304 = 9 super-blocks: one more than the kernels unpack at a time.
  for (int64_t cols : {256, 512, 2304}) {
    for (int64_t rows : {1, 7, 33}) {
      // 13 = 8 + 4 + 1 and 16 = 2 x 8: every row group the kernels take.
      for (int64_t m : {1, 13, 16}) {
        SCOPED_TRACE("rows=" + std::to_string(rows) + " cols=" + std::to_string(cols) +
                     " m=" + std::to_string(m));
        const TestWeights w = MakeWeights(type, rows, cols, seed++);
        const std::vector<float> wf = reference::DequantizeTensor(w.view);
        const std::vector<float> x = RandomFloats(m * cols, seed++, -2.0f, 2.0f);
        const std::vector<float> xq = RoundThroughQ8K(x);
        for (Isa isa : IsasToTest()) {
          SCOPED_TRACE(IsaName(isa));
          std::vector<uint8_t> scratch(ActivationScratchBytes(type, m, cols));
          ASSERT_FALSE(scratch.empty());
          PrepareActivationRows(isa, type, x.data(), cols, 0, m, scratch.data());
          const Activations act = BindActivations(type, x.data(), m, cols, scratch.data());
          std::vector<float> y(static_cast<size_t>(m * rows), kPoison);
          MatMulRows(isa, w.view, 0, rows, act, y.data(), rows);
          for (int64_t i = 0; i < m; ++i) {
            const float* xi = xq.data() + i * cols;
            const std::vector<double> want = reference::MatVecNaiveF64(wf.data(), rows, cols, xi);
            const std::vector<double> l1 = L1(wf, xi, rows, cols);
            for (int64_t n = 0; n < rows; ++n) {
              double offset = 0.0;
              for (int64_t k = 0; k < cols; ++k) {
                offset += std::fabs(static_cast<double>(xi[k]));
              }
              const double scale = l1[static_cast<size_t>(n)] + offset;
              const double err =
                  std::fabs(y[static_cast<size_t>(i * rows + n)] - want[static_cast<size_t>(n)]);
              worst = std::max(worst, err / scale);
              ASSERT_LE(err, kKQuantTol * scale) << "m=" << i << " n=" << n;
            }
          }
        }
      }
    }
  }
  std::printf("[ measured ] %s: max error %.3g of sum |w x| + |x|\n", TensorTypeName(type), worst);
}

INSTANTIATE_TEST_SUITE_P(KQuants, KQuantMatMulTest,
                         ::testing::Values(TensorType::kQ4_K, TensorType::kQ5_K, TensorType::kQ6_K),
                         [](const ::testing::TestParamInfo<TensorType>& info) {
                           return std::string(TensorTypeName(info.param));
                         });

// Batch sizes around every K-quant batch threshold (AVX-512 and AVX2), plus
// grouped ones (groups of up to 16: 17 = 8 + 9, 35 = 11 + 12 + 12).
std::vector<int64_t> KBatchSizes() {
  std::vector<int64_t> sizes = {16, 17, 35};
  for (int64_t t :
       {internal::KBatchMinRows(TensorType::kQ4_K), internal::KBatchMinRows(TensorType::kQ5_K),
        internal::KBatchMinRows(TensorType::kQ6_K), internal::kKBatchMinRowsAvx2}) {
    for (int64_t m : {t - 1, t, t + 1}) {
      if (m >= 1 && std::find(sizes.begin(), sizes.end(), m) == sizes.end()) sizes.push_back(m);
    }
  }
  std::sort(sizes.begin(), sizes.end());
  return sizes;
}

// One activation row's outputs y[0, y_len) of a K-quant matmul over weight
// rows [begin, end): untouched (NaN) outside the range; inside, within
// kKQuantTol of `other` (another kernel's result for the row) and of the
// naive dot of the dequantized weights wf (rows x cols) with xi (the row
// rounded through Q8_K). *worst: the largest |y - other| seen, relative to
// sum |w x| + |x|.
void CheckKQuantRow(const float* y, const float* other, int64_t y_len, int64_t begin, int64_t end,
                    const std::vector<float>& wf, const float* xi, int64_t rows, int64_t cols,
                    double* worst) {
  const std::vector<double> want = reference::MatVecNaiveF64(wf.data(), rows, cols, xi);
  const std::vector<double> l1 = L1(wf, xi, rows, cols);
  double offset = 0.0;
  for (int64_t k = 0; k < cols; ++k) offset += std::fabs(static_cast<double>(xi[k]));
  for (int64_t n = 0; n < y_len; ++n) {
    if (n < begin || n >= end) {
      ASSERT_TRUE(std::isnan(y[n])) << "wrote outside rows at n=" << n;
      continue;
    }
    const double scale = l1[static_cast<size_t>(n)] + offset;
    const double vs_other = std::fabs(y[n] - other[n]);
    *worst = std::max(*worst, vs_other / scale);
    ASSERT_LE(vs_other, kKQuantTol * scale) << "range " << begin << ".." << end << " n=" << n;
    ASSERT_LE(std::fabs(y[n] - want[static_cast<size_t>(n)]), kKQuantTol * scale)
        << "range " << begin << ".." << end << " n=" << n;
  }
}

// From the batch threshold, K-quant weights take the batch kernel (AVX-512
// VNNI: 16 transposed weight rows per tile; AVX2: 8), leftover rows the
// per-row kernel; below, the per-row kernel. Each activation row of a batch
// must match what that row alone gets (the per-row kernel at M = 1) and the
// naive dot, for every type and ISA, at and around the thresholds, odd and
// grouped batch sizes, and row ranges that start mid-tile or leave rows over.
TEST(KQuantBatchTest, BatchedRowsMatchRowsAlone) {
  const int64_t rows = 50;
  uint32_t seed = 300;
  double worst = 0.0;
  for (TensorType type : {TensorType::kQ4_K, TensorType::kQ5_K, TensorType::kQ6_K}) {
    for (int64_t cols : {512, 2304}) {
      const TestWeights w = MakeWeights(type, rows, cols, seed++);
      const std::vector<float> wf = reference::DequantizeTensor(w.view);
      for (int64_t m : KBatchSizes()) {
        SCOPED_TRACE(std::string(TensorTypeName(type)) + " cols=" + std::to_string(cols) +
                     " m=" + std::to_string(m));
        const std::vector<float> x = RandomFloats(m * cols, seed++, -2.0f, 2.0f);
        const std::vector<float> xq = RoundThroughQ8K(x);
        for (Isa isa : IsasToTest()) {
          SCOPED_TRACE(IsaName(isa));
          std::vector<uint8_t> scratch(ActivationScratchBytes(type, m, cols));
          PrepareActivationRows(isa, type, x.data(), cols, 0, m, scratch.data());
          const size_t row_bytes = scratch.size() / static_cast<size_t>(m);
          for (const auto& [begin, end] :
               {std::pair<int64_t, int64_t>{0, rows}, {16, 48}, {3, rows}}) {
            std::vector<float> y(static_cast<size_t>(m * rows), kPoison);
            MatMulRows(isa, w.view, begin, end,
                       BindActivations(type, x.data(), m, cols, scratch.data()), y.data(), rows);
            for (int64_t i = 0; i < m; ++i) {
              std::vector<float> alone(static_cast<size_t>(rows), kPoison);
              MatMulRows(isa, w.view, begin, end,
                         BindActivations(type, x.data() + i * cols, 1, cols,
                                         scratch.data() + static_cast<size_t>(i) * row_bytes),
                         alone.data(), rows);
              SCOPED_TRACE("activation row " + std::to_string(i));
              ASSERT_NO_FATAL_FAILURE(CheckKQuantRow(y.data() + i * rows, alone.data(), rows, begin,
                                                     end, wf, xq.data() + i * cols, rows, cols,
                                                     &worst));
            }
          }
        }
      }
    }
  }
  std::printf("[ measured ] batched vs alone: max difference %.3g of sum |w x| + |x|\n", worst);
}

#if defined(TOKENMILL_KERNELS_X86)
// The AVX2 batch kernel called directly, as the dispatcher calls it for whole
// 8-row tiles (and as AVX-512 CPUs without VNNI get it), at every group size
// from 1 (also those below the threshold, where the dispatcher keeps the
// per-row kernel): each output against the scalar per-row kernel and the
// naive dot, rows outside the range left alone.
TEST(KQuantBatchTest, Avx2BatchKernelMatchesPerRowKernel) {
  if (!internal::HostCpuFeatures().avx2) GTEST_SKIP() << "this CPU has no AVX2";
  const int64_t rows = 24, y_stride = rows + 3;
  uint32_t seed = 500;
  double worst = 0.0;
  for (TensorType type : {TensorType::kQ4_K, TensorType::kQ5_K, TensorType::kQ6_K}) {
    for (int64_t cols : {256, 2304}) {
      const TestWeights w = MakeWeights(type, rows, cols, seed++);
      const std::vector<float> wf = reference::DequantizeTensor(w.view);
      for (int64_t m : {1, 2, 3, 5, 8, 9, 13, 16, 17, 33}) {
        SCOPED_TRACE(std::string(TensorTypeName(type)) + " cols=" + std::to_string(cols) +
                     " m=" + std::to_string(m));
        const std::vector<float> x = RandomFloats(m * cols, seed++, -2.0f, 2.0f);
        const std::vector<float> xq = RoundThroughQ8K(x);
        std::vector<uint8_t> scratch(ActivationScratchBytes(type, m, cols));
        PrepareActivationRows(Isa::kAvx2, type, x.data(), cols, 0, m, scratch.data());
        const Activations act = BindActivations(type, x.data(), m, cols, scratch.data());
        std::vector<float> per_row(static_cast<size_t>(m * y_stride), kPoison);
        internal::scalar::MatMulKQuant(w.view, 0, rows, act, per_row.data(), y_stride);
        for (const auto& [begin, end] :
             {std::pair<int64_t, int64_t>{0, rows}, {8, rows}, {8, 16}}) {
          std::vector<float> y(static_cast<size_t>(m * y_stride), kPoison);
          internal::avx2::MatMulKBatch(w.view, begin, end, act, y.data(), y_stride);
          for (int64_t i = 0; i < m; ++i) {
            SCOPED_TRACE("activation row " + std::to_string(i));
            ASSERT_NO_FATAL_FAILURE(
                CheckKQuantRow(y.data() + i * y_stride, per_row.data() + i * y_stride, y_stride,
                               begin, end, wf, xq.data() + i * cols, rows, cols, &worst));
          }
        }
      }
    }
  }
  std::printf("[ measured ] AVX2 batch vs per-row: max difference %.3g of sum |w x| + |x|\n",
              worst);
}
#endif

// Threads prepare disjoint row ranges of one Activations: the result is the
// same as preparing all rows at once, and float weights need no scratch.
TEST(ActivationsTest, PreparedInPiecesEqualsWhole) {
  const int64_t rows = 5, cols = 96;
  const std::vector<float> x = RandomFloats(rows * cols, 7);
  for (TensorType type : {TensorType::kQ8_0, TensorType::kQ4_0}) {
    const size_t bytes = ActivationScratchBytes(type, rows, cols);
    // Per row: the Q8_0 blocks, then f32 scales and int32 corrections per
    // block, each part from a 64-byte boundary; then room for the Q8_K part
    // of one super-block (256 values, an f32 scale, 16 int16 sums, 16 f32 scaled sums).
    ASSERT_EQ(bytes, static_cast<size_t>(rows * (128 + 64 + 384)));
    // The same fill in both: the Q8_K part (cols not a multiple of 256) is
    // left as it was.
    std::vector<uint8_t> whole(bytes, 0xee), pieces(bytes, 0xee);
    PrepareActivationRows(DetectIsa(), type, x.data(), cols, 0, rows, whole.data());
    PrepareActivationRows(DetectIsa(), type, x.data(), cols, 0, 2, pieces.data());
    PrepareActivationRows(DetectIsa(), type, x.data(), cols, 2, rows, pieces.data());
    EXPECT_EQ(whole, pieces);
    const Activations a = BindActivations(type, x.data(), rows, cols, whole.data());
    EXPECT_EQ(a.q8, whole.data());
    EXPECT_EQ(a.f32, x.data());
    EXPECT_EQ(a.rows, rows);
    EXPECT_EQ(a.cols, cols);
  }
  for (TensorType type : {TensorType::kF32, TensorType::kF16, TensorType::kBF16}) {
    EXPECT_EQ(ActivationScratchBytes(type, rows, cols), 0u);
    EXPECT_EQ(BindActivations(type, x.data(), rows, cols, nullptr).q8, nullptr);
  }
}

// A prepared row holds the parts its readers need and nothing else: Q8_0 and
// Q4_0 weights' rows get no Q8_K part (and K-quants' no Q8_0 part), the other
// part's bytes are left as they were, and both parts together are the same
// bytes as each prepared alone.
TEST(ActivationsTest, PreparesOnlyTheNamedParts) {
  const int64_t rows = 3, cols = 512;
  const std::vector<float> x = RandomFloats(rows * cols, 9, -3.0f, 3.0f);
  const size_t bytes = ActivationScratchBytes(TensorType::kQ8_0, rows, cols);
  ASSERT_EQ(bytes, ActivationScratchBytes(TensorType::kQ6_K, rows, cols));
  const size_t row_bytes = bytes / rows;
  const size_t split = static_cast<size_t>(internal::Q8KValuesOffset(cols));
  auto prepare = [&](auto formats) {
    std::vector<uint8_t> out(bytes, 0xee);
    PrepareActivationRows(DetectIsa(), formats, x.data(), cols, 0, rows, out.data());
    return out;
  };
  const std::vector<uint8_t> both = prepare(kActivationQ8_0 | kActivationQ8K);
  const std::vector<uint8_t> q8_0 = prepare(uint32_t{kActivationQ8_0});
  const std::vector<uint8_t> q8k = prepare(uint32_t{kActivationQ8K});
  for (size_t r = 0; r < static_cast<size_t>(rows); ++r) {
    const auto row = [&](const std::vector<uint8_t>& v, size_t begin, size_t end) {
      return std::vector<uint8_t>(v.begin() + r * row_bytes + begin,
                                  v.begin() + r * row_bytes + end);
    };
    const std::vector<uint8_t> untouched_head(split, 0xee), untouched_tail(row_bytes - split, 0xee);
    EXPECT_EQ(row(q8_0, 0, split), row(both, 0, split)) << "row " << r;
    EXPECT_EQ(row(q8_0, split, row_bytes), untouched_tail) << "row " << r;
    EXPECT_EQ(row(q8k, split, row_bytes), row(both, split, row_bytes)) << "row " << r;
    EXPECT_EQ(row(q8k, 0, split), untouched_head) << "row " << r;
  }
  EXPECT_EQ(prepare(TensorType::kQ8_0), q8_0);
  EXPECT_EQ(prepare(TensorType::kQ4_0), q8_0);
  for (TensorType k : {TensorType::kQ4_K, TensorType::kQ5_K, TensorType::kQ6_K}) {
    EXPECT_EQ(prepare(k), q8k) << TensorTypeName(k);
  }
  for (TensorType f : {TensorType::kF32, TensorType::kF16, TensorType::kBF16}) {
    EXPECT_EQ(ActivationFormats(f), 0u) << TensorTypeName(f);
  }
}

// Batching is exact: multiplying M rows at once gives, per row, what M
// separate single-row calls give (on every ISA; tiles must not mix rows).
TEST(MatMulBatchTest, BatchOfRowsEqualsRowsOneByOne) {
  const int64_t rows = 9, cols = 128, m = 7;
  for (TensorType type : {TensorType::kF32, TensorType::kQ4_0}) {
    const TestWeights w = MakeWeights(type, rows, cols, 11);
    const std::vector<float> x = RandomFloats(m * cols, 12);
    std::vector<uint8_t> scratch(ActivationScratchBytes(type, m, cols));
    for (Isa isa : IsasToTest()) {
      PrepareActivationRows(isa, type, x.data(), cols, 0, m, scratch.data());
      std::vector<float> batched(static_cast<size_t>(m * rows), kPoison);
      MatMulRows(isa, w.view, 0, rows, BindActivations(type, x.data(), m, cols, scratch.data()),
                 batched.data(), rows);
      for (int64_t i = 0; i < m; ++i) {
        std::vector<float> single(static_cast<size_t>(rows), kPoison);
        const size_t row_bytes = scratch.size() / static_cast<size_t>(m);
        const uint8_t* q8 = scratch.empty() ? nullptr : scratch.data() + i * row_bytes;
        const Activations one = BindActivations(type, x.data() + i * cols, 1, cols, q8);
        MatMulRows(isa, w.view, 0, rows, one, single.data(), rows);
        for (int64_t n = 0; n < rows; ++n) {
          EXPECT_NEAR(single[static_cast<size_t>(n)], batched[static_cast<size_t>(i * rows + n)],
                      1e-5f)
              << IsaName(isa) << " " << TensorTypeName(type) << " m=" << i << " n=" << n;
        }
      }
    }
  }
}

// The executor's threads take whole 16-row granules of a matrix, so a row's
// result must not depend on how the rows are split: any split at granule
// boundaries gives the same bits as one call, for batch sizes on both sides
// of the kernels' grouping (1, uneven groups, several groups, two passes).
TEST(MatMulBatchTest, GranuleSplitsGiveTheSameBits) {
  const int64_t rows = 80, cols = 96;
  for (TensorType type :
       {TensorType::kF32, TensorType::kF16, TensorType::kBF16, TensorType::kQ8_0}) {
    const TestWeights w = MakeWeights(type, rows, cols, 21);
    for (int64_t m : {1, 7, 13, 16, 33}) {
      const std::vector<float> x = RandomFloats(m * cols, 22);
      std::vector<uint8_t> scratch(ActivationScratchBytes(type, m, cols));
      for (Isa isa : IsasToTest()) {
        PrepareActivationRows(isa, type, x.data(), cols, 0, m, scratch.data());
        const Activations act = BindActivations(type, x.data(), m, cols, scratch.data());
        std::vector<float> whole(static_cast<size_t>(m * rows), kPoison);
        MatMulRows(isa, w.view, 0, rows, act, whole.data(), rows);
        std::vector<float> split(static_cast<size_t>(m * rows), kPoison);
        for (const auto& [begin, end] : {std::pair<int64_t, int64_t>{0, 16}, {16, 48}, {48, 80}}) {
          MatMulRows(isa, w.view, begin, end, act, split.data(), rows);
        }
        for (size_t i = 0; i < whole.size(); ++i) {
          ASSERT_EQ(Bits(whole[i]), Bits(split[i]))
              << IsaName(isa) << " " << TensorTypeName(type) << " m=" << m << " i=" << i;
        }
      }
    }
  }
}

}  // namespace
}  // namespace tokenmill::devices::cpu::testing
