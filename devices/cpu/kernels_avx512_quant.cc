// MatMulRows for Q8_0 and Q4_0 weights with AVX-512 VNNI (vpdpbusd on zmm).
//
// Two consecutive 32-element blocks ("a pair") fill one zmm, so one vpdpbusd
// does 64 multiply-adds. vpdpbusd takes unsigned x signed bytes; instead of
// the sign trick (|w| times x with w's sign, three more ops per weight row on
// AVX-512, which has no vpsignb), weights go in offset to unsigned and the
// offset's contribution is taken out by starting the accumulation from a
// per-activation correction:
//   Q8_0: (w + 128) . x - 128 * sum(x) = w . x  (w + 128 is w ^ 0x80)
//   Q4_0: nibble . x - 8 * sum(x) = (nibble - 8) . x
// The correction costs two ops per activation pair and is shared by every
// weight row of a tile. Per block the eight int32 lanes stay in the register:
// one convert and one FMA with d_w * d_x per pair and output, and the lanes
// are summed once per output at the end of the row. The f16 scales of a pair
// are turned into lane vectors with one vpermw + vcvtph2ps.
//
// Everything in this file needs AVX-512 F+BW+VL+VNNI; the dispatcher calls it
// only when HostCpuFeatures().avx512_vnni.
#include <algorithm>

#include "devices/cpu/kernels_internal.h"
#include "devices/cpu/kernels_target.h"

#if defined(TOKENMILL_KERNELS_X86)

TOKENMILL_KERNELS_TARGET_BEGIN(TOKENMILL_ISA_AVX512_VNNI)

namespace tokenmill::devices::cpu::internal::avx512 {
namespace {

template <TensorType T>
constexpr int64_t kWeightBlockBytes = T == TensorType::kQ8_0 ? kQ8BlockBytes : kQ4BlockBytes;

// Weight rows per tile: enough to reuse each activation pair four times while
// the 4 x A accumulators, weights and activations fit the 32 zmm registers.
constexpr int kTileRows = 4;

// Lane layouts of a pair inside a zmm. Q8_0: block b in bytes 0..31, b+1 in
// 32..63, so int32 lanes 0..7 belong to b and 8..15 to b+1. Q4_0 weights
// unpack as [low nibbles b, low b+1, high b, high b+1] (16 bytes each), so
// activations are shuffled to the same order and lanes alternate in fours.
// Which of the two blocks of a pair int32 lane `lane` of a pair's dot
// belongs to (see ScaleIndex).
template <TensorType T>
constexpr int PairBlockOfLane(int lane) {
  return T == TensorType::kQ8_0 ? lane / 8 : (lane / 4) % 2;
}

template <TensorType T>
__m512i ScaleIndex(int16_t word_b1) {
  alignas(64) int16_t index[32] = {};
  for (int lane = 0; lane < 16; ++lane) {
    index[lane] = PairBlockOfLane<T>(lane) == 1 ? word_b1 : 0;
  }
  return _mm512_load_si512(index);
}

// Two pairs' dots d0, d1 folded into one register by adding neighbouring
// lanes (MergePairs): lane 4j + {0, 1} holds two lanes of 128-bit group j of
// d0, lane 4j + {2, 3} two of d1's. A group lies in one block, so each merged
// lane does too; the index maps lanes to the f16 scale word of that block
// (block k of the four starts at byte k * block_bytes).
template <TensorType T>
__m512i QuadScaleIndex(int64_t block_bytes) {
  alignas(64) int16_t index[32] = {};
  for (int lane = 0; lane < 16; ++lane) {
    const int group = lane / 4, second = lane % 4 >= 2 ? 1 : 0;
    const int block = 2 * second + PairBlockOfLane<T>(4 * group);
    index[lane] = static_cast<int16_t>(block * block_bytes / 2);
  }
  return _mm512_load_si512(index);
}

// Constants of one tile, built once per tile call.
template <TensorType T>
struct PairConstants {
  __m512i weight_scale_index;  // f16 scales of a weight pair -> lanes
  __m512i act_scale_index;     // f16 scales of an activation pair -> lanes
  __m512i weight_quad_index;   // f16 scales of two weight pairs -> merged lanes
  __m512i act_quad_index;      // f16 scales of two activation pairs -> merged lanes
  __m512i offset;              // the unsigned offset of a weight byte (128 or 8)
  __m512i low_nibbles;         // 0x0f bytes (Q4_0)

