// K-quants (Q4_K, Q5_K, Q6_K: GGUF super-blocks of 256): quantizing rows for
// model files, dequantizing them, and their matmuls against Q8_0 activations.
//
// A super-block is unpacked once per weight row into int8 values (Q4_K/Q5_K
// unsigned 0..15 / 0..31, Q6_K signed -32..31), a scale per 16 values and a
// min per 32, so that both matmuls are int8 dot products per 32-value
// activation block: d_a * (s_lo * sum(q a)[0..16) + s_hi * sum(q a)[16..32)
// - min * sum(a)). The activation sums come with the prepared Q8_0 rows.
#include <algorithm>
#include <cmath>

#include "devices/cpu/kernels_internal.h"

#if defined(TOKENMILL_KERNELS_X86)
#include <immintrin.h>
#endif

namespace tokenmill::devices::cpu::internal {
namespace {

constexpr int64_t kSuper = 256;
// Super-blocks unpacked at a time: 2 KiB of int8 values stay in L1 while
// every activation row of the block is multiplied with them.
constexpr int64_t kChunkSupers = 8;

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

// The prepared Q8_0 row's per-block f32 scale and sum of its int8 values.
inline float ActScale(const uint8_t* row, int64_t cols, int64_t block) {
  float d;
  std::memcpy(&d, row + Q8ScalesOffset(cols) + 4 * block, sizeof(d));
  return d;
}
inline float ActSum(const uint8_t* row, int64_t cols, int64_t block) {
  int32_t correction;
  std::memcpy(&correction, row + Q8CorrectionsOffset(cols) + 4 * block, sizeof(correction));
  return static_cast<float>(-correction / 128);
}

// The loop both ISAs share: each weight row unpacked a chunk of super-blocks
// at a time, then dot.Rows<type, R>(...) adds the chunk's contribution to R
// activation rows at a time (4, then the rest one by one).
template <TensorType kType, typename DotChunk>
__attribute__((always_inline)) inline void MatMulKTyped(const TensorView& w, int64_t row_begin,
                                                        int64_t row_end, const Activations& x,
                                                        float* y, int64_t y_stride, DotChunk dot) {
  const int64_t supers = x.cols / kSuper;
  const size_t super_bytes = TensorTypeBlockBytes(w.type);
  const int64_t x_row_bytes = Q8RowBytes(x.cols);
  const int64_t block_rows = ActivationBlockRows(x_row_bytes);
  alignas(64) int8_t q[kChunkSupers * kSuper];
  alignas(64) float scale16[kChunkSupers * 16];
  alignas(64) float min32[kChunkSupers * 8];
  for (int64_t m0 = 0; m0 < x.rows; m0 += block_rows) {
    const int64_t m1 = std::min(x.rows, m0 + block_rows);
    for (int64_t n = row_begin; n < row_end; ++n) {
      const uint8_t* row = w.row(n);
      for (int64_t m = m0; m < m1; ++m) y[m * y_stride + n] = 0.0f;
      for (int64_t c = 0; c < supers; c += kChunkSupers) {
        const int64_t count = std::min(kChunkSupers, supers - c);
        for (int64_t b = 0; b < count; ++b) {
          UnpackSuper<kType>(row + static_cast<size_t>(c + b) * super_bytes, q + b * kSuper,
                             scale16 + b * 16, min32 + b * 8);
        }
        int64_t m = m0;
        for (; m + 4 <= m1; m += 4) {
          dot.template Rows<kType, 4>(q, scale16, min32, count, x.q8 + m * x_row_bytes, x_row_bytes,
                                      x.cols, c * 8, y + m * y_stride + n, y_stride);
        }
        for (; m < m1; ++m) {
          dot.template Rows<kType, 1>(q, scale16, min32, count, x.q8 + m * x_row_bytes, x_row_bytes,
                                      x.cols, c * 8, y + m * y_stride + n, y_stride);
        }
      }
    }
  }
}

template <typename DotChunk>
__attribute__((always_inline)) inline void MatMulK(const TensorView& w, int64_t row_begin,
                                                   int64_t row_end, const Activations& x, float* y,
                                                   int64_t y_stride, DotChunk dot) {
  switch (w.type) {
    case TensorType::kQ4_K:
      return MatMulKTyped<TensorType::kQ4_K>(w, row_begin, row_end, x, y, y_stride, dot);
    case TensorType::kQ5_K:
      return MatMulKTyped<TensorType::kQ5_K>(w, row_begin, row_end, x, y, y_stride, dot);
    default:
      return MatMulKTyped<TensorType::kQ6_K>(w, row_begin, row_end, x, y, y_stride, dot);
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

namespace scalar {

namespace {

struct ScalarKDot {
  float operator()(const int8_t* q, const float* scale16, const float* min32, int64_t supers,
                   const uint8_t* xrow, int64_t cols, int64_t first_block) const {
    float total = 0.0f;
    for (int64_t s = 0; s < supers * 8; ++s) {
      const auto* a = reinterpret_cast<const int8_t*>(xrow + (first_block + s) * kQ8BlockBytes + 2);
      const int8_t* v = q + s * 32;
      int32_t lo = 0, hi = 0;
      for (int i = 0; i < 16; ++i) lo += v[i] * a[i];
      for (int i = 16; i < 32; ++i) hi += v[i] * a[i];
      const float part = scale16[2 * s] * static_cast<float>(lo) +
                         scale16[2 * s + 1] * static_cast<float>(hi) -
                         min32[s] * ActSum(xrow, cols, first_block + s);
      total += ActScale(xrow, cols, first_block + s) * part;
    }
    return total;
  }

  template <TensorType, int kRows>
  void Rows(const int8_t* q, const float* scale16, const float* min32, int64_t supers,
            const uint8_t* xrow, int64_t x_stride, int64_t cols, int64_t first_block, float* y,
            int64_t y_stride) const {
    for (int r = 0; r < kRows; ++r) {
      y[r * y_stride] += (*this)(q, scale16, min32, supers, xrow + r * x_stride, cols, first_block);
    }
  }
};

}  // namespace

void MatMulKQuant(const TensorView& w, int64_t row_begin, int64_t row_end, const Activations& x,
                  float* y, int64_t y_stride) {
  MatMulK(w, row_begin, row_end, x, y, y_stride, ScalarKDot{});
}

}  // namespace scalar

#if defined(TOKENMILL_KERNELS_X86)
namespace avx2 {

namespace {

// vpmaddubsw takes unsigned x signed bytes: Q4_K/Q5_K values are unsigned
// already; Q6_K's go in as |q| with a taking q's sign. Exact either way
// (|q| <= 32, |a| <= 127: pair sums fit int16). Each weight block is loaded
// once for kRows activation rows.
struct Avx2KDot {
  template <TensorType kType, int kRows>
  __attribute__((target("avx2,fma,f16c"))) void Rows(const int8_t* q, const float* scale16,
                                                     const float* min32, int64_t supers,
                                                     const uint8_t* xrow, int64_t x_stride,
                                                     int64_t cols, int64_t first_block, float* y,
                                                     int64_t y_stride) const {
    constexpr bool kSigned = kType == TensorType::kQ6_K;
    const __m256i ones = _mm256_set1_epi16(1);
    const __m256i halves = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
    const int64_t blocks = supers * 8;
    const float* act_scale[kRows];
    __m256 acc[kRows];
    for (int r = 0; r < kRows; ++r) {
      act_scale[r] =
          reinterpret_cast<const float*>(xrow + r * x_stride + Q8ScalesOffset(cols)) + first_block;
      acc[r] = _mm256_setzero_ps();
    }
    for (int64_t s = 0; s < blocks; ++s) {
      const __m256i v = _mm256_load_si256(reinterpret_cast<const __m256i*>(q + s * 32));
      const __m256i v_unsigned = kSigned ? _mm256_sign_epi8(v, v) : v;
      // int32 lanes 0..3 take values 0..15, lanes 4..7 values 16..31: Q6_K's
      // two sub-blocks of 16 have scales of their own.
      const __m256 w_scale =
          kSigned ? _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_setr_ps(
                                                 scale16[2 * s], scale16[2 * s + 1], 0.0f, 0.0f)),
                                             halves)
                  : _mm256_set1_ps(scale16[2 * s]);
      for (int r = 0; r < kRows; ++r) {
        __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(
            xrow + r * x_stride + (first_block + s) * kQ8BlockBytes + 2));
        if (kSigned) a = _mm256_sign_epi8(a, v);
        const __m256 sums =
            _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(v_unsigned, a), ones));
        acc[r] = _mm256_fmadd_ps(
            sums, _mm256_mul_ps(w_scale, _mm256_broadcast_ss(act_scale[r] + s)), acc[r]);
      }
    }
    const __m256 minus_128th = _mm256_set1_ps(-1.0f / 128.0f);
    for (int r = 0; r < kRows; ++r) {
      if (!kSigned) {
        // The mins: min * d_a * sum(a) per block, eight blocks a step.
        const auto* corrections =
            reinterpret_cast<const int32_t*>(xrow + r * x_stride + Q8CorrectionsOffset(cols)) +
            first_block;
        for (int64_t s = 0; s < blocks; s += 8) {
          const __m256 asum = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_loadu_si256(
                                                reinterpret_cast<const __m256i*>(corrections + s))),
                                            minus_128th);
          const __m256 weighted =
              _mm256_mul_ps(_mm256_loadu_ps(min32 + s), _mm256_loadu_ps(act_scale[r] + s));
          acc[r] = _mm256_fnmadd_ps(weighted, asum, acc[r]);
        }
      }
      const __m128 h = _mm_add_ps(_mm256_castps256_ps128(acc[r]), _mm256_extractf128_ps(acc[r], 1));
      const __m128 h2 = _mm_add_ps(h, _mm_movehl_ps(h, h));
      y[r * y_stride] += _mm_cvtss_f32(_mm_add_ss(h2, _mm_movehdup_ps(h2)));
    }
  }
};

}  // namespace

__attribute__((target("avx2,fma,f16c"))) void MatMulKQuant(const TensorView& w, int64_t row_begin,
                                                           int64_t row_end, const Activations& x,
                                                           float* y, int64_t y_stride) {
  MatMulK(w, row_begin, row_end, x, y, y_stride, Avx2KDot{});
}

}  // namespace avx2
#endif

}  // namespace tokenmill::devices::cpu::internal
