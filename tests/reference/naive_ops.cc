#include "tests/reference/naive_ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numbers>

namespace tokenmill::reference {
namespace {

using devices::TensorType;
using devices::TensorView;

uint32_t FloatBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

float BitsFloat(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

uint16_t ReadU16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

std::vector<double> InvFrequencies(const devices::ModelHyperparams& hp, int32_t head_dim,
                                   const float* freq_factors) {
  const int32_t half = head_dim / 2;
  std::vector<double> inv(static_cast<size_t>(half));
  const devices::RopeScaling& s = hp.rope_scaling;
  for (int32_t i = 0; i < half; ++i) {
    double f = std::pow(static_cast<double>(hp.rope_theta), -2.0 * i / head_dim);
    if (freq_factors != nullptr) {
      f /= freq_factors[i];
    } else if (s.enabled()) {
      const double wavelen = 2.0 * std::numbers::pi / f;
      const double high_wavelen = s.original_context / static_cast<double>(s.high_freq_factor);
      const double low_wavelen = s.original_context / static_cast<double>(s.low_freq_factor);
      if (wavelen < high_wavelen) {
        // High frequencies stay as trained.
      } else if (wavelen > low_wavelen) {
        f /= s.factor;
      } else {
        const double smooth = (s.original_context / wavelen - s.low_freq_factor) /
                              (static_cast<double>(s.high_freq_factor) - s.low_freq_factor);
        f = (1.0 - smooth) * f / s.factor + smooth * f;
      }
    }
    // Linear scaling: position p rotates as p / factor would.
    inv[static_cast<size_t>(i)] = f / hp.rope_linear_factor;
  }
  return inv;
}

}  // namespace

float HalfToFloatNaive(uint16_t h) {
  const uint32_t sign = (h >> 15) & 1u;
  const int exponent = (h >> 10) & 0x1f;
  const uint32_t mantissa = h & 0x3ffu;
  if (exponent == 31) {
    if (mantissa == 0) return sign ? -INFINITY : INFINITY;
    return BitsFloat((sign << 31) | 0x7fc00000u | (mantissa << 13));
  }
  double value = exponent == 0 ? std::ldexp(static_cast<double>(mantissa), -24)
                               : std::ldexp(1024.0 + mantissa, exponent - 25);
  return static_cast<float>(sign ? -value : value);
}

uint16_t FloatToHalfNaive(float f) {
  const uint32_t bits = FloatBits(f);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  if (std::isnan(f)) {
    return static_cast<uint16_t>(sign | 0x7e00u | ((bits >> 13) & 0x3ffu));
  }
  const double a = std::fabs(static_cast<double>(f));
  // 65520 is halfway between 65504 (odd mantissa) and 65536: ties go up.
  if (a >= 65520.0) return static_cast<uint16_t>(sign | 0x7c00u);
  if (a < std::ldexp(1.0, -14)) {
    // Subnormal range: a multiple of 2^-24; nearbyint rounds to nearest even.
    const double m = std::nearbyint(a * std::ldexp(1.0, 24));
    return static_cast<uint16_t>(sign | static_cast<uint16_t>(m));
  }
  int e = 0;
  std::frexp(a, &e);                                       // a = fr * 2^e, fr in [0.5, 1)
  e -= 1;                                                  // a = 1.x * 2^e
  double m = std::nearbyint(a * std::ldexp(1.0, 10 - e));  // in [1024, 2048]
  if (m == 2048.0) {
    m = 1024.0;
    e += 1;
  }
  if (e > 15) return static_cast<uint16_t>(sign | 0x7c00u);
  return static_cast<uint16_t>(sign | ((e + 15) << 10) | (static_cast<uint32_t>(m) - 1024u));
}

float Bf16ToFloatNaive(uint16_t b) { return BitsFloat(static_cast<uint32_t>(b) << 16); }

uint16_t FloatToBf16Naive(float f) {
  const uint32_t bits = FloatBits(f);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  if (std::isnan(f)) return static_cast<uint16_t>((bits >> 16) | 0x0040u);
  if (std::isinf(f) || f == 0.0f) return static_cast<uint16_t>(bits >> 16);
  const double a = std::fabs(static_cast<double>(f));
  int e = 0;
  std::frexp(a, &e);
  // bf16 keeps 8 significant bits; below 2^-126 the quantum is fixed at 2^-133.
  const int quantum_exp = std::max(e - 8, -133);
  const double rounded =
      std::nearbyint(a * std::ldexp(1.0, -quantum_exp)) * std::ldexp(1.0, quantum_exp);
  if (rounded >= std::ldexp(1.0, 128)) return static_cast<uint16_t>(sign | 0x7f80u);
  return static_cast<uint16_t>(sign | (FloatBits(static_cast<float>(rounded)) >> 16));
}

void DequantizeRowNaive(const TensorView& w, int64_t r, float* out) {
  const int64_t cols = w.cols();
  const uint8_t* row = w.row(r);
  switch (w.type) {
    case TensorType::kF32:
      for (int64_t i = 0; i < cols; ++i) {
        float v;
        std::memcpy(&v, row + 4 * i, sizeof(v));
        out[i] = v;
      }
      return;
    case TensorType::kF16:
      for (int64_t i = 0; i < cols; ++i) out[i] = HalfToFloatNaive(ReadU16(row + 2 * i));
      return;
    case TensorType::kBF16:
      for (int64_t i = 0; i < cols; ++i) out[i] = Bf16ToFloatNaive(ReadU16(row + 2 * i));
      return;
    case TensorType::kQ8_0:
      for (int64_t b = 0; b < cols / 32; ++b) {
        const uint8_t* block = row + 34 * b;
        const float d = HalfToFloatNaive(ReadU16(block));
        for (int j = 0; j < 32; ++j) {
          out[32 * b + j] = d * static_cast<float>(static_cast<int8_t>(block[2 + j]));
        }
      }
      return;
    case TensorType::kQ4_0:
      for (int64_t b = 0; b < cols / 32; ++b) {
        const uint8_t* block = row + 18 * b;
        const float d = HalfToFloatNaive(ReadU16(block));
        for (int j = 0; j < 16; ++j) {
          out[32 * b + j] = d * static_cast<float>((block[2 + j] & 0x0f) - 8);
          out[32 * b + j + 16] = d * static_cast<float>((block[2 + j] >> 4) - 8);
        }
      }
      return;
    case TensorType::kQ4_K:
    case TensorType::kQ5_K:
      // Element i of a super-block: chunk c = i / 64 of the 4-bit bytes, the
      // low nibble for the first 32, the high for the second; Q5_K's fifth
      // bit is bit (2c + half) of qh[i % 32].
      for (int64_t b = 0; b < cols / 256; ++b) {
        const bool five = w.type == TensorType::kQ5_K;
        const uint8_t* block = row + (five ? 176 : 144) * b;
        const float d = HalfToFloatNaive(ReadU16(block));
        const float dmin = HalfToFloatNaive(ReadU16(block + 2));
        const uint8_t* packed = block + 4;
        const uint8_t* qh = block + 16;
        const uint8_t* qs = five ? block + 48 : block + 16;
        for (int i = 0; i < 256; ++i) {
          const int s = i / 32, c = i / 64, half = (i / 32) % 2, l = i % 32;
          const int sc =
              s < 4 ? packed[s] & 63 : (packed[s + 4] & 15) | ((packed[s - 4] >> 6) << 4);
          const int m = s < 4 ? packed[s + 4] & 63 : (packed[s + 4] >> 4) | ((packed[s] >> 6) << 4);
          int q = half == 0 ? qs[32 * c + l] & 15 : qs[32 * c + l] >> 4;
          if (five && (qh[l] >> (2 * c + half)) & 1) q += 16;
          out[256 * b + i] =
              d * static_cast<float>(sc) * static_cast<float>(q) - dmin * static_cast<float>(m);
        }
      }
      return;
    case TensorType::kQ6_K:
      // Element i: half n = i / 128, quarter k = (i % 128) / 32, l = i % 32;
      // low 4 bits in ql[64n + l + 32 (k odd)], nibble k / 2; high 2 bits in
      // qh[32n + l] at bit 2k; scale of sub-block i / 16.
      for (int64_t b = 0; b < cols / 256; ++b) {
        const uint8_t* block = row + 210 * b;
        const float d = HalfToFloatNaive(ReadU16(block + 208));
        for (int i = 0; i < 256; ++i) {
          const int n = i / 128, k = (i % 128) / 32, l = i % 32;
          const uint8_t lowbyte = block[64 * n + l + 32 * (k % 2)];
          const int low = k < 2 ? lowbyte & 15 : lowbyte >> 4;
          const int high = (block[128 + 32 * n + l] >> (2 * k)) & 3;
          const auto sc = static_cast<int8_t>(block[192 + i / 16]);
          out[256 * b + i] =
              d * static_cast<float>(sc) * static_cast<float>((low | (high << 4)) - 32);
        }
      }
      return;
  }
}

std::vector<float> DequantizeTensor(const TensorView& w) {
  const int64_t rows = w.rows(), cols = w.cols();
  std::vector<float> out(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) DequantizeRowNaive(w, r, out.data() + r * cols);
  return out;
}

std::vector<uint8_t> QuantizeQ8_0Naive(const float* x, int64_t n) {
  std::vector<uint8_t> out(static_cast<size_t>(n / 32 * 34));
  for (int64_t b = 0; b < n / 32; ++b) {
    const float* v = x + 32 * b;
    float amax = 0.0f;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(v[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    uint8_t* block = out.data() + 34 * b;
    const uint16_t dh = FloatToHalfNaive(d);
    std::memcpy(block, &dh, sizeof(dh));
    for (int j = 0; j < 32; ++j) {
      block[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(std::round(v[j] * id)));
    }
  }
  return out;
}

std::vector<double> MatVecNaiveF64(const float* w, int64_t rows, int64_t cols, const float* x) {
  std::vector<double> y(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    double sum = 0.0;
    for (int64_t k = 0; k < cols; ++k) {
      sum += static_cast<double>(w[r * cols + k]) * static_cast<double>(x[k]);
    }
    y[static_cast<size_t>(r)] = sum;
  }
  return y;
}

void MatVecNaive(const float* w, int64_t rows, int64_t cols, const float* x, float* y) {
  const std::vector<double> sums = MatVecNaiveF64(w, rows, cols, x);
  for (int64_t r = 0; r < rows; ++r) y[r] = static_cast<float>(sums[static_cast<size_t>(r)]);
}

void RmsNormNaive(const float* x, const float* weight, int64_t n, float eps, float* out) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(x[i]) * x[i];
  const double scale = 1.0 / std::sqrt(sum / static_cast<double>(n) + eps);
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(x[i] * scale * weight[i]);
}

float SiluNaive(float x) {
  const double v = x;
  return static_cast<float>(v / (1.0 + std::exp(-v)));
}

void GeluTanhMulNaive(float* gate, const float* up, int64_t n) {
  const double c = std::sqrt(2.0 / std::numbers::pi);
  for (int64_t i = 0; i < n; ++i) {
    const double x = gate[i];
    gate[i] =
        static_cast<float>(0.5 * x * (1.0 + std::tanh(c * (x + 0.044715 * x * x * x))) * up[i]);
  }
}

void SiluMulNaive(float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const double v = gate[i];
    gate[i] = static_cast<float>(v / (1.0 + std::exp(-v)) * up[i]);
  }
}

void SoftmaxNaive(float* x, int64_t n) {
  if (n <= 0) return;
  double max = x[0];
  for (int64_t i = 1; i < n; ++i) max = std::max(max, static_cast<double>(x[i]));
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(x[i] - max);
  for (int64_t i = 0; i < n; ++i) x[i] = static_cast<float>(std::exp(x[i] - max) / sum);
}

std::vector<double> RopeInvFrequenciesNaive(const devices::ModelHyperparams& hp,
                                            const float* freq_factors) {
  return InvFrequencies(hp, hp.head_dim, freq_factors);
}

void RopeNaive(float* x, int32_t heads, int32_t head_dim, int32_t pos,
               const devices::ModelHyperparams& hp, const float* freq_factors,
               devices::RopeStyle style) {
  const std::vector<double> inv = InvFrequencies(hp, head_dim, freq_factors);
  const int32_t half = head_dim / 2;
  for (int32_t h = 0; h < heads; ++h) {
    float* head = x + static_cast<int64_t>(h) * head_dim;
    for (int32_t i = 0; i < half; ++i) {
      const double angle = pos * inv[static_cast<size_t>(i)];
      const double c = std::cos(angle), s = std::sin(angle);
      const int32_t a = style == devices::RopeStyle::kAdjacentPairs ? 2 * i : i;
      const int32_t b = style == devices::RopeStyle::kAdjacentPairs ? 2 * i + 1 : i + half;
      const double x0 = head[a], x1 = head[b];
      head[a] = static_cast<float>(x0 * c - x1 * s);
      head[b] = static_cast<float>(x0 * s + x1 * c);
    }
  }
}

}  // namespace tokenmill::reference
