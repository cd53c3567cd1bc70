// MatMulRows for K-quant weights (Q4_K, Q5_K, Q6_K) against many activation
// rows, AVX-512 VNNI: the K-quant counterpart of the Q8_0 batch kernel
// (kernels_avx512_q8_batch.cc).
//
// The per-row kernel (kernels_kquant.cc) decodes a weight super-block once
// per group of activation rows but then pays, per activation row and 64
// values, a vpmaddubsw, a vpdpwssd and a horizontal sum at the end: at
// batch sizes where the matmul is compute-bound that work dominates. Here a
// register holds 16 outputs instead, one per weight row. Per super-block, the
// packed values of 16 weight rows are transposed in registers (each 32-byte
// run of 16 rows into 8 zmm, lane l holding 4 bytes of row LaneRow(l), with
// the Q8_0 batch kernel's transpose, kernels_avx512_transpose.h) and unpacked there to unsigned
// values (Q4_K 0..15, Q5_K 0..31, Q6_K 0..63), 4 consecutive values of one row per dword, into a 4
// KiB buffer that stays in L1. The sub-block scales, Q4_K/Q5_K's mins and the f16 super-block
// scales come per lane from gathers. Then per activation row and sub-block: vpdpbusd with four
// activation bytes broadcast (8 per 32 values), one vpmulld by the lane's scale and an add, all in
// int32 and exact over the super-block; the mins (Q4_K/Q5_K) or Q6_K's offset of 32 are vpdpwssd of
// the per-lane scale pairs with the activation's per-16 sums; then one f32 step per super-block
// with the lane's d (and dmin) and the activation's d.
//
// Everything in this file needs AVX-512 F+BW+VL+VNNI; the dispatcher calls it
// only when HostCpuFeatures().avx512_vnni.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <cstring>

#include "devices/cpu/kernels_avx512_transpose.h"
#include "devices/cpu/kernels_batch_tiles.h"
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

constexpr int kTile = static_cast<int>(kKBatchTileRows);
// Most activation rows one tile call takes: 16 int32 super-block sums, the 8
// weight registers of a 32-value slice, two scale registers and the dot
// chains about fill the 32 zmm (groups of 8 measured slower: the unpacking
// is then paid twice for 16 rows).
constexpr int kMaxKGroup = 16;

inline __m512i Spread(const ByteSpread& s) { return _mm512_load_si512(s.c); }

// One super-block of 16 weight rows, unpacked: values[8s + i] holds, per
// lane, values 32s + 4i .. 32s + 4i + 3 of its row (unsigned); scale[j] the
// int32 scale of sub-block j (Q4_K/Q5_K: 8 of 32 values; Q6_K: 16 of 16);
// pairs[p] the int16 pair that multiplies the activation sums of values
// 32p .. 32p + 15 and 32p + 16 .. 32p + 31 (Q4_K/Q5_K: the min of
// sub-block p twice; Q6_K: the scales of sub-blocks 2p, 2p + 1); d and dmin
// (Q6_K: d only) the lanes' f32 super-block scales.
struct Unpacked {
  __m512i values[64];
  __m512i scale[16];
  __m512i pairs[8];
  __m512 d, dmin;
};

template <TensorType kType>
__attribute__((always_inline)) inline void UnpackTile(const uint8_t* block, int64_t stride,
                                                      __m512i gather_index, Unpacked* u) {
  const __m512i low4 = _mm512_set1_epi8(0x0f);
  if constexpr (kType == TensorType::kQ6_K) {
    // ql at 0 (128 bytes), qh at 128 (64), int8 scales at 192 (16), f16 d
    // at 208: read as the high half of the dword at 206, so that the gather
    // stays inside the 210-byte block.
    const __m512i m30 = _mm512_set1_epi8(0x30);
#pragma GCC unroll 2
    for (int n = 0; n < 2; ++n) {
      __m512i a[8], b[8], h[8];
      Transpose16x32(block + 64 * n, stride, a);
      Transpose16x32(block + 64 * n + 32, stride, b);
      Transpose16x32(block + 128 + 32 * n, stride, h);
#pragma GCC unroll 8
      for (int i = 0; i < 8; ++i) {
        // Values 128n + 32c + 4i (c = 0..3): slice 4n + c.
        __m512i* v = u->values + 8 * (4 * n) + i;
        v[0] = _mm512_or_si512(_mm512_and_si512(a[i], low4),
                               _mm512_and_si512(_mm512_slli_epi16(h[i], 4), m30));
        v[8] = _mm512_or_si512(_mm512_and_si512(b[i], low4),
                               _mm512_and_si512(_mm512_slli_epi16(h[i], 2), m30));
        v[16] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(a[i], 4), low4),
                                _mm512_and_si512(h[i], m30));
        v[24] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(b[i], 4), low4),
                                _mm512_and_si512(_mm512_srli_epi16(h[i], 2), m30));
      }
    }
    __m512i sc[4];
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k)
      sc[k] = _mm512_i32gather_epi32(gather_index, block + 192 + 4 * k, 1);
