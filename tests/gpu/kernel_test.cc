// The matmul kernels (devices/cuda/core/matmul.h) against naive f64 loops
// over the same, exactly decoded, weights: GEMV for every weight type and
// shape class, MatMulRunner on both paths, the 16-bit conversions, Q8_0
// dequantization and the fills. Every output buffer is poisoned (0xFF, NaN)
// before the launch: an element left unwritten fails, and elements outside
// the output (stride gaps, a tail) must still hold the poison afterwards.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <limits>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "devices/cuda/core/layer_kernels.h"
#include "devices/cuda/core/matmul.h"
#include "tests/gpu/gpu_test.h"
#include "tests/gpu/test_util.h"
#include "tests/reference/naive_ops.h"

namespace tokenmill::gpu_test {
namespace {

using devices::cuda::core::kMaxGemvRows;
using devices::cuda::core::LaunchAddRmsNorm;
using devices::cuda::core::LaunchConvertRows;
using devices::cuda::core::LaunchDequantizeQ8_0ToBf16;
using devices::cuda::core::LaunchFillBytes;
using devices::cuda::core::LaunchFillSynthetic;
using devices::cuda::core::LaunchGemv;
using devices::cuda::core::MatMulRunner;
using devices::cuda::core::WeightTypeName;

constexpr WeightType kAllTypes[] = {WeightType::kF32, WeightType::kF16, WeightType::kBF16,
                                    WeightType::kQ8_0};

// y = W x for `tokens` rows of x (x_stride apart), in f64, packed tokens x
// rows; `floor` is the largest L2 norm of one sum's terms (the comparison's
// least denominator, see Compare).
struct MatmulReference {
  std::vector<double> y;
  double floor = 0.0;
};

MatmulReference ReferenceMatmul(const HostMatrix& w, const std::vector<float>& x, int64_t x_stride,
                                int64_t tokens) {
  MatmulReference ref;
  ref.y.resize(static_cast<size_t>(tokens * w.rows));
  for (int64_t t = 0; t < tokens; ++t) {
    const float* xt = x.data() + t * x_stride;
    for (int64_t r = 0; r < w.rows; ++r) {
      const float* wr = w.values.data() + r * w.cols;
      double sum = 0.0, squares = 0.0;
      for (int64_t k = 0; k < w.cols; ++k) {
        const double term = static_cast<double>(wr[k]) * static_cast<double>(xt[k]);
        sum += term;
        squares += term * term;
      }
      ref.y[static_cast<size_t>(t * w.rows + r)] = sum;
      ref.floor = std::max(ref.floor, std::sqrt(squares));
    }
  }
  return ref;
}

// `tokens` rows of activations, `cols` values each, x_stride apart; the gaps
// hold NaN, which a kernel reading past a row would spread into its output.
std::vector<float> Activations(int64_t tokens, int64_t cols, int64_t x_stride, uint64_t seed) {
  std::vector<float> x(static_cast<size_t>(tokens * x_stride), kNaN);
  const std::vector<float> values = RandomFloats(static_cast<size_t>(tokens * cols), 1.0f, seed);
  for (int64_t t = 0; t < tokens; ++t) {
    std::memcpy(x.data() + t * x_stride, values.data() + t * cols,
                static_cast<size_t>(cols) * sizeof(float));
  }
  return x;
}

// y holds `tokens` rows of `stride` floats: the first `width` of each are
// compared with ref (tokens x width, packed), the rest must still be poison.
CheckResult CheckStrided(const std::vector<float>& y, int64_t tokens, int64_t width, int64_t stride,
                         std::span<const double> ref, double tolerance, double floor) {
  std::vector<float> packed;
  int64_t overwritten = 0;
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t i = 0; i < stride; ++i) {
      const float v = y[static_cast<size_t>(t * stride + i)];
      if (i < width) {
        packed.push_back(v);
      } else if (!IsPoison(v)) {
        ++overwritten;
      }
    }
  }
  if (overwritten > 0) {
    return {false, std::to_string(overwritten) + " elements outside the output were written"};
  }
  return CheckClose(packed, ref.first(packed.size()), tolerance, floor);
}

