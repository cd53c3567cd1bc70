// MatMulRows for K-quant weights (Q4_K, Q5_K, Q6_K) against many activation
// rows, AVX2: the counterpart, for CPUs without AVX-512, of
// kernels_avx512_kquant_batch.cc.
//
// The per-row AVX2 kernel (kernels_kquant.cc) decodes a weight super-block
// once per 4 activation rows, then per activation row and 32 values pays a
// vpmaddubsw and a vpmaddwd (the sub-block's scale), and a horizontal sum
// per output. Here a ymm holds 8 outputs, one per weight row: per
// super-block the packed values of 8 weight rows are transposed in registers
// (each 32-byte run of 8 rows into 8 ymm, lane r holding 4 bytes of row r)
// and unpacked once to unsigned values (4 consecutive values of one row per
// dword) into a 2 KiB buffer that stays in L1, for every activation row.
// Then per 16 values (4 registers, which stay in registers) and activation
// row: 4 vpmaddubsw with four activation bytes broadcast, their int16 pair
// sums added in int16 (they cannot overflow: values below 16, 32, 64 times
// |a| <= 127, two per pair; Q6_K adds them two by two) and one vpmaddwd by
// the lane's sub-block scale pair per sum: 10 multiply uops per 256
// products for Q4_K and Q5_K, 12 for Q6_K, where the per-row kernel needs
// 16. The sums are exact int32 over the super-block; the mins (Q4_K/Q5_K)
// or Q6_K's offset of 32 are vpmaddwd of per-lane pairs with the
// activation's per-16 sums, then one f32 step per super-block with the
// lane's d (and dmin) and the activation's d. Taken from 2 activation rows
// (kKBatchMinRowsAvx2), where the per-row kernel decodes each super-block
// once per row.
//
// Everything in this file needs AVX2 + FMA + F16C; the dispatcher calls it
// only when HostCpuFeatures().avx2.
#include "devices/cpu/kernels_batch_tiles.h"
#include "devices/cpu/kernels_internal.h"
#include "devices/cpu/kernels_target.h"

#if defined(TOKENMILL_KERNELS_X86)

TOKENMILL_KERNELS_TARGET_BEGIN(TOKENMILL_ISA_AVX2)

namespace tokenmill::devices::cpu::internal::avx2 {
namespace {

constexpr int kTile = static_cast<int>(kKBatchTileRowsAvx2);
// Most activation rows one tile call takes: the unpacked super-block is
// paid once per call, and the per-row sums live on the stack.
constexpr int kMaxKGroup = 16;

// The 32 bytes at p of 8 rows (row r at p + r * stride) as 8 ymm: register
// i, lane r = bytes 4i..4i+3 of row r. Rows r and r + 4 share a register
// (one per 128-bit half), so 4x4 dword transposes inside the halves finish
// the job without a lane-crossing shuffle.
__attribute__((always_inline)) inline void Transpose8x32(const uint8_t* p, int64_t stride,
                                                         __m256i (&out)[8]) {
  __m256i z[8];
#pragma GCC unroll 4
  for (int r = 0; r < 4; ++r) {
    const uint8_t* lo = p + r * stride;
    const uint8_t* hi = p + (r + 4) * stride;
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
      z[4 * h + r] = _mm256_inserti128_si256(
          _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(lo + 16 * h))),
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(hi + 16 * h)), 1);
    }
  }
  // z[4h + r] halves: row r dwords 4h..4h+3, row r + 4 the same dwords.
#pragma GCC unroll 2
  for (int h = 0; h < 2; ++h) {
    const __m256i* q = z + 4 * h;
    const __m256i lo01 = _mm256_unpacklo_epi32(q[0], q[1]),
                  hi01 = _mm256_unpackhi_epi32(q[0], q[1]);
    const __m256i lo23 = _mm256_unpacklo_epi32(q[2], q[3]),
                  hi23 = _mm256_unpackhi_epi32(q[2], q[3]);
    out[4 * h] = _mm256_unpacklo_epi64(lo01, lo23);
    out[4 * h + 1] = _mm256_unpackhi_epi64(lo01, lo23);
    out[4 * h + 2] = _mm256_unpacklo_epi64(hi01, hi23);
    out[4 * h + 3] = _mm256_unpackhi_epi64(hi01, hi23);
  }
}

