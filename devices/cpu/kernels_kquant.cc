// K-quants (Q4_K, Q5_K, Q6_K: GGUF super-blocks of 256): quantizing rows for
// model files, dequantizing them, and their matmuls against Q8_K activations.
//
// The activation rows come quantized per 256 values (one f32 scale) with the
// sum of every 16 values (the Q8_K part of a prepared row), so that a whole
// super-block is one integer dot: sum_j scale_j * (q_j . a_j) with the weight
// values as they are stored (Q4_K/Q5_K 0..15 / 0..31, Q6_K 0..63), less the
// integer dot of the activation sums with Q4_K/Q5_K's mins (or with 32 x
// Q6_K's scales); then per super-block one f32 step with the f16 d (and
// dmin) and the activation scale.
#include <algorithm>
#include <cmath>

#include "devices/cpu/kernels_internal.h"
#include "devices/cpu/kernels_target.h"

namespace tokenmill::devices::cpu::internal {
namespace {

constexpr int64_t kSuper = kSuperBlock;

void StoreHalf(uint8_t* p, float v) {
  const uint16_t h = FloatToHalf(v);
  std::memcpy(p, &h, sizeof(h));
}

// Scale and min of sub-block j (0..7) from Q4_K/Q5_K's 12 packed bytes:
// bytes 0..3 hold scales 0..3 (6 bits) and the top 2 bits of scales 4..7,
// bytes 4..7 the same for the mins, bytes 8..11 the low 4 bits of scales and
// mins 4..7.
inline void ScaleMin(int j, const uint8_t* q, int* sc, int* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

void PackScaleMin(const int sc[8], const int m[8], uint8_t* out) {
  for (int j = 0; j < 4; ++j) {
    out[j] = static_cast<uint8_t>(sc[j] | ((sc[j + 4] >> 4) << 6));
    out[j + 4] = static_cast<uint8_t>(m[j] | ((m[j + 4] >> 4) << 6));
    out[j + 8] = static_cast<uint8_t>((sc[j + 4] & 0xF) | ((m[j + 4] & 0xF) << 4));
  }
}

int RoundClamp(float v, int lo, int hi) {
  return std::clamp(static_cast<int>(std::lround(v)), lo, hi);
}

// Q4_K (nmax 15) and Q5_K (nmax 31): per sub-block of 32 an affine range
// [min(x, 0), max(x)], its scale and min stored as 6-bit multiples of the
// super-block's f16 d and dmin.
void QuantizeAffine(TensorType type, const float* x, uint8_t* out) {
  const int nmax = type == TensorType::kQ4_K ? 15 : 31;
  float scales[8], mins[8];
  for (int s = 0; s < 8; ++s) {
    const float* v = x + 32 * s;
    float lo = 0.0f, hi = v[0];
    for (int i = 0; i < 32; ++i) lo = std::min(lo, v[i]), hi = std::max(hi, v[i]);
    scales[s] = std::max(hi - lo, 0.0f) / static_cast<float>(nmax);
    mins[s] = -lo;
  }
  const float max_scale = *std::max_element(scales, scales + 8);
  const float max_min = *std::max_element(mins, mins + 8);
  StoreHalf(out, max_scale / 63.0f);
  StoreHalf(out + 2, max_min / 63.0f);
  const float d = HalfToFloat(LoadU16(out)), dmin = HalfToFloat(LoadU16(out + 2));
  int sc[8], m[8];
  for (int s = 0; s < 8; ++s) {
    sc[s] = d > 0.0f ? RoundClamp(scales[s] / d, 0, 63) : 0;
    m[s] = dmin > 0.0f ? RoundClamp(mins[s] / dmin, 0, 63) : 0;
  }
  PackScaleMin(sc, m, out + 4);
  uint8_t q[256];
  for (int i = 0; i < 256; ++i) {
    const float scale = d * static_cast<float>(sc[i / 32]);
    const float min = dmin * static_cast<float>(m[i / 32]);
    q[i] = static_cast<uint8_t>(scale > 0.0f ? RoundClamp((x[i] + min) / scale, 0, nmax) : 0);
  }
  uint8_t* qh = out + 16;
  uint8_t* qs = type == TensorType::kQ4_K ? out + 16 : out + 48;
  if (type == TensorType::kQ5_K) std::memset(qh, 0, 32);
  for (int j = 0; j < 4; ++j) {
    for (int l = 0; l < 32; ++l) {
      const uint8_t lo = q[64 * j + l], hi = q[64 * j + 32 + l];
      qs[32 * j + l] = static_cast<uint8_t>((lo & 0xF) | ((hi & 0xF) << 4));
      if (type == TensorType::kQ5_K) {
        qh[l] |= static_cast<uint8_t>(((lo >> 4) << (2 * j)) | ((hi >> 4) << (2 * j + 1)));
      }
    }
  }
}

// Q6_K: per sub-block of 16 a signed scale (the element of largest magnitude
// maps to -32), stored as int8 multiples of the super-block's f16 d.
void QuantizeQ6K(const float* x, uint8_t* out) {
  float scales[16];
  float max_abs_scale = 0.0f;
  for (int s = 0; s < 16; ++s) {
    float max = 0.0f;
    for (int i = 0; i < 16; ++i) {
      if (std::fabs(x[16 * s + i]) > std::fabs(max)) max = x[16 * s + i];
    }
    scales[s] = max / -32.0f;
    max_abs_scale = std::max(max_abs_scale, std::fabs(scales[s]));
  }
  uint8_t* ql = out;
  uint8_t* qh = out + 128;
  auto* sc = reinterpret_cast<int8_t*>(out + 192);
  StoreHalf(out + 208, max_abs_scale / 127.0f);
  const float d = HalfToFloat(LoadU16(out + 208));
  for (int s = 0; s < 16; ++s) {
    sc[s] = static_cast<int8_t>(d > 0.0f ? RoundClamp(scales[s] / d, -128, 127) : 0);
  }
  uint8_t q[256];
  for (int i = 0; i < 256; ++i) {
    const float scale = d * static_cast<float>(sc[i / 16]);
    q[i] = static_cast<uint8_t>((scale != 0.0f ? RoundClamp(x[i] / scale, -32, 31) : 0) + 32);
  }
  for (int n = 0; n < 2; ++n) {
    for (int l = 0; l < 32; ++l) {
      const uint8_t* v = q + 128 * n + l;
      ql[64 * n + l] = static_cast<uint8_t>((v[0] & 0xF) | ((v[64] & 0xF) << 4));
      ql[64 * n + l + 32] = static_cast<uint8_t>((v[32] & 0xF) | ((v[96] & 0xF) << 4));
      qh[32 * n + l] = static_cast<uint8_t>((v[0] >> 4) | ((v[32] >> 4) << 2) |
                                            ((v[64] >> 4) << 4) | ((v[96] >> 4) << 6));
    }
  }
}

// One super-block as int8 values, a scale per 16 and a min per 32 (0 for
// Q6_K): x[i] = scale16[i / 16] * q[i] - min32[i / 32].
// Templated on the type so that the unpacking loops vectorize with constant
// shifts and masks.
template <TensorType kType>
__attribute__((always_inline)) inline void UnpackSuper(const uint8_t* block, int8_t* q,
                                                       float* scale16, float* min32) {
  if constexpr (kType == TensorType::kQ6_K) {
    const uint8_t* ql = block;
    const uint8_t* qh = block + 128;
    const auto* sc = reinterpret_cast<const int8_t*>(block + 192);
    const float d = HalfToFloat(LoadU16(block + 208));
    for (int n = 0; n < 2; ++n) {
      for (int l = 0; l < 32; ++l) {
        const int h = qh[32 * n + l];
        const int a = ql[64 * n + l], b = ql[64 * n + l + 32];
        int8_t* v = q + 128 * n + l;
        v[0] = static_cast<int8_t>(((a & 0xF) | ((h & 3) << 4)) - 32);
        v[32] = static_cast<int8_t>(((b & 0xF) | (((h >> 2) & 3) << 4)) - 32);
        v[64] = static_cast<int8_t>(((a >> 4) | (((h >> 4) & 3) << 4)) - 32);
        v[96] = static_cast<int8_t>(((b >> 4) | (((h >> 6) & 3) << 4)) - 32);
      }
    }
    for (int s = 0; s < 16; ++s) scale16[s] = d * static_cast<float>(sc[s]);
    for (int s = 0; s < 8; ++s) min32[s] = 0.0f;
    return;
  }
  const float d = HalfToFloat(LoadU16(block)), dmin = HalfToFloat(LoadU16(block + 2));
  for (int s = 0; s < 8; ++s) {
    int sc, m;
    ScaleMin(s, block + 4, &sc, &m);
    scale16[2 * s] = scale16[2 * s + 1] = d * static_cast<float>(sc);
    min32[s] = dmin * static_cast<float>(m);
  }
  constexpr bool five = kType == TensorType::kQ5_K;
  const uint8_t* qh = block + 16;
  const uint8_t* qs = five ? block + 48 : block + 16;
  for (int j = 0; j < 4; ++j) {
    for (int l = 0; l < 32; ++l) {
      const int h = five ? qh[l] : 0;
      q[64 * j + l] = static_cast<int8_t>((qs[32 * j + l] & 0xF) | (((h >> (2 * j)) & 1) << 4));
      q[64 * j + 32 + l] =
          static_cast<int8_t>((qs[32 * j + l] >> 4) | (((h >> (2 * j + 1)) & 1) << 4));
    }
  }
}

// Q4_K/Q5_K's eight 6-bit scales and eight mins, a byte each (little-endian
// in the uint64s), from the 12 packed bytes ScaleMin reads one at a time.
inline void ScalesMins(const uint8_t* packed, uint64_t* scales, uint64_t* mins) {
  uint32_t u[3];
  std::memcpy(u, packed, sizeof(u));
  const uint32_t sc_hi = (u[2] & 0x0f0f0f0fu) | ((u[0] >> 2) & 0x30303030u);
  const uint32_t m_hi = ((u[2] >> 4) & 0x0f0f0f0fu) | ((u[1] >> 2) & 0x30303030u);
  *scales = (u[0] & 0x3f3f3f3fu) | (uint64_t{sc_hi} << 32);
  *mins = (u[1] & 0x3f3f3f3fu) | (uint64_t{m_hi} << 32);
}

// The Q8_K part of a prepared activation row (kernels_internal.h).
struct Q8KRow {
  const int8_t* q;           // cols values, 256 per super-block
  const float* d;            // a scale per super-block
  const int16_t* sums;       // sum of q per 16 values
  const float* scaled_sums;  // those sums times the block's d
};
inline Q8KRow Q8KOf(const uint8_t* row, int64_t cols) {
  return Q8KRow{.q = reinterpret_cast<const int8_t*>(row + Q8KValuesOffset(cols)),
                .d = reinterpret_cast<const float*>(row + Q8KScalesOffset(cols)),
                .sums = reinterpret_cast<const int16_t*>(row + Q8KSumsOffset(cols)),
                .scaled_sums = reinterpret_cast<const float*>(row + Q8KScaledSumsOffset(cols))};
}

// The loop every ISA shares: per weight row, dot.Rows<type, R>(...) writes
// the row's dot products with R activation rows at a time (kMaxRows, then 4,
// then one by one), the weight super-blocks decoded once per R rows.
template <TensorType kType, int kMaxRows, typename Dot>
__attribute__((always_inline)) inline void MatMulKTyped(const TensorView& w, int64_t row_begin,
                                                        int64_t row_end, const Activations& x,
                                                        float* y, int64_t y_stride, Dot dot) {
  const int64_t supers = x.cols / kSuper;
  const int64_t x_row_bytes = Q8RowBytes(x.cols);
  const int64_t block_rows = ActivationBlockRows(x_row_bytes);
  for (int64_t m0 = 0; m0 < x.rows; m0 += block_rows) {
    const int64_t m1 = std::min(x.rows, m0 + block_rows);
    for (int64_t n = row_begin; n < row_end; ++n) {
      const uint8_t* row = w.row(n);
      int64_t m = m0;
      for (; m + kMaxRows <= m1; m += kMaxRows) {
        dot.template Rows<kType, kMaxRows>(row, supers, x.q8 + m * x_row_bytes, x_row_bytes, x.cols,
                                           y + m * y_stride + n, y_stride);
      }
      if constexpr (kMaxRows > 4) {
        for (; m + 4 <= m1; m += 4) {
          dot.template Rows<kType, 4>(row, supers, x.q8 + m * x_row_bytes, x_row_bytes, x.cols,
                                      y + m * y_stride + n, y_stride);
        }
      }
      for (; m < m1; ++m) {
        dot.template Rows<kType, 1>(row, supers, x.q8 + m * x_row_bytes, x_row_bytes, x.cols,
                                    y + m * y_stride + n, y_stride);
      }
    }
  }
}

template <int kMaxRows, typename Dot>
__attribute__((always_inline)) inline void MatMulK(const TensorView& w, int64_t row_begin,
                                                   int64_t row_end, const Activations& x, float* y,
                                                   int64_t y_stride, Dot dot) {
  switch (w.type) {
    case TensorType::kQ4_K:
      return MatMulKTyped<TensorType::kQ4_K, kMaxRows>(w, row_begin, row_end, x, y, y_stride, dot);
    case TensorType::kQ5_K:
      return MatMulKTyped<TensorType::kQ5_K, kMaxRows>(w, row_begin, row_end, x, y, y_stride, dot);
    default:
      return MatMulKTyped<TensorType::kQ6_K, kMaxRows>(w, row_begin, row_end, x, y, y_stride, dot);
  }
}
}  // namespace

bool IsKQuant(TensorType type) {
  return type == TensorType::kQ4_K || type == TensorType::kQ5_K || type == TensorType::kQ6_K;
}

void QuantizeKQuant(TensorType type, const float* x, int64_t n, uint8_t* out) {
  const size_t bytes = TensorTypeBlockBytes(type);
  for (int64_t b = 0; b < n / kSuper; ++b) {
    if (type == TensorType::kQ6_K) {
      QuantizeQ6K(x + b * kSuper, out + static_cast<size_t>(b) * bytes);
    } else {
      QuantizeAffine(type, x + b * kSuper, out + static_cast<size_t>(b) * bytes);
    }
  }
}

void DequantizeKQuant(TensorType type, const uint8_t* row, int64_t n, float* out) {
  int8_t q[kSuper];
  float scale16[16], min32[8];
  const size_t bytes = TensorTypeBlockBytes(type);
  for (int64_t b = 0; b < n / kSuper; ++b) {
    const uint8_t* block = row + static_cast<size_t>(b) * bytes;
    switch (type) {
      case TensorType::kQ4_K:
        UnpackSuper<TensorType::kQ4_K>(block, q, scale16, min32);
        break;
      case TensorType::kQ5_K:
        UnpackSuper<TensorType::kQ5_K>(block, q, scale16, min32);
        break;
      default:
        UnpackSuper<TensorType::kQ6_K>(block, q, scale16, min32);
        break;
    }
    for (int i = 0; i < kSuper; ++i) {
      out[b * kSuper + i] = scale16[i / 16] * static_cast<float>(q[i]) - min32[i / 32];
    }
  }
}

void QuantizeQ8K(const float* x, int64_t n, uint8_t* row) {
  auto* q = reinterpret_cast<int8_t*>(row + Q8KValuesOffset(n));
  for (int64_t b = 0; b < n / kSuper; ++b) {
    const float* v = x + b * kSuper;
    const float amax = AbsMax(v, kSuper);
    const float d = amax / 127.0f;
    const float id = amax > 0.0f ? 127.0f / amax : 0.0f;
    int8_t* out = q + b * kSuper;
    // |v_i x id| <= 127 (up to rounding of id), so the result stays in
    // [-127, 127].
    ScaleRoundToInt8(v, kSuper, id, out);
    std::memcpy(row + Q8KScalesOffset(n) + 4 * b, &d, sizeof(d));
    for (int s = 0; s < 16; ++s) {
      int16_t sum = 0;
      for (int i = 0; i < 16; ++i) sum = static_cast<int16_t>(sum + out[16 * s + i]);
      std::memcpy(row + Q8KSumsOffset(n) + 2 * (16 * b + s), &sum, sizeof(sum));
      const float scaled = d * static_cast<float>(sum);
      std::memcpy(row + Q8KScaledSumsOffset(n) + 4 * (16 * b + s), &scaled, sizeof(scaled));
    }
  }
}

namespace scalar {

namespace {

// Per super-block the integer sums sum_j scale_j * (q_j . a_j) and, for
// Q4_K/Q5_K, sum_j min_j * sum(a_j), then one f32 step:
// d_a * (d * sums - dmin * mins).
struct ScalarKDot {
  template <TensorType kType, int kRows>
  void Rows(const uint8_t* wrow, int64_t supers, const uint8_t* xrow, int64_t x_stride,
            int64_t cols, float* y, int64_t y_stride) const {
    const size_t super_bytes = TensorTypeBlockBytes(kType);
    int8_t q[kSuper];
    float scale16[16], min32[8];
    for (int r = 0; r < kRows; ++r) {
      const Q8KRow a = Q8KOf(xrow + r * x_stride, cols);
      float total = 0.0f;
      for (int64_t b = 0; b < supers; ++b) {
        const uint8_t* block = wrow + static_cast<size_t>(b) * super_bytes;
        UnpackSuper<kType>(block, q, scale16, min32);
        const int8_t* av = a.q + b * kSuper;
        int32_t sums = 0, mins = 0;
        float d, dmin = 0.0f;
        if constexpr (kType == TensorType::kQ6_K) {
          const auto* sc = reinterpret_cast<const int8_t*>(block + 192);
          d = HalfToFloat(LoadU16(block + 208));
          for (int s = 0; s < 16; ++s) {
            int32_t dot = 0;
            for (int i = 16 * s; i < 16 * s + 16; ++i) dot += q[i] * av[i];
            sums += sc[s] * dot;
          }
        } else {
          d = HalfToFloat(LoadU16(block));
          dmin = HalfToFloat(LoadU16(block + 2));
          const int16_t* bsums = a.sums + 16 * b;
          for (int j = 0; j < 8; ++j) {
            int sc, m;
            ScaleMin(j, block + 4, &sc, &m);
            int32_t dot = 0;
            for (int i = 32 * j; i < 32 * j + 32; ++i) dot += q[i] * av[i];
            sums += sc * dot;
            mins += m * (bsums[2 * j] + bsums[2 * j + 1]);
          }
        }
        total += a.d[b] * (d * static_cast<float>(sums) - dmin * static_cast<float>(mins));
      }
      y[r * y_stride] = total;
    }
  }
};

}  // namespace

void MatMulKQuant(const TensorView& w, int64_t row_begin, int64_t row_end, const Activations& x,
                  float* y, int64_t y_stride) {
  MatMulK<1>(w, row_begin, row_end, x, y, y_stride, ScalarKDot{});
}

}  // namespace scalar

#if defined(TOKENMILL_KERNELS_X86)
namespace avx2 {

namespace {

// Per 32 values: vpmaddubsw (unsigned weight values 0..63 x signed
// activations; pair sums fit int16) then vpmaddwd with the sub-block's scale
// into int32 lanes; per super-block one f32 step. Q6_K's values go in as
// q + 32 and its offset comes off as 32 * sum_s scale_s * sum(a_s).
struct Avx2KDot {
  template <TensorType kType, int kRows>
  __attribute__((target("avx2,fma,f16c"))) void Rows(const uint8_t* wrow, int64_t supers,
                                                     const uint8_t* xrow, int64_t x_stride,
                                                     int64_t cols, float* y,
                                                     int64_t y_stride) const {
    const size_t super_bytes = TensorTypeBlockBytes(kType);
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    Q8KRow a[kRows];
    __m256 acc[kRows];
    for (int r = 0; r < kRows; ++r) {
      a[r] = Q8KOf(xrow + r * x_stride, cols);
      acc[r] = _mm256_setzero_ps();
    }
    for (int64_t b = 0; b < supers; ++b) {
      const uint8_t* block = wrow + static_cast<size_t>(b) * super_bytes;
      __m256i isum[kRows];
      for (int r = 0; r < kRows; ++r) isum[r] = _mm256_setzero_si256();
      if constexpr (kType == TensorType::kQ6_K) {
        const auto* sc = reinterpret_cast<const int8_t*>(block + 192);
        const float d = _cvtsh_ss(LoadU16(block + 208));
        const __m256i m30 = _mm256_set1_epi8(0x30);
        for (int n = 0; n < 2; ++n) {
          const __m256i h =
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 128 + 32 * n));
          const __m256i l0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 64 * n));
          const __m256i l1 =
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 64 * n + 32));
          for (int t = 0; t < 4; ++t) {
            const __m256i l = (t & 1) ? l1 : l0;
            const __m256i lo =
                t < 2 ? _mm256_and_si256(l, low4) : _mm256_and_si256(_mm256_srli_epi16(l, 4), low4);
            const __m256i hs = t == 0   ? _mm256_slli_epi16(h, 4)
                               : t == 1 ? _mm256_slli_epi16(h, 2)
                               : t == 2 ? h
                                        : _mm256_srli_epi16(h, 2);
            const __m256i wv = _mm256_or_si256(lo, _mm256_and_si256(hs, m30));
            const int j = 4 * n + t;
            const __m256i s =
                _mm256_set_m128i(_mm_set1_epi16(sc[2 * j + 1]), _mm_set1_epi16(sc[2 * j]));
            for (int r = 0; r < kRows; ++r) {
              const __m256i av = _mm256_loadu_si256(
                  reinterpret_cast<const __m256i*>(a[r].q + b * kSuper + 32 * j));
              isum[r] =
                  _mm256_add_epi32(isum[r], _mm256_madd_epi16(_mm256_maddubs_epi16(wv, av), s));
            }
          }
        }
        const __m256i sc16 =
            _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sc)));
        for (int r = 0; r < kRows; ++r) {
          const __m256i bs =
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[r].sums + 16 * b));
          isum[r] = _mm256_sub_epi32(isum[r], _mm256_slli_epi32(_mm256_madd_epi16(bs, sc16), 5));
          acc[r] =
              _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[r]), _mm256_set1_ps(d * a[r].d[b]), acc[r]);
        }
      } else {
        constexpr bool kFive = kType == TensorType::kQ5_K;
        const float d = _cvtsh_ss(LoadU16(block)), dmin = _cvtsh_ss(LoadU16(block + 2));
        uint64_t scales64, mins64;
        ScalesMins(block + 4, &scales64, &mins64);
        uint8_t sc[8];
        std::memcpy(sc, &scales64, sizeof(sc));
        const uint8_t* qs = block + (kFive ? 48 : 16);
        const __m256i h =
            kFive ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 16)) : low4;
        for (int k = 0; k < 4; ++k) {
          const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs + 32 * k));
          for (int half = 0; half < 2; ++half) {
            const int j = 2 * k + half;
            __m256i wv = half == 0 ? _mm256_and_si256(q, low4)
                                   : _mm256_and_si256(_mm256_srli_epi16(q, 4), low4);
            if constexpr (kFive) {
              const __m256i bit = _mm256_set1_epi8(static_cast<char>(1 << j));
              wv = _mm256_or_si256(
                  wv, _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(h, bit), bit),
                                       _mm256_set1_epi8(0x10)));
            }
            const __m256i s = _mm256_set1_epi16(sc[j]);
            for (int r = 0; r < kRows; ++r) {
              const __m256i av = _mm256_loadu_si256(
                  reinterpret_cast<const __m256i*>(a[r].q + b * kSuper + 32 * j));
              isum[r] =
                  _mm256_add_epi32(isum[r], _mm256_madd_epi16(_mm256_maddubs_epi16(wv, av), s));
            }
          }
        }
        const __m128i m8 = _mm_cvtsi64_si128(static_cast<long long>(mins64));
        const __m256i mins16 = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m8, m8));
        for (int r = 0; r < kRows; ++r) {
          const __m256i bs =
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[r].sums + 16 * b));
          acc[r] =
              _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[r]), _mm256_set1_ps(d * a[r].d[b]), acc[r]);
          acc[r] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(bs, mins16)),
                                    _mm256_set1_ps(dmin * a[r].d[b]), acc[r]);
        }
      }
    }
    for (int r = 0; r < kRows; ++r) {
      const __m128 h = _mm_add_ps(_mm256_castps256_ps128(acc[r]), _mm256_extractf128_ps(acc[r], 1));
      const __m128 h2 = _mm_add_ps(h, _mm_movehl_ps(h, h));
      y[r * y_stride] = _mm_cvtss_f32(_mm_add_ss(h2, _mm_movehdup_ps(h2)));
    }
  }
};

}  // namespace