// The 16-bit buffer's first `expected.size()` values equal `expected` bit
// for bit, and the `tail` values after them are still poison.
CheckResult CheckBits16(const std::vector<uint16_t>& got, const std::vector<uint16_t>& expected,
                        size_t tail) {
  size_t wrong = 0, first = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    if (got[i] != expected[i] && wrong++ == 0) first = i;
  }
  if (wrong > 0) {
    char text[200];
    std::snprintf(text, sizeof(text), "%zu of %zu values differ, first at %zu: 0x%04x vs 0x%04x",
                  wrong, expected.size(), first, got[first], expected[first]);
    return {false, text};
  }
  for (size_t i = expected.size(); i < expected.size() + tail; ++i) {
    if (got[i] != kPoison16Bits) return {false, "the tail after the output was written"};
  }
  return {};
}

// GEMV, y = W x for 1..kMaxGemvRows tokens, every weight type, output rows
// 1, 7, 96, 1000 and columns 32, 256, 608 (a multiple of 32, not of 256) and
// 4096, strides wider than the rows; each also launched with Programmatic
// Dependent Launch. Tolerance: GemvTolerance (f32: 1e-4,
// f16: 1e-3, bf16: 1e-2, Q8_0: 1e-3); the weights are exact, so only the
// summation order differs from the f64 reference.
GPU_TEST(Gemv, EveryTypeAndShape) {
  CudaStream stream;
  GPU_ASSERT_CUDA(stream.Create());
  uint64_t seed = 1;
  for (WeightType type : kAllTypes) {
    for (int64_t rows : {1, 7, 96, 1000}) {
      for (int64_t cols : {32, 256, 608, 4096}) {
        const HostMatrix w =
            MakeHostMatrix(type, rows, cols, std::sqrt(3.0f / static_cast<float>(cols)), ++seed);
        UploadedMatrix dw;
        GPU_ASSERT_CUDA(UploadMatrix(w, &dw));
        const int64_t x_stride = cols + 8, y_stride = rows + 3;
        const std::vector<float> x = Activations(kMaxGemvRows, cols, x_stride, ++seed);
        const MatmulReference ref = ReferenceMatmul(w, x, x_stride, kMaxGemvRows);
        DeviceBuffer dx, dy;
        GPU_ASSERT_CUDA(UploadVector(x, &dx));
        GPU_ASSERT_CUDA(dy.Allocate(static_cast<size_t>(kMaxGemvRows * y_stride) * 4));
        for (int launch = 0; launch < 2 * kMaxGemvRows; ++launch) {
          const int tokens = launch % kMaxGemvRows + 1;
          const bool programmatic = launch >= kMaxGemvRows;
          GPU_ASSERT_CUDA(dy.Fill(kPoisonByte));
          LaunchGemv(dw.matrix, dx.as<float>(), x_stride, tokens, dy.as<float>(), y_stride,
                     stream.get(), programmatic);
          GPU_ASSERT_CUDA(Finish(stream.get()));
          std::vector<float> y;
          GPU_ASSERT_CUDA(DownloadVector(dy, static_cast<size_t>(tokens * y_stride), &y));
          const CheckResult check =
              CheckStrided(y, tokens, rows, y_stride, ref.y, GemvTolerance(type), ref.floor);
          GPU_EXPECT_CHECK(check) << WeightTypeName(type) << " " << rows << "x" << cols << ", "
                                  << tokens << " tokens"
                                  << (programmatic ? ", programmatic launch" : "");
          if (!check.ok) break;  // one line per shape is enough
        }
      }
    }
  }
}

