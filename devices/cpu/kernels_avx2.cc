// AVX2 + FMA + F16C kernels. Compiled for that target per function (the
// pragma below, after every include), so the rest of the library stays
// baseline x86-64; the dispatcher calls in only when the CPU has them.
#include <algorithm>
#include <cmath>

#include "devices/cpu/kernels_internal.h"
#include "devices/cpu/kernels_target.h"

#if defined(TOKENMILL_KERNELS_X86)

TOKENMILL_KERNELS_TARGET_BEGIN(TOKENMILL_ISA_AVX2)

namespace tokenmill::devices::cpu::internal::avx2 {
namespace {

float HorizontalSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Lanes [0, n) set, n in [0, 8]: masked loads and stores for loop tails.
__m256i TailMask(int64_t n) {
  static const int32_t kBits[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kBits + 8 - n));
}

// Eight weight elements starting at element k of a row, as f32.
template <TensorType T>
__m256 LoadWeights8(const uint8_t* row, int64_t k) {
  if constexpr (T == TensorType::kF32) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(row) + k);
  } else if constexpr (T == TensorType::kF16) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * k)));
  } else {  // bf16: the top half of an f32
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * k));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(b), 16));
  }
}

// R weight rows x A activation rows: each weight vector loaded once feeds A
// FMAs. U independent accumulators per output hide the FMA latency when A is
// small.
template <TensorType T, int R, int A, int U>
void FloatTile(const uint8_t* const* w, const float* const* x, int64_t cols, const char* prefetch,
               int64_t prefetch_step, float* y, int64_t y_stride) {
  __m256 acc[R][A][U];
#pragma GCC unroll 64
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 64
    for (int a = 0; a < A; ++a)
#pragma GCC unroll 64
      for (int u = 0; u < U; ++u) acc[r][a][u] = _mm256_setzero_ps();
  for (int64_t k = 0; k < cols; k += 8 * U) {
    if (prefetch != nullptr) {
      const char* slice = prefetch + k / (8 * U) * prefetch_step;
      for (int64_t o = 0; o < prefetch_step; o += 64) PrefetchWeights(slice + o);
    }
#pragma GCC unroll 64
    for (int u = 0; u < U; ++u) {
      __m256 wv[R];
#pragma GCC unroll 64
      for (int r = 0; r < R; ++r) wv[r] = LoadWeights8<T>(w[r], k + 8 * u);
#pragma GCC unroll 64
      for (int a = 0; a < A; ++a) {
        const __m256 xv = _mm256_loadu_ps(x[a] + k + 8 * u);
#pragma GCC unroll 64
        for (int r = 0; r < R; ++r) acc[r][a][u] = _mm256_fmadd_ps(wv[r], xv, acc[r][a][u]);
      }
    }
  }
#pragma GCC unroll 64
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 64
    for (int a = 0; a < A; ++a) {
      __m256 s = acc[r][a][0];
#pragma GCC unroll 64
      for (int u = 1; u < U; ++u) s = _mm256_add_ps(s, acc[r][a][u]);
      y[a * y_stride + r] = HorizontalSum(s);
    }
}

// 32 int8 weights of one block: Q8_0 as stored; Q4_0 low nibbles are
// elements 0..15, high nibbles 16..31, minus 8.
template <TensorType T>
__m256i LoadWeightBlock(const uint8_t* block) {
  if constexpr (T == TensorType::kQ8_0) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 2));
  } else {
    const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 2));
    const __m128i low4 = _mm_set1_epi8(0x0f);
    const __m128i lo = _mm_and_si128(packed, low4);
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(packed, 4), low4);
    return _mm256_sub_epi8(_mm256_set_m128i(hi, lo), _mm256_set1_epi8(8));
  }
}

// Quantized weights against Q8_0 activations: per block an exact int32 dot
// product (maddubs takes unsigned x signed, so |w| times x with w's sign),
// scaled by d_w * d_x in f32.
template <TensorType T, int R, int A>
void QuantTile(const uint8_t* const* w, const uint8_t* const* x, int64_t blocks, float* y,
               int64_t y_stride) {
  constexpr int64_t kWBytes = T == TensorType::kQ8_0 ? kQ8BlockBytes : kQ4BlockBytes;
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[R][A];
#pragma GCC unroll 64
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 64
    for (int a = 0; a < A; ++a) acc[r][a] = _mm256_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    __m256i wq[R], wabs[R];
    float dw[R];
#pragma GCC unroll 64
    for (int r = 0; r < R; ++r) {
      const uint8_t* wb = w[r] + b * kWBytes;
      wq[r] = LoadWeightBlock<T>(wb);
      wabs[r] = _mm256_sign_epi8(wq[r], wq[r]);
      dw[r] = _cvtsh_ss(LoadU16(wb));
    }
#pragma GCC unroll 64
    for (int a = 0; a < A; ++a) {
      const uint8_t* xb = x[a] + b * kQ8BlockBytes;
      const __m256i xq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xb + 2));
      const float dx = _cvtsh_ss(LoadU16(xb));