// 8 weight rows in a ymm: the width kernels_kquant_unpack.h unpacks with.
struct Ymm {
  using Reg = __m256i;
  __attribute__((always_inline)) static Reg And(Reg a, Reg b) { return _mm256_and_si256(a, b); }
  __attribute__((always_inline)) static Reg Or(Reg a, Reg b) { return _mm256_or_si256(a, b); }
  __attribute__((always_inline)) static Reg Slli16(Reg v, int n) { return _mm256_slli_epi16(v, n); }
  __attribute__((always_inline)) static Reg Srli16(Reg v, int n) { return _mm256_srli_epi16(v, n); }
  __attribute__((always_inline)) static Reg Srli32(Reg v, int n) { return _mm256_srli_epi32(v, n); }
  __attribute__((always_inline)) static Reg Srai16(Reg v, int n) { return _mm256_srai_epi16(v, n); }
  __attribute__((always_inline)) static Reg Set1Epi8(char c) { return _mm256_set1_epi8(c); }
  __attribute__((always_inline)) static Reg Shuffle8(Reg v, const ByteSpread& s) {
    return _mm256_shuffle_epi8(v, _mm256_load_si256(reinterpret_cast<const __m256i*>(s.c)));
  }
  __attribute__((always_inline)) static Reg Gather(const uint8_t* p, Reg index) {
    return _mm256_i32gather_epi32(reinterpret_cast<const int*>(p), index, 1);
  }
  __attribute__((always_inline)) static void Transpose(const uint8_t* p, int64_t stride,
                                                       Reg (&out)[8]) {
    Transpose8x32(p, stride, out);
  }
};

#include "devices/cpu/kernels_kquant_unpack.h"

// Per lane, the low 16 bits of each dword of v as f16, widened to f32.
inline __m256 HalvesToFloat(__m256i v) {
  const __m256i packed =
      _mm256_packus_epi32(_mm256_and_si256(v, _mm256_set1_epi32(0xffff)), _mm256_setzero_si256());
  // packus works per 128-bit half: lanes 0-3 in qword 0, lanes 4-7 in qword 2.
  return _mm256_cvtph_ps(
      _mm256_castsi256_si128(_mm256_permute4x64_epi64(packed, _MM_SHUFFLE(3, 1, 2, 0))));
}

// One super-block of 8 weight rows, unpacked: values[8s + i] holds, per
// lane, values 32s + 4i .. 32s + 4i + 3 of its row (unsigned); scale[j] the
// scale of sub-block j as an int16 pair (both halves; Q4_K/Q5_K: 8 of 32
// values; Q6_K: 16 of 16); pairs[p] the int16 pair that multiplies the
// activation sums of values 32p .. 32p + 15 and 32p + 16 .. 32p + 31
// (Q4_K/Q5_K: the min of sub-block p twice; Q6_K: the scales of sub-blocks
// 2p, 2p + 1); d and dmin (Q6_K: d only) the lanes' f32 super-block scales.
struct Unpacked {
  __m256i values[64];
  __m256i scale[16];
  __m256i pairs[8];
  __m256 d, dmin;
};

template <TensorType kType>
__attribute__((always_inline)) inline void UnpackTile(const uint8_t* block, int64_t stride,
                                                      __m256i gather_index, Unpacked* u) {
  UnpackValues<kType, Ymm>(block, stride, u->values);
  if constexpr (kType == TensorType::kQ6_K) {
    __m256i sc[4];
    GatherQ6Scales<Ymm>(block, gather_index, sc);
#pragma GCC unroll 16
    for (int j = 0; j < 16; ++j) {
      // Scale byte to the high byte of both words, shifted down with sign.
      u->scale[j] = Ymm::Srai16(Ymm::Shuffle8(sc[j / 4], kToHighPair[j % 4]), 8);
    }
    Q6ScalePairs<Ymm>(sc, u->pairs);
    // f16 d at 208: read as the high half of the dword at 206, so that the
    // gather stays inside the 210-byte block.
    u->d = HalvesToFloat(Ymm::Srli32(Ymm::Gather(block + 206, gather_index), 16));
    u->dmin = _mm256_setzero_ps();
    return;
  }
  // Q4_K / Q5_K: f16 d and dmin at 0, then the 6-bit scales and mins.
  const __m256i dd = Ymm::Gather(block, gather_index);
  u->d = HalvesToFloat(dd);
  u->dmin = HalvesToFloat(Ymm::Srli32(dd, 16));
  __m256i sc[2], mn[2];
  UnpackScalesAndMins<Ymm>(block, gather_index, sc, mn);
#pragma GCC unroll 8
  for (int j = 0; j < 8; ++j) {
    u->scale[j] = Ymm::Shuffle8(sc[j / 4], kToPair[j % 4]);
    u->pairs[j] = Ymm::Shuffle8(mn[j / 4], kToPair[j % 4]);
  }
}