// Programmatic Dependent Launch: an RMSNorm (which lets the next kernel
// launch early) writes the GEMV's activations into a poisoned buffer, and the
// programmatic GEMV right after it must wait for it: its output equals, bit
// for bit, the same pair launched without the attribute, and has no NaN.
GPU_TEST(Gemv, ProgrammaticLaunchWaitsForThePreviousKernel) {
  CudaStream stream;
  GPU_ASSERT_CUDA(stream.Create());
  constexpr int64_t kRows = 4096, kCols = 4096;
  uint64_t seed = 900;
  for (WeightType type : kAllTypes) {
    const HostMatrix w = MakeHostMatrix(type, kRows, kCols, 0.03f, ++seed);
    UploadedMatrix dw;
    GPU_ASSERT_CUDA(UploadMatrix(w, &dw));
    const std::vector<float> raw = Activations(kMaxGemvRows, kCols, kCols, ++seed);
    const std::vector<float> ones(static_cast<size_t>(kCols), 1.0f);
    DeviceBuffer draw, dones, dx, dy;
    GPU_ASSERT_CUDA(UploadVector(raw, &draw));
    GPU_ASSERT_CUDA(UploadVector(ones, &dones));
    GPU_ASSERT_CUDA(dx.Allocate(raw.size() * 4));
    GPU_ASSERT_CUDA(dy.Allocate(static_cast<size_t>(kMaxGemvRows * kRows) * 4));
    for (int tokens : {1, 4, 5, 8}) {
      std::vector<float> y[2];
      for (int programmatic = 0; programmatic < 2; ++programmatic) {
        GPU_ASSERT_CUDA(dx.Fill(kPoisonByte));
        GPU_ASSERT_CUDA(dy.Fill(kPoisonByte));
        LaunchAddRmsNorm(draw.as<float>(), nullptr, dones.as<float>(), nullptr, tokens, kCols,
                         1e-5f, dx.as<float>(), stream.get());
        LaunchGemv(dw.matrix, dx.as<float>(), kCols, tokens, dy.as<float>(), kRows, stream.get(),
                   programmatic == 1);
        GPU_ASSERT_CUDA(Finish(stream.get()));
        GPU_ASSERT_CUDA(DownloadVector(dy, static_cast<size_t>(tokens * kRows), &y[programmatic]));
      }
      const bool finite =
          std::all_of(y[1].begin(), y[1].end(), [](float v) { return std::isfinite(v); });
      GPU_EXPECT(finite) << WeightTypeName(type) << ", " << tokens
                         << " tokens: the GEMV read activations before the norm wrote them";
      GPU_EXPECT(std::memcmp(y[0].data(), y[1].data(), y[0].size() * 4) == 0)
          << WeightTypeName(type) << ", " << tokens << " tokens: differs from a plain launch";
    }
  }
}