#pragma GCC unroll 64
      for (int r = 0; r < R; ++r) {
        const __m256i prod16 = _mm256_maddubs_epi16(wabs[r], _mm256_sign_epi8(xq, wq[r]));
        const __m256 dot = _mm256_cvtepi32_ps(_mm256_madd_epi16(prod16, ones));
        acc[r][a] = _mm256_fmadd_ps(dot, _mm256_set1_ps(dw[r] * dx), acc[r][a]);
      }
    }
  }
#pragma GCC unroll 64
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 64
    for (int a = 0; a < A; ++a) y[a * y_stride + r] = HorizontalSum(acc[r][a]);
}

// One tile call: R weight rows from n against A activation rows from m.
template <TensorType T, int R, int A>
void Tile(const TensorView& w, int64_t n, const Activations& x, int64_t m, int64_t group,
          int64_t groups, bool prefetch, float* y, int64_t y_stride) {
  const uint8_t* wr[R];
  for (int r = 0; r < R; ++r) wr[r] = w.row(n + r);
  float* out = y + m * y_stride + n;
  if constexpr (T == TensorType::kQ8_0 || T == TensorType::kQ4_0) {
    const uint8_t* xr[A];
    for (int a = 0; a < A; ++a) xr[a] = x.q8 + (m + a) * Q8RowBytes(x.cols);
    QuantTile<T, R, A>(wr, xr, x.cols / kBlock, out, y_stride);
  } else {
    const float* xr[A];
    for (int a = 0; a < A; ++a) xr[a] = x.f32 + (m + a) * x.cols;
    constexpr int U = A == 1 ? 2 : 1;
    const int64_t tile_bytes = R * static_cast<int64_t>(w.row_bytes());
    const int64_t share = (tile_bytes + groups - 1) / groups;
    const int64_t steps = x.cols / (8 * U);
    const char* next =
        prefetch ? reinterpret_cast<const char*>(wr[0]) + tile_bytes + group * share : nullptr;
    FloatTile<T, R, A, U>(wr, xr, x.cols, next, (share + steps - 1) / steps, out, y_stride);
  }
}

// R weight rows from n against every activation row in [m0, m1), 4 at a
// time. Float weights with `prefetch` (the next tile exists): each group
// prefetches its share of the next tile, so the weight stream runs at an
// even pace whatever the batch (see avx512).
template <TensorType T, int R>
void TileRows(const TensorView& w, int64_t n, const Activations& x, int64_t m0, int64_t m1,
              bool prefetch, float* y, int64_t y_stride) {
  const int64_t groups = (m1 - m0 + 3) / 4;
  int64_t m = m0, g = 0;
  for (; m + 4 <= m1; m += 4, ++g) Tile<T, R, 4>(w, n, x, m, g, groups, prefetch, y, y_stride);
  switch (m1 - m) {
    case 3:
      return Tile<T, R, 3>(w, n, x, m, g, groups, prefetch, y, y_stride);
    case 2:
      return Tile<T, R, 2>(w, n, x, m, g, groups, prefetch, y, y_stride);
    case 1:
      return Tile<T, R, 1>(w, n, x, m, g, groups, prefetch, y, y_stride);
    default:
      return;
  }
}

// Loops over cache blocks of activation rows, then tiles of weight rows, then
// groups of up to 4 activation rows: a weight tile is fetched from memory once
// per activation block and reused from cache by every group.
template <TensorType T>
void MatMulTyped(const TensorView& w, int64_t row_begin, int64_t row_end, const Activations& x,
                 float* y, int64_t y_stride) {
  constexpr bool kQuant = T == TensorType::kQ8_0 || T == TensorType::kQ4_0;
  const int64_t block_rows = ActivationBlockRows(kQuant ? Q8RowBytes(x.cols) : x.cols * 4);
  for (int64_t m0 = 0; m0 < x.rows; m0 += block_rows) {
    const int64_t m1 = std::min(x.rows, m0 + block_rows);
    int64_t n = row_begin;
    for (; n + 2 <= row_end; n += 2) {
      TileRows<T, 2>(w, n, x, m0, m1, !kQuant && n + 4 <= row_end, y, y_stride);
    }
    if (n < row_end) TileRows<T, 1>(w, n, x, m0, m1, false, y, y_stride);
  }
}

// exp(x) in the Cephes expf scheme: x = n ln2 + r, |r| <= ln2/2, a degree-7
// polynomial for e^r, 2^n built in the exponent bits. Relative error about
// 2e-7 on [-87, 88] (inputs are clamped there).
__m256 Exp(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i e =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

__m256 SiluMul8(__m256 g, __m256 u) {
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 e = Exp(_mm256_sub_ps(_mm256_setzero_ps(), g));
  return _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(one, e)), u);
}

}  // namespace