#pragma GCC unroll 16
    for (int j = 0; j < 16; ++j) {
      u->scale[j] = _mm512_srai_epi32(_mm512_shuffle_epi8(sc[j / 4], Spread(kToByte3[j % 4])), 24);
    }
#pragma GCC unroll 8
    for (int p = 0; p < 8; ++p) {
      const int k = (2 * p) % 4;
      // Byte k to the high byte of word 0, byte k + 1 to word 1's.
      const __m512i lo = _mm512_shuffle_epi8(sc[p / 2], Spread(kToByte1[k]));
      const __m512i hi = _mm512_shuffle_epi8(sc[p / 2], Spread(kToByte3[k + 1]));
      u->pairs[p] = _mm512_srai_epi16(_mm512_or_si512(lo, hi), 8);
    }
    const __m512i dd = _mm512_i32gather_epi32(gather_index, block + 206, 1);
    u->d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(dd, 16)));
    u->dmin = _mm512_setzero_ps();
    return;
  }
  // Q4_K / Q5_K: f16 d, f16 dmin, 12 bytes of 6-bit scales and mins, then
  // (Q5_K) 32 bytes of high bits, then 128 bytes of nibbles.
  constexpr bool kFive = kType == TensorType::kQ5_K;
  const uint8_t* qs = block + (kFive ? 48 : 16);
  __m512i h[8];
  if constexpr (kFive) Transpose16x32(block + 16, stride, h);
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) {
    __m512i t[8];
    Transpose16x32(qs + 32 * j, stride, t);
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) {
      // Values 64j + 4i (low nibbles, slice 2j) and 64j + 32 + 4i (high,
      // slice 2j + 1); Q5_K's fifth bit is bit 2j (2j + 1) of qh's byte.
      __m512i lo = _mm512_and_si512(t[i], low4);
      __m512i hi = _mm512_and_si512(_mm512_srli_epi16(t[i], 4), low4);
      if constexpr (kFive) {
        const __m512i bit = _mm512_set1_epi8(0x10);
        const __m512i hl =
            2 * j <= 4 ? _mm512_slli_epi16(h[i], 4 - 2 * j) : _mm512_srli_epi16(h[i], 2 * j - 4);
        const __m512i hh = 2 * j + 1 <= 4 ? _mm512_slli_epi16(h[i], 3 - 2 * j)
                                          : _mm512_srli_epi16(h[i], 2 * j - 3);
        lo = _mm512_or_si512(lo, _mm512_and_si512(hl, bit));
        hi = _mm512_or_si512(hi, _mm512_and_si512(hh, bit));
      }
      u->values[8 * (2 * j) + i] = lo;
      u->values[8 * (2 * j + 1) + i] = hi;
    }
  }
  const __m512i dd = _mm512_i32gather_epi32(gather_index, block, 1);
  u->d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(dd));
  u->dmin = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(dd, 16)));
  const __m512i u0 = _mm512_i32gather_epi32(gather_index, block + 4, 1);
  const __m512i u1 = _mm512_i32gather_epi32(gather_index, block + 8, 1);
  const __m512i u2 = _mm512_i32gather_epi32(gather_index, block + 12, 1);
  const __m512i m3f = _mm512_set1_epi8(0x3f), m0f = _mm512_set1_epi8(0x0f),
                m30 = _mm512_set1_epi8(0x30);
  // Bytes k of sc[0] / mn[0]: scale / min k; of sc[1] / mn[1]: k + 4.
  const __m512i sc[2] = {
      _mm512_and_si512(u0, m3f),
      _mm512_or_si512(_mm512_and_si512(u2, m0f), _mm512_and_si512(_mm512_srli_epi32(u0, 2), m30))};
  const __m512i mn[2] = {_mm512_and_si512(u1, m3f),
                         _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(u2, 4), m0f),
                                         _mm512_and_si512(_mm512_srli_epi32(u1, 2), m30))};
#pragma GCC unroll 8
  for (int j = 0; j < 8; ++j) {
    u->scale[j] = _mm512_shuffle_epi8(sc[j / 4], Spread(kToInt32[j % 4]));
    u->pairs[j] = _mm512_shuffle_epi8(mn[j / 4], Spread(kToPair[j % 4]));
  }
}

