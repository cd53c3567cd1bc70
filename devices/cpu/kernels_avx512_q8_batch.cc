// MatMulRows for Q8_0 weights against many activation rows, AVX-512 VNNI.
//
// The pair kernel (kernels_avx512_quant.cc) keeps one output per register and
// so pays a convert, a scale product and an FMA for every vpdpbusd: at batch
// sizes where the matmul is compute-bound those dominate. Here a register
// holds 16 outputs instead, one per weight row: the 32-byte blocks of 16
// weight rows are transposed in registers into 8 zmm, zmm i holding bytes
// 4i..4i+3 of each row's block (offset to unsigned, as in the pair kernel),
// so that one vpdpbusd with four activation bytes broadcast does 16 rows x 4
// elements. Per block and activation row that is 8 vpdpbusd, one convert,
// one multiply and one FMA; the transpose and the 16 weight scales (a
// gather) are paid once per block for every activation row. The activation
// scale and offset correction come precomputed from PrepareActivationRows.
//
// Everything in this file needs AVX-512 F+BW+VL+VNNI; the dispatcher calls it
// only when HostCpuFeatures().avx512_vnni.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <algorithm>
#include <cstring>
#include <utility>

#include "devices/cpu/kernels_internal.h"

#if defined(TOKENMILL_KERNELS_X86)

#if defined(__clang__)
#pragma clang attribute push(                                                      \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c"))), \
    apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")
#endif

namespace tokenmill::devices::cpu::internal::avx512 {
namespace {

constexpr int kRows = static_cast<int>(kQ8BatchTileRows);
// Most activation rows one tile call takes: 16 accumulators, 8 weight
// registers, the scales and temporaries fill the 32 zmm.
constexpr int kMaxGroup = 16;

// Weight row of output lane l after the transpose: lanes come out as rows
// 0-3, 8-11, 4-7, 12-15 (the last shuffle picks 128-bit quarters), so the
// accumulators get their quarters 1 and 2 swapped before the store.
constexpr int LaneRow(int lane) {
  const int quarter = lane / 4;
  const int base[4] = {0, 8, 4, 12};
  return base[quarter] + lane % 4;
}

int32_t LoadI32(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

float LoadF32(const uint8_t* p) {
  float v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// Block b of 16 weight rows (row r at w + r * stride) as 8 zmm of unsigned
// bytes: register i, lane l = bytes 4i..4i+3 of row LaneRow(l).
__attribute__((always_inline)) inline void TransposeBlock(const uint8_t* w, int64_t stride,
                                                          __m512i offset, __m512i (&out)[8]) {
  __m512i z[8];
#pragma GCC unroll 8
  for (int r = 0; r < 8; ++r) {
    const uint8_t* lo = w + r * stride + 2;
    const uint8_t* hi = w + (r + 8) * stride + 2;
    z[r] = _mm512_inserti64x4(
        _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(lo))),
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(hi)), 1);
    z[r] = _mm512_xor_si512(z[r], offset);
  }
  // z[r] quarters: row r dwords 0-3, row r dwords 4-7, row r+8 0-3, r+8 4-7.
  // Two unpack stages make 4x4 dword transposes inside each quarter.
  __m512i v[2][4];
#pragma GCC unroll 2
  for (int g = 0; g < 2; ++g) {
    const __m512i* q = z + 4 * g;
    const __m512i lo01 = _mm512_unpacklo_epi32(q[0], q[1]),
                  hi01 = _mm512_unpackhi_epi32(q[0], q[1]);
    const __m512i lo23 = _mm512_unpacklo_epi32(q[2], q[3]),
                  hi23 = _mm512_unpackhi_epi32(q[2], q[3]);
    v[g][0] = _mm512_unpacklo_epi64(lo01, lo23);
    v[g][1] = _mm512_unpackhi_epi64(lo01, lo23);
    v[g][2] = _mm512_unpacklo_epi64(hi01, hi23);
    v[g][3] = _mm512_unpackhi_epi64(hi01, hi23);
  }
  // v[g][j] quarters: rows 4g..4g+3 dword j, same rows dword j+4, rows
  // 4g+8.. dword j, dword j+4. Gather the dword-j quarters of both groups.
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) {
    out[j] = _mm512_shuffle_i32x4(v[0][j], v[1][j], _MM_SHUFFLE(2, 0, 2, 0));
    out[j + 4] = _mm512_shuffle_i32x4(v[0][j], v[1][j], _MM_SHUFFLE(3, 1, 3, 1));
  }
}