  PairConstants()
      : weight_scale_index(ScaleIndex<T>(kWeightBlockBytes<T> / 2)),
        act_scale_index(ScaleIndex<T>(kQ8BlockBytes / 2)),
        weight_quad_index(QuadScaleIndex<T>(kWeightBlockBytes<T>)),
        act_quad_index(QuadScaleIndex<T>(kQ8BlockBytes)),
        offset(_mm512_set1_epi8(T == TensorType::kQ8_0 ? static_cast<char>(0x80) : 8)),
        low_nibbles(_mm512_set1_epi8(0x0f)) {}
};

// The f16 scales of the pair starting at `p` (one block when kTail), as
// lanes; `words` are the 16-bit words from p that cover both scales.
template <bool kTail>
__m512 PairScales(const uint8_t* p, __m512i index, int words) {
  const __mmask32 mask = kTail ? 0x1 : static_cast<__mmask32>((uint64_t{1} << words) - 1);
  const __m512i raw = _mm512_maskz_loadu_epi16(mask, p);
  return _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutexvar_epi16(index, raw)));
}

// The f16 scales of the two pairs starting at p, as merged lanes. Q8_0
// blocks (34 bytes) put the scales of four blocks in 136 bytes, so two
// 64-byte loads; Q4_0 (18 bytes) in one.
template <int64_t kBlockBytes>
__m512 QuadScales(const uint8_t* p, __m512i index) {
  const __m512i lo = _mm512_loadu_si512(p);
  __m512i words;
  if constexpr (kBlockBytes * 3 / 2 < 32) {
    words = _mm512_permutexvar_epi16(index, lo);
  } else {
    words = _mm512_permutex2var_epi16(lo, index, _mm512_loadu_si512(p + 64));
  }
  return _mm512_cvtph_ps(_mm512_castsi512_si256(words));
}

// Adds neighbouring int32 lanes of d0 and d1 (see QuadScaleIndex).
inline __m512i MergePairs(__m512i d0, __m512i d1) {
  const __m512 a = _mm512_castsi512_ps(d0), b = _mm512_castsi512_ps(d1);
  return _mm512_add_epi32(_mm512_castps_si512(_mm512_shuffle_ps(a, b, 0x88)),
                          _mm512_castps_si512(_mm512_shuffle_ps(a, b, 0xdd)));
}

// Activations of one pair (Q8_0 blocks at p): bytes, correction, scales.
struct ActPair {
  __m512i q;
  __m512i correction;
  __m512 d;
};

template <TensorType T, bool kTail, bool kScales = true>
ActPair LoadActPair(const uint8_t* p, const PairConstants<T>& c) {
  ActPair a;
  if constexpr (kTail) {
    a.q = _mm512_maskz_loadu_epi8(0xffffffffULL, p + 2);
  } else {
    a.q = _mm512_inserti64x4(
        _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 2))),
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + kQ8BlockBytes + 2)), 1);
  }
  if constexpr (T == TensorType::kQ4_0) {
    a.q = _mm512_shuffle_i64x2(a.q, a.q, _MM_SHUFFLE(3, 1, 2, 0));
  }
  a.correction = _mm512_sub_epi32(_mm512_setzero_si512(),
                                  _mm512_dpbusd_epi32(_mm512_setzero_si512(), c.offset, a.q));
  if constexpr (kScales) a.d = PairScales<kTail>(p, c.act_scale_index, kQ8BlockBytes / 2 + 1);
  return a;
}

// Weights of one pair (blocks at p) as unsigned bytes.
template <TensorType T, bool kTail>
__m512i LoadWeightPairBytes(const uint8_t* p, const PairConstants<T>& c) {
  constexpr int64_t kBytes = kWeightBlockBytes<T>;
  if constexpr (T == TensorType::kQ8_0) {
    __m512i raw;
    if constexpr (kTail) {
      raw = _mm512_maskz_loadu_epi8(0xffffffffULL, p + 2);
    } else {
      raw = _mm512_inserti64x4(
          _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 2))),
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + kBytes + 2)), 1);
    }
    return _mm512_xor_si512(raw, c.offset);
  } else {
    __m256i packed;
    if constexpr (kTail) {
      packed = _mm256_zextsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2)));
    } else {
      packed = _mm256_loadu2_m128i(reinterpret_cast<const __m128i*>(p + kBytes + 2),
                                   reinterpret_cast<const __m128i*>(p + 2));
    }
    const __m512i both =
        _mm512_inserti64x4(_mm512_castsi256_si512(packed), _mm256_srli_epi16(packed, 4), 1);
    return _mm512_and_si512(both, c.low_nibbles);
  }
}

