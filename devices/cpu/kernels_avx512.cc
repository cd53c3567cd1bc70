// AVX-512 (F + BW + VL) kernels: 512-bit float paths with masked tails.
// Quantized weights use kernels_avx512_quant.cc (AVX-512 VNNI) or, on CPUs
// without VNNI, the AVX2 path. Compiled for that target per function (the
// pragma below, after every include).
#include <algorithm>
#include <cmath>

#include "devices/cpu/kernels_internal.h"
#include "devices/cpu/kernels_target.h"

#if defined(TOKENMILL_KERNELS_X86)

TOKENMILL_KERNELS_TARGET_BEGIN(TOKENMILL_ISA_AVX512)

namespace tokenmill::devices::cpu::internal::avx512 {
namespace {

__mmask16 TailMask(int64_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << n) - 1);
}

// Sum of the 16 lanes (shuffles within the zmm, then 128-bit adds).
float HorizontalSum(__m512 v) {
  v = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, 0x4e));  // swap 256-bit halves
  v = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, 0xb1));  // swap 128-bit lanes
  __m128 s = _mm512_castps512_ps128(v);
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Sixteen weight elements starting at element k of a row, as f32.
template <TensorType T>
__m512 LoadWeights16(const uint8_t* row, int64_t k) {
  if constexpr (T == TensorType::kF32) {
    return _mm512_loadu_ps(reinterpret_cast<const float*>(row) + k);
  } else if constexpr (T == TensorType::kF16) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 2 * k)));
  } else {  // bf16: the top half of an f32
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 2 * k));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(b), 16));
  }
}

// The lane sums of four vectors: lane r of the result sums v[r]. Cheaper
// than four HorizontalSums: the shuffles serve all four at once.
__m128 Sum4(const __m512 (&v)[4]) {
  // Per 128-bit quarter: v0/v1 lane pairs (0+2, 1+3) interleaved, same for v2/v3.
  const __m512 s01 = _mm512_add_ps(_mm512_unpacklo_ps(v[0], v[1]), _mm512_unpackhi_ps(v[0], v[1]));
  const __m512 s23 = _mm512_add_ps(_mm512_unpacklo_ps(v[2], v[3]), _mm512_unpackhi_ps(v[2], v[3]));
  // Per quarter: the partial sums of v0, v1, v2, v3; then the quarters added.
  const __m512 q = _mm512_add_ps(
      _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(s01), _mm512_castps_pd(s23))),
      _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(s01), _mm512_castps_pd(s23))));
  const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(q),
                                 _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(q), 1)));
  return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

// R weight rows x A activation rows, U accumulators per output (see avx2).
// With `prefetch`, `prefetch_step` bytes from there are prefetched per step
// (the caller's slice of the next tile), so the weight stream runs as one
// sequential stream at an even pace (see kernels_avx512_quant.cc:
// interleaved row streams alone leave memory bandwidth unused at M = 1).
template <TensorType T, int R, int A, int U>
void FloatTile(const uint8_t* const* w, const float* const* x, int64_t cols, const char* prefetch,
               int64_t prefetch_step, float* y, int64_t y_stride) {
  __m512 acc[R][A][U];
#pragma GCC unroll 64
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 64
    for (int a = 0; a < A; ++a)
#pragma GCC unroll 64
      for (int u = 0; u < U; ++u) acc[r][a][u] = _mm512_setzero_ps();
  for (int64_t k = 0; k < cols; k += 16 * U) {
    if (prefetch != nullptr) {
      const char* slice = prefetch + k / (16 * U) * prefetch_step;
      for (int64_t o = 0; o < prefetch_step; o += 64) PrefetchWeights(slice + o);
    }
#pragma GCC unroll 64
    for (int u = 0; u < U; ++u) {
      __m512 wv[R];
#pragma GCC unroll 64
      for (int r = 0; r < R; ++r) wv[r] = LoadWeights16<T>(w[r], k + 16 * u);
#pragma GCC unroll 64
      for (int a = 0; a < A; ++a) {
        const __m512 xv = _mm512_loadu_ps(x[a] + k + 16 * u);
#pragma GCC unroll 64
        for (int r = 0; r < R; ++r) acc[r][a][u] = _mm512_fmadd_ps(wv[r], xv, acc[r][a][u]);
      }
    }
  }
  __m512 sums[R][A];
#pragma GCC unroll 64
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 64
    for (int a = 0; a < A; ++a) {
      sums[r][a] = acc[r][a][0];
#pragma GCC unroll 64
      for (int u = 1; u < U; ++u) sums[r][a] = _mm512_add_ps(sums[r][a], acc[r][a][u]);
    }
#pragma GCC unroll 64
  for (int a = 0; a < A; ++a) {
    if constexpr (R == 4) {
      const __m512 v[4] = {sums[0][a], sums[1][a], sums[2][a], sums[3][a]};
      _mm_storeu_ps(y + a * y_stride, Sum4(v));
    } else {
#pragma GCC unroll 64
      for (int r = 0; r < R; ++r) y[a * y_stride + r] = HorizontalSum(sums[r][a]);
    }
  }
}

