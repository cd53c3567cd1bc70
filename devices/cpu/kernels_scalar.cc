// Plain C++ kernels: correct on any CPU, the fallback on non-x86 hosts and the
// path TOKENMILL_CPU_ISA=scalar selects. Written so that compilers can
// auto-vectorize the inner loops, but never relying on it.
#include <algorithm>
#include <cmath>

#include "devices/cpu/kernels_internal.h"

namespace tokenmill::devices::cpu::internal::scalar {
namespace {

// Weight elements converted per step; the chunk stays in L1 while every
// activation row of the block is multiplied with it.
constexpr int64_t kChunk = 256;

void WeightChunkToFloat(TensorType type, const uint8_t* row, int64_t k, int64_t n, float* out) {
  switch (type) {
    case TensorType::kF32:
      std::memcpy(out, row + 4 * k, static_cast<size_t>(n) * 4);
      return;
    case TensorType::kF16:
      for (int64_t i = 0; i < n; ++i) out[i] = HalfToFloat(LoadU16(row + 2 * (k + i)));
      return;
    case TensorType::kBF16:
      for (int64_t i = 0; i < n; ++i) out[i] = Bf16ToFloat(LoadU16(row + 2 * (k + i)));
      return;
    default:
      return;
  }
}

// Eight independent partial sums keep the f32 rounding error per output small.
float ChunkDot(const float* a, const float* b, int64_t n) {
  float acc[8] = {};
  for (int64_t i = 0; i < n; i += 8) {
    for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
  }
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

void MatMulFloatWeights(const TensorView& w, int64_t row_begin, int64_t row_end,
                        const Activations& x, float* y, int64_t y_stride) {
  const int64_t cols = x.cols;
  const int64_t block_rows = ActivationBlockRows(cols * 4);
  float chunk[kChunk];
  for (int64_t m0 = 0; m0 < x.rows; m0 += block_rows) {
    const int64_t m1 = std::min(x.rows, m0 + block_rows);
    for (int64_t n = row_begin; n < row_end; ++n) {
      for (int64_t m = m0; m < m1; ++m) y[m * y_stride + n] = 0.0f;
      for (int64_t k = 0; k < cols; k += kChunk) {
        const int64_t len = std::min(kChunk, cols - k);
        WeightChunkToFloat(w.type, w.row(n), k, len, chunk);
        for (int64_t m = m0; m < m1; ++m) {
          y[m * y_stride + n] += ChunkDot(chunk, x.f32 + m * cols + k, len);
        }
      }
    }
  }
}

// Unpacks one weight block to 32 int8 values and its scale.
float UnpackWeightBlock(TensorType type, const uint8_t* block, int8_t* q) {
  if (type == TensorType::kQ8_0) {
    std::memcpy(q, block + 2, 32);
  } else {
    for (int j = 0; j < 16; ++j) {
      q[j] = static_cast<int8_t>((block[2 + j] & 0x0f) - 8);
      q[j + 16] = static_cast<int8_t>((block[2 + j] >> 4) - 8);
    }
  }
  return HalfToFloat(LoadU16(block));
}

void MatMulQuantWeights(const TensorView& w, int64_t row_begin, int64_t row_end,
                        const Activations& x, float* y, int64_t y_stride) {
  const int64_t blocks = x.cols / kBlock;
  const int64_t x_row_bytes = Q8RowBytes(x.cols);
  const int64_t w_block_bytes = w.type == TensorType::kQ8_0 ? kQ8BlockBytes : kQ4BlockBytes;
  const int64_t block_rows = ActivationBlockRows(x_row_bytes);
  int8_t q[32];
  for (int64_t m0 = 0; m0 < x.rows; m0 += block_rows) {
    const int64_t m1 = std::min(x.rows, m0 + block_rows);
    for (int64_t n = row_begin; n < row_end; ++n) {
      const uint8_t* row = w.row(n);
      for (int64_t m = m0; m < m1; ++m) y[m * y_stride + n] = 0.0f;
      for (int64_t b = 0; b < blocks; ++b) {
        const float dw = UnpackWeightBlock(w.type, row + b * w_block_bytes, q);
        for (int64_t m = m0; m < m1; ++m) {
          const uint8_t* xb = x.q8 + m * x_row_bytes + b * kQ8BlockBytes;
          int32_t sum = 0;
          for (int j = 0; j < 32; ++j) sum += q[j] * static_cast<int8_t>(xb[2 + j]);
          y[m * y_stride + n] += dw * HalfToFloat(LoadU16(xb)) * static_cast<float>(sum);
        }
      }
    }
  }
}

}  // namespace

void MatMulRows(const TensorView& w, int64_t row_begin, int64_t row_end, const Activations& x,
                float* y, int64_t y_stride) {
  if (IsKQuant(w.type)) {
    MatMulKQuant(w, row_begin, row_end, x, y, y_stride);
  } else if (w.type == TensorType::kQ8_0 || w.type == TensorType::kQ4_0) {
    MatMulQuantWeights(w, row_begin, row_end, x, y, y_stride);
  } else {
    MatMulFloatWeights(w, row_begin, row_end, x, y, y_stride);
  }
}

void RmsNorm(const float* x, const float* weight, int64_t n, float eps, float* out) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(x[i]) * x[i];
  const float scale = static_cast<float>(1.0 / std::sqrt(sum / static_cast<double>(n) + eps));
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] * scale * weight[i];
}

void SiluMul(float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) gate[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

void Add(float* y, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

float DotF32(const float* a, const float* b, int64_t n) {
  float acc[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
  }
  for (; i < n; ++i) acc[0] += a[i] * b[i];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

float DotF16(const uint16_t* a, const float* b, int64_t n) {
  float acc[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int j = 0; j < 8; ++j) acc[j] += HalfToFloat(a[i + j]) * b[i + j];
  }
  for (; i < n; ++i) acc[0] += HalfToFloat(a[i]) * b[i];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

void AxpyF32(float a, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

void AxpyF16(float a, const uint16_t* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * HalfToFloat(x[i]);
}

void StoreF16(const float* x, uint16_t* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = FloatToHalf(x[i]);
}

}  // namespace tokenmill::devices::cpu::internal::scalar