// Weights of one pair (blocks at p) as unsigned bytes, and their scales.
template <TensorType T, bool kTail>
void LoadWeightPair(const uint8_t* p, const PairConstants<T>& c, __m512i* q, __m512* d) {
  *q = LoadWeightPairBytes<T, kTail>(p, c);
  *d = PairScales<kTail>(p, c.weight_scale_index, static_cast<int>(kWeightBlockBytes<T> / 2 + 1));
}

// One pair of every row and activation of a tile into the accumulators.
template <TensorType T, int R, int A, bool kTail>
__attribute__((always_inline)) inline void TileStep(const uint8_t* w, int64_t w_stride,
                                                    const uint8_t* x, int64_t x_stride,
                                                    const PairConstants<T>& c,
                                                    __m512 (&acc)[R][A]) {
  __m512i wq[R];
  __m512 dw[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    LoadWeightPair<T, kTail>(w + r * w_stride, c, &wq[r], &dw[r]);
  }
#pragma GCC unroll 8
  for (int a = 0; a < A; ++a) {
    const ActPair xa = LoadActPair<T, kTail>(x + a * x_stride, c);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m512i dot = _mm512_dpbusd_epi32(xa.correction, wq[r], xa.q);
      acc[r][a] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(dw[r], xa.d), acc[r][a]);
    }
  }
}

// Two pairs of every row and activation of a tile: the two dots of an
// output are merged before the convert and the scaling, halving those.
template <TensorType T, int R, int A>
__attribute__((always_inline)) inline void TileQuadStep(const uint8_t* w, int64_t w_stride,
                                                        const uint8_t* x, int64_t x_stride,
                                                        const PairConstants<T>& c,
                                                        __m512 (&acc)[R][A]) {
  constexpr int64_t kPairBytes = 2 * kWeightBlockBytes<T>;
  __m512i wq0[R], wq1[R];
  __m512 dw[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    const uint8_t* p = w + r * w_stride;
    wq0[r] = LoadWeightPairBytes<T, false>(p, c);
    wq1[r] = LoadWeightPairBytes<T, false>(p + kPairBytes, c);
    dw[r] = QuadScales<kWeightBlockBytes<T>>(p, c.weight_quad_index);
  }
#pragma GCC unroll 8
  for (int a = 0; a < A; ++a) {
    const uint8_t* p = x + a * x_stride;
    const ActPair x0 = LoadActPair<T, false, false>(p, c);
    const ActPair x1 = LoadActPair<T, false, false>(p + 2 * kQ8BlockBytes, c);
    const __m512 dx = QuadScales<kQ8BlockBytes>(p, c.act_quad_index);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m512i dot = MergePairs(_mm512_dpbusd_epi32(x0.correction, wq0[r], x0.q),
                                     _mm512_dpbusd_epi32(x1.correction, wq1[r], x1.q));
      acc[r][a] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(dw[r], dx), acc[r][a]);
    }
  }
}

// R weight rows from w (stride w_stride) against A activation rows from x:
// y[a * y_stride + r] = the dot of row r and activation a over `blocks`.
// With `prefetch`, the R rows that follow (the next tile, contiguous) are
// prefetched as one sequential stream, a slice per pair step: the hardware
// prefetchers alone keep too few lines in flight on R interleaved row
// streams that cross 4 KiB pages (M = 1 streamed at ~20 GB/s per core
// without it, ~31 with it).
template <TensorType T, int R, int A>
void QuantTile(const uint8_t* w, int64_t w_stride, const uint8_t* x, int64_t x_stride,
               int64_t blocks, bool prefetch, float* y, int64_t y_stride) {
  const PairConstants<T> c;
  __m512 acc[R][A];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int a = 0; a < A; ++a) acc[r][a] = _mm512_setzero_ps();
  int64_t b = 0;
  const char* next = reinterpret_cast<const char*>(w + R * w_stride);
  constexpr int64_t kStepBytes = R * 2 * kWeightBlockBytes<T>;
  for (; b + 4 <= blocks; b += 4) {
    if (prefetch) {
      const char* slice = next + b / 2 * kStepBytes;
#pragma GCC unroll 16
      for (int64_t o = 0; o < 2 * kStepBytes + 63; o += 64) PrefetchWeights(slice + o);
    }
    TileQuadStep<T, R, A>(w + b * kWeightBlockBytes<T>, w_stride, x + b * kQ8BlockBytes, x_stride,
                          c, acc);
  }
  for (; b + 2 <= blocks; b += 2) {
    TileStep<T, R, A, false>(w + b * kWeightBlockBytes<T>, w_stride, x + b * kQ8BlockBytes,
                             x_stride, c, acc);
  }
  if (b < blocks) {
    TileStep<T, R, A, true>(w + b * kWeightBlockBytes<T>, w_stride, x + b * kQ8BlockBytes, x_stride,
                            c, acc);
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int a = 0; a < A; ++a) y[a * y_stride + r] = _mm512_reduce_add_ps(acc[r][a]);
}