void MatMulRows(const TensorView& w, int64_t row_begin, int64_t row_end, const Activations& x,
                float* y, int64_t y_stride) {
  switch (w.type) {
    case TensorType::kF32:
      return MatMulTyped<TensorType::kF32>(w, row_begin, row_end, x, y, y_stride);
    case TensorType::kF16:
      return MatMulTyped<TensorType::kF16>(w, row_begin, row_end, x, y, y_stride);
    case TensorType::kBF16:
      return MatMulTyped<TensorType::kBF16>(w, row_begin, row_end, x, y, y_stride);
    case TensorType::kQ8_0:
      return MatMulTyped<TensorType::kQ8_0>(w, row_begin, row_end, x, y, y_stride);
    case TensorType::kQ4_0:
      return MatMulTyped<TensorType::kQ4_0>(w, row_begin, row_end, x, y, y_stride);
    case TensorType::kQ4_K:
    case TensorType::kQ5_K:
    case TensorType::kQ6_K:
      return MatMulKQuant(w, row_begin, row_end, x, y, y_stride);
  }
}

void RmsNorm(const float* x, const float* weight, int64_t n, float eps, float* out) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256 a = _mm256_loadu_ps(x + i), b = _mm256_loadu_ps(x + i + 8);
    acc0 = _mm256_fmadd_ps(a, a, acc0);
    acc1 = _mm256_fmadd_ps(b, b, acc1);
  }
  for (; i < n; i += 8) {
    const __m256 a = _mm256_maskload_ps(x + i, TailMask(std::min<int64_t>(8, n - i)));
    acc0 = _mm256_fmadd_ps(a, a, acc0);
  }
  const double mean = HorizontalSum(_mm256_add_ps(acc0, acc1)) / static_cast<double>(n);
  const __m256 scale = _mm256_set1_ps(static_cast<float>(1.0 / std::sqrt(mean + eps)));
  for (i = 0; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + i), scale);
    _mm256_storeu_ps(out + i, _mm256_mul_ps(v, _mm256_loadu_ps(weight + i)));
  }
  if (i < n) {
    const __m256i mask = TailMask(n - i);
    const __m256 v = _mm256_mul_ps(_mm256_maskload_ps(x + i, mask), scale);
    _mm256_maskstore_ps(out + i, mask, _mm256_mul_ps(v, _mm256_maskload_ps(weight + i, mask)));
  }
}

void SiluMul(float* gate, const float* up, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(gate + i, SiluMul8(_mm256_loadu_ps(gate + i), _mm256_loadu_ps(up + i)));
  }
  if (i < n) {
    const __m256i mask = TailMask(n - i);
    const __m256 v = SiluMul8(_mm256_maskload_ps(gate + i, mask), _mm256_maskload_ps(up + i, mask));
    _mm256_maskstore_ps(gate + i, mask, v);
  }
}

void Add(float* y, const float* x, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(y + i), _mm256_loadu_ps(x + i)));
  }
  for (; i < n; ++i) y[i] += x[i];
}

float DotF32(const float* a, const float* b, int64_t n) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
  }
  for (; i < n; i += 8) {
    const __m256i mask = TailMask(std::min<int64_t>(8, n - i));
    acc0 = _mm256_fmadd_ps(_mm256_maskload_ps(a + i, mask), _mm256_maskload_ps(b + i, mask), acc0);
  }
  return HorizontalSum(_mm256_add_ps(acc0, acc1));
}

float DotF16(const uint16_t* a, const float* b, int64_t n) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(LoadWeights8<TensorType::kF16>(reinterpret_cast<const uint8_t*>(a), i),
                           _mm256_loadu_ps(b + i), acc0);
    acc1 =
        _mm256_fmadd_ps(LoadWeights8<TensorType::kF16>(reinterpret_cast<const uint8_t*>(a), i + 8),
                        _mm256_loadu_ps(b + i + 8), acc1);
  }
  float sum = HorizontalSum(_mm256_add_ps(acc0, acc1));
  for (; i < n; ++i) sum += HalfToFloat(a[i]) * b[i];
  return sum;
}

void AxpyF32(float a, const float* x, float* y, int64_t n) {
  const __m256 av = _mm256_set1_ps(a);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  }
  for (; i < n; ++i) y[i] = std::fma(a, x[i], y[i]);
}

void AxpyF16(float a, const uint16_t* x, float* y, int64_t n) {
  const __m256 av = _mm256_set1_ps(a);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 xv = LoadWeights8<TensorType::kF16>(reinterpret_cast<const uint8_t*>(x), i);
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, xv, _mm256_loadu_ps(y + i)));
  }
  for (; i < n; ++i) y[i] = std::fma(a, HalfToFloat(x[i]), y[i]);
}

void StoreF16(const float* x, uint16_t* out, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), h);
  }
  for (; i < n; ++i) out[i] = FloatToHalf(x[i]);
}

}  // namespace tokenmill::devices::cpu::internal::avx2

TOKENMILL_KERNELS_TARGET_END

#endif  // TOKENMILL_KERNELS_X86