// MatMulRunner on the GEMV path (up to kMaxGemvRows activation rows), the
// cuBLAS path (forced, and by row count) for 1, 8, 9, 33 and 100 rows, every
// type; Q8_0 with a dequantization scratch of three rows and a bit, so that
// cuBLAS runs the matrix in many chunks. Tolerances: GemvTolerance on the
// GEMV path, GemmTolerance on cuBLAS (activations rounded to the weight's
// 16-bit type, Q8_0 as bf16: 1e-2).
GPU_TEST(MatMulRunner, BothPathsEveryType) {
  CudaStream stream;
  GPU_ASSERT_CUDA(stream.Create());
  constexpr int64_t kMaxRows = 100, kMaxCols = 4096;
  using Path = MatMulRunner::Path;
  uint64_t seed = 100;
  for (WeightType type : kAllTypes) {
    for (auto [out_rows, cols] : {std::pair<int64_t, int64_t>{200, 608}, {96, 4096}}) {
      const HostMatrix w =
          MakeHostMatrix(type, out_rows, cols, std::sqrt(3.0f / static_cast<float>(cols)), ++seed);
      UploadedMatrix dw;
      GPU_ASSERT_CUDA(UploadMatrix(w, &dw));
      const size_t dequant = type == WeightType::kQ8_0 ? static_cast<size_t>(3 * cols + 7) : 0;
      std::unique_ptr<MatMulRunner> runner;
      GPU_ASSERT_OK(MatMulRunner::Create(stream.get(), kMaxRows, kMaxCols, dequant, &runner));
      const int64_t x_stride = cols + 8, y_stride = out_rows + 3;
      const std::vector<float> x = Activations(kMaxRows, cols, x_stride, ++seed);
      const MatmulReference ref = ReferenceMatmul(w, x, x_stride, kMaxRows);
      DeviceBuffer dx, dy;
      GPU_ASSERT_CUDA(UploadVector(x, &dx));
      GPU_ASSERT_CUDA(dy.Allocate(static_cast<size_t>(kMaxRows * y_stride) * 4));
      for (Path path : {Path::kGemv, Path::kGemm, Path::kAuto}) {
        for (int64_t rows : {1, 8, 9, 33, 100}) {
          if (path == Path::kGemv && rows > kMaxGemvRows) continue;
          const bool gemm = path == Path::kGemm || (path == Path::kAuto && rows > kMaxGemvRows);
          runner->set_path_for_testing(path);
          GPU_ASSERT_CUDA(dy.Fill(kPoisonByte));
          GPU_ASSERT_OK(
              runner->MatMul(dw.matrix, dx.as<float>(), x_stride, rows, dy.as<float>(), y_stride));
          GPU_ASSERT_CUDA(Finish(stream.get()));
          std::vector<float> y;
          GPU_ASSERT_CUDA(DownloadVector(dy, static_cast<size_t>(rows * y_stride), &y));
          GPU_EXPECT_CHECK(CheckStrided(y, rows, out_rows, y_stride, ref.y,
                                        gemm ? GemmTolerance(type) : GemvTolerance(type),
                                        ref.floor))
              << WeightTypeName(type) << " " << out_rows << "x" << cols << ", " << rows << " rows, "
              << (gemm ? "cuBLAS" : "GEMV") << " path"
              << (path == Path::kAuto ? " (auto)" : " (forced)");
        }
      }
    }
  }
}

// MatMul refuses more rows or wider matrices than Create() sized for.
GPU_TEST(MatMulRunner, RefusesWhatItWasNotSizedFor) {
  CudaStream stream;
  GPU_ASSERT_CUDA(stream.Create());
  std::unique_ptr<MatMulRunner> runner;
  GPU_ASSERT_OK(MatMulRunner::Create(stream.get(), 16, 256, 0, &runner));
  const HostMatrix narrow = MakeHostMatrix(WeightType::kF16, 64, 256, 0.1f, 1);
  const HostMatrix wide = MakeHostMatrix(WeightType::kF16, 64, 512, 0.1f, 2);
  UploadedMatrix dnarrow, dwide;
  GPU_ASSERT_CUDA(UploadMatrix(narrow, &dnarrow));
  GPU_ASSERT_CUDA(UploadMatrix(wide, &dwide));
  DeviceBuffer dx, dy;
  GPU_ASSERT_CUDA(dx.Allocate(32 * 512 * 4));
  GPU_ASSERT_CUDA(dy.Allocate(32 * 64 * 4));
  GPU_EXPECT_CODE(runner->MatMul(dnarrow.matrix, dx.as<float>(), 256, 17, dy.as<float>(), 64),
                  GpuCode::kInvalidArgument);
  GPU_EXPECT_CODE(runner->MatMul(dwide.matrix, dx.as<float>(), 512, 4, dy.as<float>(), 64),
                  GpuCode::kInvalidArgument);
  GPU_EXPECT_CUDA(Finish(stream.get()));
}