// The int32 sum over 16 values (4 registers of 4 per lane) of weight x
// activation x sub-block scale (sc), for one activation row (q: its 16
// bytes). Each vpmaddubsw lane is at most 2 x 15 (31, 63) x 127 = 3810
// (7874, 16002): Q4_K and Q5_K add all four in int16, Q6_K two.
template <TensorType kType>
__attribute__((always_inline)) inline __m256i HalfSliceDot(const __m256i* wv, const uint8_t* q,
                                                           __m256i sc) {
  __m256i p[4];
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    p[i] = _mm256_maddubs_epi16(wv[i], _mm256_set1_epi32(LoadI32(q + 4 * i)));
  }
  const __m256i p01 = _mm256_add_epi16(p[0], p[1]), p23 = _mm256_add_epi16(p[2], p[3]);
  if constexpr (kType == TensorType::kQ6_K) {
    return _mm256_add_epi32(_mm256_madd_epi16(p01, sc), _mm256_madd_epi16(p23, sc));
  } else {
    return _mm256_madd_epi16(_mm256_add_epi16(p01, p23), sc);
  }
}

// 8 weight rows from w against A activation rows from x (stride x_stride):
// y[a * y_stride + r] for r < 8.
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
  const __m256i gather_index = _mm256_mullo_epi32(
      _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(static_cast<int32_t>(w_stride)));

  Unpacked u;
  __m256 acc[A];
#pragma GCC unroll 16
  for (int a = 0; a < A; ++a) acc[a] = _mm256_setzero_ps();
  for (int64_t b = 0; b < supers; ++b) {
    UnpackTile<kType>(w + b * kSuperBytes, w_stride, gather_index, &u);
    __m256i isum[A];
#pragma GCC unroll 16
    for (int a = 0; a < A; ++a) isum[a] = _mm256_setzero_si256();
    // 16 values at a time: 4 registers of weights stay in registers for
    // every activation row (8 would not leave room for the products).
    for (int h = 0; h < 16; ++h) {
      const __m256i* wv = u.values + 4 * h;
      const __m256i sc = u.scale[kSix ? h : h / 2];
#pragma GCC unroll 16
      for (int a = 0; a < A; ++a) {
        const uint8_t* q = x + a * x_stride + values + b * kSuperBlock + 16 * h;
        isum[a] = _mm256_add_epi32(isum[a], HalfSliceDot<kType>(wv, q, sc));
      }
    }
#pragma GCC unroll 16
    for (int a = 0; a < A; ++a) {
      const uint8_t* row = x + a * x_stride;
      const uint8_t* sum16 = row + sums + b * 32;
      __m256i ms = _mm256_setzero_si256();
#pragma GCC unroll 8
      for (int p = 0; p < 8; ++p) {
        ms = _mm256_add_epi32(
            ms, _mm256_madd_epi16(u.pairs[p], _mm256_set1_epi32(LoadI32(sum16 + 4 * p))));
      }
      float ad;
      std::memcpy(&ad, row + scales + 4 * b, sizeof(ad));
      if constexpr (kSix) {
        // Values are stored + 32: take 32 x sum_j scale_j x sum(a_j) off.
        const __m256i total = _mm256_sub_epi32(isum[a], _mm256_slli_epi32(ms, 5));
        acc[a] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(total), _mm256_mul_ps(u.d, _mm256_set1_ps(ad)),
                                 acc[a]);
      } else {
        const __m256 t = _mm256_fmsub_ps(_mm256_cvtepi32_ps(isum[a]), u.d,
                                         _mm256_mul_ps(_mm256_cvtepi32_ps(ms), u.dmin));
        acc[a] = _mm256_fmadd_ps(t, _mm256_set1_ps(ad), acc[a]);
      }
    }
  }
#pragma GCC unroll 16
  for (int a = 0; a < A; ++a) _mm256_storeu_ps(y + a * y_stride, acc[a]);
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

}  // namespace tokenmill::devices::cpu::internal::avx2

TOKENMILL_KERNELS_TARGET_END

#endif  // TOKENMILL_KERNELS_X86