__attribute__((target("avx2,fma,f16c"))) void MatMulKQuant(const TensorView& w, int64_t row_begin,
                                                           int64_t row_end, const Activations& x,
                                                           float* y, int64_t y_stride) {
  if (x.rows >= kKBatchMinRowsAvx2 && KQuantBatchEnabled()) {
    // Whole 8-row tiles batched; the few rows left take the per-row kernel.
    const int64_t tiled = (row_end - row_begin) / kKBatchTileRowsAvx2 * kKBatchTileRowsAvx2;
    MatMulKBatch(w, row_begin, row_begin + tiled, x, y, y_stride);
    row_begin += tiled;
    if (row_begin >= row_end) return;
  }
  MatMulK<4>(w, row_begin, row_end, x, y, y_stride, Avx2KDot{});
}

}  // namespace avx2

namespace avx512 {

namespace {

// 16-bit lane i of step j (64 values): Q4_K/Q5_K's sub-block 2j + i / 16,
// Q6_K's 4j + i / 8. Also Q5_K's high-bit position per lane.
alignas(64) constexpr int16_t kHalfIndex[32] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                                1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
alignas(64) constexpr int16_t kQuarterIndex[32] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                                   2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3};

#define TOKENMILL_VNNI_TARGET \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))

// Per 64 values: vpmaddubsw (unsigned weight values x signed activations)
// then vpdpwssd with the sub-blocks' scales as int16 lanes, accumulating in
// int32 over the super-block; one f32 step per super-block. The weights are
// decoded to registers once per kRows activation rows.
struct VnniKDot {
  template <TensorType kType, int kRows>
  TOKENMILL_VNNI_TARGET void Rows(const uint8_t* wrow, int64_t supers, const uint8_t* xrow,
                                  int64_t x_stride, int64_t cols, float* y,
                                  int64_t y_stride) const {
    constexpr bool kSix = kType == TensorType::kQ6_K, kFive = kType == TensorType::kQ5_K;
    const size_t super_bytes = TensorTypeBlockBytes(kType);
    const __m512i low4 = _mm512_set1_epi8(0x0f);
    const __m512i index =
        _mm512_load_si512(kSix ? static_cast<const void*>(kQuarterIndex) : kHalfIndex);
    Q8KRow a[kRows];
    __m512 acc[kRows];
    for (int r = 0; r < kRows; ++r) {
      a[r] = Q8KOf(xrow + r * x_stride, cols);
      acc[r] = _mm512_setzero_ps();
    }
    for (int64_t b = 0; b < supers; ++b) {
      const uint8_t* block = wrow + static_cast<size_t>(b) * super_bytes;
      __m512i wv[4], sv[4];
      // Q4_K/Q5_K: per 16 activation values dmin x min, taken times the
      // activation's d x sum(q). Q6_K: the scales as int16, for the offset of
      // 32 as an integer dot with the sums (exact: it cancels most of the
      // unsigned values' dot, which f32 would round).
      __m512 sums_weight = _mm512_setzero_ps();
      __m256i sc16 = _mm256_setzero_si256();
      float d;
      if constexpr (kSix) {
        d = _cvtsh_ss(LoadU16(block + 208));
        const __m128i sc8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 192));
        sc16 = _mm256_cvtepi8_epi16(sc8);
        const __m512i sc_all = _mm512_zextsi256_si512(sc16);
        const __m512i m30 = _mm512_set1_epi8(0x30);
        const __m512i shl = _mm512_set_epi64(2 * 0x0001000100010001LL, 2 * 0x0001000100010001LL,
                                             2 * 0x0001000100010001LL, 2 * 0x0001000100010001LL,
                                             4 * 0x0001000100010001LL, 4 * 0x0001000100010001LL,
                                             4 * 0x0001000100010001LL, 4 * 0x0001000100010001LL);
        const __m512i shr = _mm512_slli_epi16(_mm512_load_si512(kHalfIndex), 1);  // 0, then 2
        for (int n = 0; n < 2; ++n) {
          const __m512i l = _mm512_loadu_si512(block + 64 * n);
          const __m512i h = _mm512_broadcast_i64x4(
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 128 + 32 * n)));
          wv[2 * n] = _mm512_or_si512(_mm512_and_si512(l, low4),
                                      _mm512_and_si512(_mm512_sllv_epi16(h, shl), m30));
          wv[2 * n + 1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l, 4), low4),
                                          _mm512_and_si512(_mm512_srlv_epi16(h, shr), m30));
        }
        for (int j = 0; j < 4; ++j) {
          sv[j] =
              _mm512_permutexvar_epi16(_mm512_add_epi16(index, _mm512_set1_epi16(4 * j)), sc_all);
        }
      } else {
        d = _cvtsh_ss(LoadU16(block));
        const float dmin = _cvtsh_ss(LoadU16(block + 2));
        uint64_t scales64, mins64;
        ScalesMins(block + 4, &scales64, &mins64);
        const __m512i sc_all = _mm512_zextsi128_si512(
            _mm_cvtepu8_epi16(_mm_cvtsi64_si128(static_cast<long long>(scales64))));
        const __m128i m8 = _mm_cvtsi64_si128(static_cast<long long>(mins64));
        sums_weight =
            _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_unpacklo_epi8(m8, m8))),
                          _mm512_set1_ps(dmin));
        const uint8_t* qs = block + (kFive ? 48 : 16);
        for (int k = 0; k < 2; ++k) {
          const __m512i z = _mm512_loadu_si512(qs + 64 * k);
          const __m512i lo = _mm512_and_si512(z, low4);
          const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(z, 4), low4);
          wv[2 * k] = _mm512_shuffle_i64x2(lo, hi, 0x44);
          wv[2 * k + 1] = _mm512_shuffle_i64x2(lo, hi, 0xee);
        }
        __m512i h = _mm512_setzero_si512();
        if constexpr (kFive) {
          h = _mm512_broadcast_i64x4(
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 16)));
        }
        for (int j = 0; j < 4; ++j) {
          const __m512i lane = _mm512_add_epi16(index, _mm512_set1_epi16(2 * j));
          sv[j] = _mm512_permutexvar_epi16(lane, sc_all);
          if constexpr (kFive) {
            // Value 64j + i takes bit 2j (i < 32) or 2j + 1 of qh[i % 32].
            const __m512i bit = _mm512_slli_epi16(_mm512_srlv_epi16(h, lane), 4);
            wv[j] = _mm512_or_si512(wv[j], _mm512_and_si512(bit, _mm512_set1_epi8(0x10)));
          }
        }
      }
      const __m512 dv = _mm512_set1_ps(d);
      for (int r = 0; r < kRows; ++r) {
        const int8_t* av = a[r].q + b * kSuper;
        __m512i isum = _mm512_setzero_si512();
        for (int j = 0; j < 4; ++j) {
          isum = _mm512_dpwssd_epi32(
              isum, _mm512_maddubs_epi16(wv[j], _mm512_loadu_si512(av + 64 * j)), sv[j]);
        }
        if constexpr (kSix) {
          const __m256i bs =
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[r].sums + 16 * b));
          isum = _mm512_sub_epi32(
              isum, _mm512_zextsi256_si512(_mm256_slli_epi32(_mm256_madd_epi16(bs, sc16), 5)));
        }
        acc[r] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(isum), dv),
                                 _mm512_set1_ps(a[r].d[b]), acc[r]);
        if constexpr (!kSix) {
          acc[r] =
              _mm512_fnmadd_ps(sums_weight, _mm512_loadu_ps(a[r].scaled_sums + 16 * b), acc[r]);
        }
      }
    }
    for (int r = 0; r < kRows; ++r) y[r * y_stride] = _mm512_reduce_add_ps(acc[r]);
  }
};

}  // namespace

TOKENMILL_VNNI_TARGET void MatMulKQuantVnni(const TensorView& w, int64_t row_begin, int64_t row_end,
                                            const Activations& x, float* y, int64_t y_stride) {
  if (x.rows >= KBatchMinRows(w.type) && KQuantBatchEnabled()) {
    // Whole 16-row tiles batched; the few rows left take the per-row kernel.
    const int64_t tiled = (row_end - row_begin) / kKBatchTileRows * kKBatchTileRows;
    MatMulKBatch(w, row_begin, row_begin + tiled, x, y, y_stride);
    row_begin += tiled;
    if (row_begin >= row_end) return;
  }
  MatMulK<8>(w, row_begin, row_end, x, y, y_stride, VnniKDot{});
}

#undef TOKENMILL_VNNI_TARGET

}  // namespace avx512
#endif

}  // namespace tokenmill::devices::cpu::internal