// f32 rows (x_stride apart, NaN in the gaps) to packed f16 / bf16, bit for
// bit what round-to-nearest-even gives (the naive conversions), including
// ties, overflow to infinity, f16 subnormals and signed zero.
GPU_TEST(ConvertRows, RoundToNearestEvenBitExact) {
  CudaStream stream;
  GPU_ASSERT_CUDA(stream.Create());
  constexpr int64_t kRows = 5, kCols = 200, kStride = 208, kTail = 16;
  std::vector<float> x = Activations(kRows, kCols, kStride, 7);
  for (float& v : x) v *= 4.0f;  // NaN gaps stay NaN
  const float specials[] = {0.0f,
                            -0.0f,
                            1.0f + 0x1p-11f,  // f16 tie: to 1
                            1.0f + 0x3p-11f,  // f16 tie: up to 1 + 2^-9
                            1.0f + 0x1p-8f,   // bf16 tie: to 1
                            1.0f + 0x3p-8f,   // bf16 tie: up to 1 + 2^-6
                            65504.0f,
                            65520.0f,  // f16: halfway to 65536, rounds to infinity
                            -70000.0f,
                            1e-6f,  // f16 subnormal
                            6.1e-5f,
                            -3.0e38f,
                            std::numeric_limits<float>::infinity()};
  for (size_t i = 0; i < std::size(specials); ++i) x[i] = specials[i];
  DeviceBuffer dx, dout;
  GPU_ASSERT_CUDA(UploadVector(x, &dx));
  GPU_ASSERT_CUDA(dout.Allocate(static_cast<size_t>(kRows * kCols + kTail) * 2));
  for (WeightType type : {WeightType::kF16, WeightType::kBF16}) {
    GPU_ASSERT_CUDA(dout.Fill(kPoisonByte));
    LaunchConvertRows(dx.as<float>(), kStride, kRows, kCols, type, dout.get(), stream.get());
    GPU_ASSERT_CUDA(Finish(stream.get()));
    std::vector<uint16_t> got;
    GPU_ASSERT_CUDA(DownloadVector(dout, static_cast<size_t>(kRows * kCols + kTail), &got));
    std::vector<uint16_t> expected;
    for (int64_t r = 0; r < kRows; ++r) {
      for (int64_t c = 0; c < kCols; ++c) {
        const float v = x[static_cast<size_t>(r * kStride + c)];
        expected.push_back(type == WeightType::kF16 ? reference::FloatToHalfNaive(v)
                                                    : reference::FloatToBf16Naive(v));
      }
    }
    GPU_EXPECT_CHECK(CheckBits16(got, expected, kTail)) << WeightTypeName(type);
  }
}

// Rows of a Q8_0 matrix to bf16: scale x quant is exact in f32, so the
// result is that product rounded to nearest even, bit for bit.
GPU_TEST(DequantizeQ8_0ToBf16, RowRangesBitExact) {
  CudaStream stream;
  GPU_ASSERT_CUDA(stream.Create());
  constexpr int64_t kRows = 20, kCols = 96, kTail = 16;
  const HostMatrix w = MakeHostMatrix(WeightType::kQ8_0, kRows, kCols, 1.5f, 11);
  UploadedMatrix dw;
  GPU_ASSERT_CUDA(UploadMatrix(w, &dw));
  DeviceBuffer dout;
  GPU_ASSERT_CUDA(dout.Allocate(static_cast<size_t>(kRows * kCols + kTail) * 2));
  for (auto [begin, end] : {std::pair<int64_t, int64_t>{0, kRows}, {3, 17}, {19, 20}}) {
    GPU_ASSERT_CUDA(dout.Fill(kPoisonByte));
    LaunchDequantizeQ8_0ToBf16(dw.matrix, begin, end, dout.as<uint16_t>(), stream.get());
    GPU_ASSERT_CUDA(Finish(stream.get()));
    const size_t n = static_cast<size_t>((end - begin) * kCols);
    std::vector<uint16_t> got;
    GPU_ASSERT_CUDA(DownloadVector(dout, n + kTail, &got));
    std::vector<uint16_t> expected(n);
    for (size_t i = 0; i < n; ++i) {
      expected[i] = reference::FloatToBf16Naive(w.values[static_cast<size_t>(begin * kCols) + i]);
    }
    GPU_EXPECT_CHECK(CheckBits16(got, expected, kTail)) << "rows [" << begin << ", " << end << ")";
  }
}