// One tile call: R weight rows from n against A activation rows from m, the
// group `group` of `groups` over this tile. With `prefetch` (the next tile
// exists), each group prefetches its share of the next tile: spread over all
// groups, the stream keeps pace with the FMAs however many rows there are
// (from the first group alone it would need several times the rate a core
// can pull from memory once the batch reaches a dozen rows).
template <TensorType T, int R, int A>
void Tile(const TensorView& w, int64_t n, const Activations& x, int64_t m, int64_t group,
          int64_t groups, bool prefetch, float* y, int64_t y_stride) {
  constexpr int U = A == 1 ? 2 : 1;
  const uint8_t* wr[R];
  for (int r = 0; r < R; ++r) wr[r] = w.row(n + r);
  const int64_t tile_bytes = R * static_cast<int64_t>(w.row_bytes());
  const int64_t share = (tile_bytes + groups - 1) / groups;
  const int64_t steps = x.cols / (16 * U);
  const char* next =
      prefetch ? reinterpret_cast<const char*>(wr[0]) + tile_bytes + group * share : nullptr;
  float* out = y + m * y_stride + n;
  const float* xr[A];
  for (int a = 0; a < A; ++a) xr[a] = x.f32 + (m + a) * x.cols;
  FloatTile<T, R, A, U>(wr, xr, x.cols, next, (share + steps - 1) / steps, out, y_stride);
}

// R weight rows from n against every activation row in [m0, m1), in
// near-equal groups of at most 6 (16 rows: 6 + 5 + 5): 24 accumulators, the
// 4 weight vectors and an activation fill the 32 zmm, and each converted
// weight vector serves up to 6 FMAs.
template <TensorType T, int R>
void TileRows(const TensorView& w, int64_t n, const Activations& x, int64_t m0, int64_t m1,
              bool prefetch, float* y, int64_t y_stride) {
  const int64_t rows = m1 - m0, groups = (rows + 5) / 6;
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t a0 = m0 + rows * g / groups, a1 = m0 + rows * (g + 1) / groups;
    switch (a1 - a0) {
      case 6:
        Tile<T, R, 6>(w, n, x, a0, g, groups, prefetch, y, y_stride);
        break;
      case 5:
        Tile<T, R, 5>(w, n, x, a0, g, groups, prefetch, y, y_stride);
        break;
      case 4:
        Tile<T, R, 4>(w, n, x, a0, g, groups, prefetch, y, y_stride);
        break;
      case 3:
        Tile<T, R, 3>(w, n, x, a0, g, groups, prefetch, y, y_stride);
        break;
      case 2:
        Tile<T, R, 2>(w, n, x, a0, g, groups, prefetch, y, y_stride);
        break;
      default:
        Tile<T, R, 1>(w, n, x, a0, g, groups, prefetch, y, y_stride);
        break;
    }
  }
}

// Activation cache blocks, then tiles of 4 weight rows, then groups of up
// to 6 activation rows (see avx2 for why this order).
template <TensorType T>
void MatMulTyped(const TensorView& w, int64_t row_begin, int64_t row_end, const Activations& x,
                 float* y, int64_t y_stride) {
  const int64_t block_rows = ActivationBlockRows(x.cols * 4);
  for (int64_t m0 = 0; m0 < x.rows; m0 += block_rows) {
    const int64_t m1 = std::min(x.rows, m0 + block_rows);
    int64_t n = row_begin;
    for (; n + 4 <= row_end; n += 4) {
      TileRows<T, 4>(w, n, x, m0, m1, n + 8 <= row_end, y, y_stride);
    }
    for (; n < row_end; ++n) TileRows<T, 1>(w, n, x, m0, m1, false, y, y_stride);
  }
}

// exp(x), Cephes expf scheme (see avx2), with vscalefps for the 2^n factor.
__m512 Exp(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(p, n);
}

__m512 LoadF16(const uint16_t* p, __mmask16 mask) {
  return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, p));
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
    case TensorType::kQ4_0:
    case TensorType::kQ4_K:
    case TensorType::kQ5_K:
    case TensorType::kQ6_K:
      return avx2::MatMulRows(w, row_begin, row_end, x, y, y_stride);
  }
}