// R weight rows from n against every activation row in [m0, m1), 4 at a time.
template <TensorType T, int R>
void TileRows(const TensorView& w, int64_t n, const Activations& x, int64_t m0, int64_t m1,
              float* y, int64_t y_stride) {
  const int64_t w_stride = static_cast<int64_t>(w.row_bytes());
  const int64_t x_stride = Q8RowBytes(x.cols);
  const int64_t blocks = x.cols / kBlock;
  const uint8_t* wr = w.row(n);
  int64_t m = m0;
  // Only the first group of activation rows prefetches; later groups find
  // the next tile in cache already.
  for (; m + 4 <= m1; m += 4) {
    QuantTile<T, R, 4>(wr, w_stride, x.q8 + m * x_stride, x_stride, blocks, m == m0,
                       y + m * y_stride + n, y_stride);
  }
  const uint8_t* xm = x.q8 + m * x_stride;
  float* ym = y + m * y_stride + n;
  const bool prefetch = m == m0;
  switch (m1 - m) {
    case 3:
      return QuantTile<T, R, 3>(wr, w_stride, xm, x_stride, blocks, prefetch, ym, y_stride);
    case 2:
      return QuantTile<T, R, 2>(wr, w_stride, xm, x_stride, blocks, prefetch, ym, y_stride);
    case 1:
      return QuantTile<T, R, 1>(wr, w_stride, xm, x_stride, blocks, prefetch, ym, y_stride);
    default:
      return;
  }
}

// Activation cache blocks, then tiles of weight rows, then groups of 4
// activation rows: a weight tile comes from memory once per activation block
// and from L1 for every further group.
template <TensorType T>
void MatMulQuant(const TensorView& w, int64_t row_begin, int64_t row_end, const Activations& x,
                 float* y, int64_t y_stride) {
  const int64_t block_rows = ActivationBlockRows(Q8RowBytes(x.cols));
  for (int64_t m0 = 0; m0 < x.rows; m0 += block_rows) {
    const int64_t m1 = std::min(x.rows, m0 + block_rows);
    int64_t n = row_begin;
    for (; n + kTileRows <= row_end; n += kTileRows) {
      TileRows<T, kTileRows>(w, n, x, m0, m1, y, y_stride);
    }
    for (; n < row_end; ++n) TileRows<T, 1>(w, n, x, m0, m1, y, y_stride);
  }
}

}  // namespace

void MatMulRowsVnni(const TensorView& w, int64_t row_begin, int64_t row_end, const Activations& x,
                    float* y, int64_t y_stride) {
  if (w.type == TensorType::kQ8_0) {
    if (x.rows >= kQ8BatchMinRows) {
      // Whole 16-row tiles batched; the few rows left take the pair kernel.
      const int64_t tiled = (row_end - row_begin) / kQ8BatchTileRows * kQ8BatchTileRows;
      MatMulQ8Batch(w, row_begin, row_begin + tiled, x, y, y_stride);
      row_begin += tiled;
      if (row_begin >= row_end) return;
    }
    return MatMulQuant<TensorType::kQ8_0>(w, row_begin, row_end, x, y, y_stride);
  }
  if (w.type == TensorType::kQ4_0) {
    return MatMulQuant<TensorType::kQ4_0>(w, row_begin, row_end, x, y, y_stride);
  }
  MatMulRows(w, row_begin, row_end, x, y, y_stride);
}

}  // namespace tokenmill::devices::cpu::internal::avx512

TOKENMILL_KERNELS_TARGET_END

#endif  // TOKENMILL_KERNELS_X86