// The element of a synthetic fill as f32 (Q8_0: scale x quant).
float SyntheticValue(WeightType type, const std::vector<uint8_t>& data,
                     const std::vector<uint16_t>& scales, size_t i) {
  switch (type) {
    case WeightType::kF32: {
      float v;
      std::memcpy(&v, data.data() + 4 * i, 4);
      return v;
    }
    case WeightType::kF16:
    case WeightType::kBF16: {
      uint16_t bits;
      std::memcpy(&bits, data.data() + 2 * i, 2);
      return type == WeightType::kF16 ? reference::HalfToFloatNaive(bits)
                                      : reference::Bf16ToFloatNaive(bits);
    }
    case WeightType::kQ8_0:
      return reference::HalfToFloatNaive(scales[i / 32]) *
             static_cast<float>(static_cast<int8_t>(data[i]));
  }
  return kNaN;
}

// Synthetic benchmark weights: finite, within about the amplitude (1.25x
// allowed), not constant, and the same for the same seed.
GPU_TEST(FillSynthetic, FiniteBoundedDeterministic) {
  CudaStream stream;
  GPU_ASSERT_CUDA(stream.Create());
  constexpr int64_t kElements = 8192;
  constexpr float kAmplitude = 0.05f;
  for (WeightType type : kAllTypes) {
    const size_t element_bytes = devices::cuda::core::WeightElementBytes(type);
    std::vector<uint8_t> first;
    for (int run = 0; run < 2; ++run) {
      DeviceBuffer data, scales;
      GPU_ASSERT_CUDA(data.Allocate(kElements * element_bytes));
      GPU_ASSERT_CUDA(scales.Allocate(kElements / 32 * 2));
      GPU_ASSERT_CUDA(data.Fill(kPoisonByte));
      GPU_ASSERT_CUDA(scales.Fill(kPoisonByte));
      LaunchFillSynthetic(type, data.get(),
                          type == WeightType::kQ8_0 ? scales.as<uint16_t>() : nullptr, kElements,
                          kAmplitude, 42, stream.get());
      GPU_ASSERT_CUDA(Finish(stream.get()));
      std::vector<uint8_t> bytes;
      std::vector<uint16_t> scale_bits;
      GPU_ASSERT_CUDA(DownloadVector(data, kElements * element_bytes, &bytes));
      GPU_ASSERT_CUDA(DownloadVector(scales, kElements / 32, &scale_bits));
      if (run == 1) {
        GPU_EXPECT(bytes == first) << WeightTypeName(type) << ": another fill, other values";
        break;
      }
      first = bytes;
      double max_abs = 0.0, sum_squares = 0.0;
      size_t non_finite = 0;
      for (size_t i = 0; i < kElements; ++i) {
        const float v = SyntheticValue(type, bytes, scale_bits, i);
        if (!std::isfinite(v)) {
          ++non_finite;
          continue;
        }
        max_abs = std::max(max_abs, std::fabs(static_cast<double>(v)));
        sum_squares += static_cast<double>(v) * v;
      }
      const double rms = std::sqrt(sum_squares / kElements);
      GPU_EXPECT_EQ(non_finite, 0) << WeightTypeName(type);
      GPU_EXPECT(max_abs <= 1.25 * kAmplitude) << WeightTypeName(type) << ": max " << max_abs;
      GPU_EXPECT(rms >= 0.1 * kAmplitude) << WeightTypeName(type) << ": rms " << rms;
    }
  }
}

// LaunchFillBytes sets exactly the bytes it is given.
GPU_TEST(FillBytes, ExactRange) {
  CudaStream stream;
  GPU_ASSERT_CUDA(stream.Create());
  constexpr size_t kBytes = 1001, kTail = 64;
  DeviceBuffer buffer;
  GPU_ASSERT_CUDA(buffer.Allocate(kBytes + kTail));
  GPU_ASSERT_CUDA(buffer.Fill(0));
  LaunchFillBytes(buffer.get(), kPoisonByte, kBytes, stream.get());
  GPU_ASSERT_CUDA(Finish(stream.get()));
  std::vector<uint8_t> got;
  GPU_ASSERT_CUDA(DownloadVector(buffer, kBytes + kTail, &got));
  size_t wrong = 0;
  for (size_t i = 0; i < got.size(); ++i) wrong += got[i] != (i < kBytes ? kPoisonByte : 0);
  GPU_EXPECT_EQ(wrong, 0);
}

}  // namespace
}  // namespace tokenmill::gpu_test