void RmsNorm(const float* x, const float* weight, int64_t n, float eps, float* out) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m512 a = _mm512_loadu_ps(x + i), b = _mm512_loadu_ps(x + i + 16);
    acc0 = _mm512_fmadd_ps(a, a, acc0);
    acc1 = _mm512_fmadd_ps(b, b, acc1);
  }
  for (; i < n; i += 16) {
    const __m512 a = _mm512_maskz_loadu_ps(TailMask(n - i), x + i);
    acc0 = _mm512_fmadd_ps(a, a, acc0);
  }
  const double mean = HorizontalSum(_mm512_add_ps(acc0, acc1)) / static_cast<double>(n);
  const __m512 scale = _mm512_set1_ps(static_cast<float>(1.0 / std::sqrt(mean + eps)));
  for (i = 0; i < n; i += 16) {
    const __mmask16 mask = TailMask(n - i);
    const __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, x + i), scale);
    _mm512_mask_storeu_ps(out + i, mask, _mm512_mul_ps(v, _mm512_maskz_loadu_ps(mask, weight + i)));
  }
}

void SiluMul(float* gate, const float* up, int64_t n) {
  const __m512 one = _mm512_set1_ps(1.0f);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 mask = TailMask(n - i);
    const __m512 g = _mm512_maskz_loadu_ps(mask, gate + i);
    const __m512 e = Exp(_mm512_sub_ps(_mm512_setzero_ps(), g));
    const __m512 silu = _mm512_div_ps(g, _mm512_add_ps(one, e));
    _mm512_mask_storeu_ps(gate + i, mask, _mm512_mul_ps(silu, _mm512_maskz_loadu_ps(mask, up + i)));
  }
}

void Add(float* y, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 mask = TailMask(n - i);
    const __m512 s =
        _mm512_add_ps(_mm512_maskz_loadu_ps(mask, y + i), _mm512_maskz_loadu_ps(mask, x + i));
    _mm512_mask_storeu_ps(y + i, mask, s);
  }
}

float DotF32(const float* a, const float* b, int64_t n) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
    acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), acc1);
  }
  for (; i < n; i += 16) {
    const __mmask16 mask = TailMask(n - i);
    acc0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, a + i), _mm512_maskz_loadu_ps(mask, b + i),
                           acc0);
  }
  return HorizontalSum(_mm512_add_ps(acc0, acc1));
}

float DotF16(const uint16_t* a, const float* b, int64_t n) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    acc0 = _mm512_fmadd_ps(LoadF16(a + i, 0xffff), _mm512_loadu_ps(b + i), acc0);
    acc1 = _mm512_fmadd_ps(LoadF16(a + i + 16, 0xffff), _mm512_loadu_ps(b + i + 16), acc1);
  }
  for (; i < n; i += 16) {
    const __mmask16 mask = TailMask(n - i);
    acc0 = _mm512_fmadd_ps(LoadF16(a + i, mask), _mm512_maskz_loadu_ps(mask, b + i), acc0);
  }
  return HorizontalSum(_mm512_add_ps(acc0, acc1));
}

void AxpyF32(float a, const float* x, float* y, int64_t n) {
  const __m512 av = _mm512_set1_ps(a);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 mask = TailMask(n - i);
    const __m512 r =
        _mm512_fmadd_ps(av, _mm512_maskz_loadu_ps(mask, x + i), _mm512_maskz_loadu_ps(mask, y + i));
    _mm512_mask_storeu_ps(y + i, mask, r);
  }
}

void AxpyF16(float a, const uint16_t* x, float* y, int64_t n) {
  const __m512 av = _mm512_set1_ps(a);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 mask = TailMask(n - i);
    const __m512 r = _mm512_fmadd_ps(av, LoadF16(x + i, mask), _mm512_maskz_loadu_ps(mask, y + i));
    _mm512_mask_storeu_ps(y + i, mask, r);
  }
}

void StoreF16(const float* x, uint16_t* out, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 mask = TailMask(n - i);
    const __m256i h =
        _mm512_cvtps_ph(_mm512_maskz_loadu_ps(mask, x + i), _MM_FROUND_TO_NEAREST_INT);
    _mm256_mask_storeu_epi16(out + i, mask, h);
  }
}

}  // namespace tokenmill::devices::cpu::internal::avx512

TOKENMILL_KERNELS_TARGET_END

#endif  // TOKENMILL_KERNELS_X86