// 16 weight rows from w against A activation rows from x (stride
// x_stride): y[a * y_stride + r] for r < 16. No software prefetch: the next
// tile's slice prefetched per super-block (as the Q8_0 batch kernel does)
// stalled on fill buffers here and made the kernel ~1.5x slower (measured
// with tests/bench/kernels_bench); the hardware prefetcher keeps up.
template <TensorType kType, int A>
void KBatchTile(const uint8_t* w, int64_t w_stride, const uint8_t* x, int64_t x_stride,
                int64_t cols, float* y, int64_t y_stride) {
  constexpr bool kSix = kType == TensorType::kQ6_K;
  // Super-block bytes: Q4_K 144, Q5_K 176, Q6_K 210 (TensorTypeBlockBytes).
  constexpr int64_t kSuperBytes = kType == TensorType::kQ4_K   ? 144
                                  : kType == TensorType::kQ5_K ? 176
                                                               : 210;
  const int64_t supers = cols / kSuperBlock;
  const int64_t values = Q8KValuesOffset(cols), scales = Q8KScalesOffset(cols),
                sums = Q8KSumsOffset(cols);
  alignas(64) int32_t row_offsets[kTile];
  for (int l = 0; l < kTile; ++l) row_offsets[l] = static_cast<int32_t>(LaneRow(l) * w_stride);
  const __m512i gather_index = _mm512_load_si512(row_offsets);

  Unpacked u;
  __m512 acc[A];
#pragma GCC unroll 16
  for (int a = 0; a < A; ++a) acc[a] = _mm512_setzero_ps();
  for (int64_t b = 0; b < supers; ++b) {
    UnpackTile<kType>(w + b * kSuperBytes, w_stride, gather_index, &u);
    __m512i isum[A];
#pragma GCC unroll 16
    for (int a = 0; a < A; ++a) isum[a] = _mm512_setzero_si512();
    // 32 values at a time: 8 registers of weights, every activation row.
    for (int s = 0; s < 8; ++s) {
      const __m512i* wv = u.values + 8 * s;
      const __m512i sc0 = u.scale[kSix ? 2 * s : s];
      const __m512i sc1 = u.scale[kSix ? 2 * s + 1 : s];
#pragma GCC unroll 16
      for (int a = 0; a < A; ++a) {
        const uint8_t* q = x + a * x_stride + values + b * kSuperBlock + 32 * s;
        __m512i d0 = _mm512_setzero_si512(), d1 = _mm512_setzero_si512();
#pragma GCC unroll 4
        for (int i = 0; i < 4; ++i) {
          d0 = _mm512_dpbusd_epi32(d0, wv[i], _mm512_set1_epi32(LoadI32(q + 4 * i)));
          d1 = _mm512_dpbusd_epi32(d1, wv[i + 4], _mm512_set1_epi32(LoadI32(q + 16 + 4 * i)));
        }
        if constexpr (kSix) {
          isum[a] = _mm512_add_epi32(
              isum[a], _mm512_add_epi32(_mm512_mullo_epi32(d0, sc0), _mm512_mullo_epi32(d1, sc1)));
        } else {
          isum[a] = _mm512_add_epi32(isum[a], _mm512_mullo_epi32(_mm512_add_epi32(d0, d1), sc0));
        }
      }
    }
#pragma GCC unroll 16
    for (int a = 0; a < A; ++a) {
      const uint8_t* row = x + a * x_stride;
      const uint8_t* sum16 = row + sums + b * 32;
      __m512i ms = _mm512_setzero_si512();
#pragma GCC unroll 8
      for (int p = 0; p < 8; ++p) {
        ms = _mm512_dpwssd_epi32(ms, u.pairs[p], _mm512_set1_epi32(LoadI32(sum16 + 4 * p)));
      }
      float ad;
      std::memcpy(&ad, row + scales + 4 * b, sizeof(ad));
      if constexpr (kSix) {
        // Values are stored + 32: take 32 x sum_j scale_j x sum(a_j) off.
        const __m512i total = _mm512_sub_epi32(isum[a], _mm512_slli_epi32(ms, 5));
        acc[a] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(total), _mm512_mul_ps(u.d, _mm512_set1_ps(ad)),
                                 acc[a]);
      } else {
        const __m512 t = _mm512_fmsub_ps(_mm512_cvtepi32_ps(isum[a]), u.d,
                                         _mm512_mul_ps(_mm512_cvtepi32_ps(ms), u.dmin));
        acc[a] = _mm512_fmadd_ps(t, _mm512_set1_ps(ad), acc[a]);
      }
    }
  }
#pragma GCC unroll 16
  for (int a = 0; a < A; ++a) {
    _mm512_storeu_ps(y + a * y_stride,
                     _mm512_shuffle_f32x4(acc[a], acc[a], _MM_SHUFFLE(3, 1, 2, 0)));
  }
}

template <TensorType kType>
struct KTiles {
  template <int A>
  static void Run(const uint8_t* w, int64_t w_stride, const uint8_t* x, int64_t x_stride,
                  int64_t cols, const char* /*next*/, float* y, int64_t y_stride) {
    KBatchTile<kType, A>(w, w_stride, x, x_stride, cols, y, y_stride);
  }
};

}  // namespace

void MatMulKBatch(const TensorView& w, int64_t row_begin, int64_t row_end, const Activations& x,
                  float* y, int64_t y_stride) {
  switch (w.type) {
    case TensorType::kQ4_K:
      return RunBatchTiles<KTiles<TensorType::kQ4_K>, kTile, kMaxKGroup>(w, row_begin, row_end, x,
                                                                         y, y_stride);
    case TensorType::kQ5_K:
      return RunBatchTiles<KTiles<TensorType::kQ5_K>, kTile, kMaxKGroup>(w, row_begin, row_end, x,
                                                                         y, y_stride);
    default:
      return RunBatchTiles<KTiles<TensorType::kQ6_K>, kTile, kMaxKGroup>(w, row_begin, row_end, x,
                                                                         y, y_stride);
  }
}

}  // namespace tokenmill::devices::cpu::internal::avx512

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#endif  // TOKENMILL_KERNELS_X86