// 16 weight rows from w against A activation rows from x (stride
// x_stride): y[a * y_stride + r] for r < 16. `next` (the following tile,
// contiguous) is prefetched a slice per block when not null.
template <int A>
void BatchTile(const uint8_t* w, int64_t w_stride, const uint8_t* x, int64_t x_stride, int64_t cols,
               const char* next, float* y, int64_t y_stride) {
  const int64_t blocks = cols / kBlock;
  const int64_t scales = Q8ScalesOffset(cols), corrections = Q8CorrectionsOffset(cols);
  const __m512i offset = _mm512_set1_epi8(static_cast<char>(0x80));
  alignas(64) int32_t row_offsets[kRows];
  for (int l = 0; l < kRows; ++l) row_offsets[l] = static_cast<int32_t>(LaneRow(l) * w_stride);
  const __m512i gather_index = _mm512_load_si512(row_offsets);
  constexpr int64_t kSliceBytes = kRows * kQ8BlockBytes;

  __m512 acc[A];
#pragma GCC unroll 16
  for (int a = 0; a < A; ++a) acc[a] = _mm512_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    if (next != nullptr) {
      const char* slice = next + b * kSliceBytes;
#pragma GCC unroll 16
      for (int64_t o = 0; o < kSliceBytes + 63; o += 64) _mm_prefetch(slice + o, _MM_HINT_T0);
    }
    const uint8_t* wb = w + b * kQ8BlockBytes;
    __m512i wq[8];
    TransposeBlock(wb, w_stride, offset, wq);
    // The f16 scale is the low half of the dword at each row's block start.
    const __m512 dw =
        _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_i32gather_epi32(gather_index, wb, 1)));
#pragma GCC unroll 16
    for (int a = 0; a < A; ++a) {
      const uint8_t* row = x + a * x_stride;
      const uint8_t* q = row + b * kQ8BlockBytes + 2;
      // Two chains of four, so that the vpdpbusd latency overlaps.
      __m512i d0 = _mm512_set1_epi32(LoadI32(row + corrections + 4 * b));
      __m512i d1 = _mm512_setzero_si512();
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) {
        d0 = _mm512_dpbusd_epi32(d0, wq[i], _mm512_set1_epi32(LoadI32(q + 4 * i)));
        d1 = _mm512_dpbusd_epi32(d1, wq[i + 4], _mm512_set1_epi32(LoadI32(q + 16 + 4 * i)));
      }
      const __m512 s = _mm512_mul_ps(dw, _mm512_set1_ps(LoadF32(row + scales + 4 * b)));
      acc[a] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(d0, d1)), s, acc[a]);
    }
  }
#pragma GCC unroll 16
  for (int a = 0; a < A; ++a) {
    _mm512_storeu_ps(y + a * y_stride,
                     _mm512_shuffle_f32x4(acc[a], acc[a], _MM_SHUFFLE(3, 1, 2, 0)));
  }
}

using TileFn = void (*)(const uint8_t*, int64_t, const uint8_t*, int64_t, int64_t, const char*,
                        float*, int64_t);

template <int... A>
constexpr TileFn PickTile(int a, std::integer_sequence<int, A...>) {
  TileFn fn = nullptr;
  ((fn = (a == A + 1) ? &BatchTile<A + 1> : fn), ...);
  return fn;
}

}  // namespace

void MatMulQ8Batch(const TensorView& w, int64_t row_begin, int64_t row_end, const Activations& x,
                   float* y, int64_t y_stride) {
  const int64_t w_stride = static_cast<int64_t>(w.row_bytes());
  const int64_t x_stride = Q8RowBytes(x.cols);
  // Activation rows in near-equal groups of at most 16 (17 rows: 9 + 8).
  const int64_t groups = (x.rows + kMaxGroup - 1) / kMaxGroup;
  for (int64_t n = row_begin; n + kRows <= row_end; n += kRows) {
    const uint8_t* wn = w.row(n);
    const bool more = n + 2 * kRows <= row_end;
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t m0 = x.rows * g / groups, m1 = x.rows * (g + 1) / groups;
      // Only the first group prefetches; later ones find the tile in cache.
      const char* next =
          g == 0 && more ? reinterpret_cast<const char*>(wn + kRows * w_stride) : nullptr;
      const TileFn tile =
          PickTile(static_cast<int>(m1 - m0), std::make_integer_sequence<int, kMaxGroup>());
      tile(wn, w_stride, x.q8 + m0 * x_stride, x_stride, x.cols, next, y + m0 * y_stride + n,
           y_stride);
    }
  }
}

}  // namespace tokenmill::devices::cpu::internal::avx512

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#endif  // TOKENMILL_KERNELS_X86
