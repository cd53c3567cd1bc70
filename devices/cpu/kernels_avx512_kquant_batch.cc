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
#include <cstring>

#include "devices/cpu/kernels_avx512_transpose.h"
#include "devices/cpu/kernels_batch_tiles.h"
#include "devices/cpu/kernels_internal.h"
#include "devices/cpu/kernels_target.h"

#if defined(TOKENMILL_KERNELS_X86)

TOKENMILL_KERNELS_TARGET_BEGIN(TOKENMILL_ISA_AVX512_VNNI)

namespace tokenmill::devices::cpu::internal::avx512 {
namespace {

constexpr int kTile = static_cast<int>(kKBatchTileRows);
// Most activation rows one tile call takes: 16 int32 super-block sums, the 8
// weight registers of a 32-value slice, two scale registers and the dot
// chains about fill the 32 zmm (groups of 8 measured slower: the unpacking
// is then paid twice for 16 rows).
constexpr int kMaxKGroup = 16;

// 16 weight rows in a zmm (lane l: row LaneRow(l)): the width
// kernels_kquant_unpack.h unpacks with.
struct Zmm {
  using Reg = __m512i;
  __attribute__((always_inline)) static Reg And(Reg a, Reg b) { return _mm512_and_si512(a, b); }
  __attribute__((always_inline)) static Reg Or(Reg a, Reg b) { return _mm512_or_si512(a, b); }
  __attribute__((always_inline)) static Reg Slli16(Reg v, int n) { return _mm512_slli_epi16(v, n); }
  __attribute__((always_inline)) static Reg Srli16(Reg v, int n) { return _mm512_srli_epi16(v, n); }
  __attribute__((always_inline)) static Reg Srli32(Reg v, int n) { return _mm512_srli_epi32(v, n); }
  __attribute__((always_inline)) static Reg Srai16(Reg v, int n) { return _mm512_srai_epi16(v, n); }
  __attribute__((always_inline)) static Reg Set1Epi8(char c) { return _mm512_set1_epi8(c); }
  __attribute__((always_inline)) static Reg Shuffle8(Reg v, const ByteSpread& s) {
    return _mm512_shuffle_epi8(v, _mm512_load_si512(s.c));
  }
  __attribute__((always_inline)) static Reg Gather(const uint8_t* p, Reg index) {
    return _mm512_i32gather_epi32(index, p, 1);
  }
  __attribute__((always_inline)) static void Transpose(const uint8_t* p, int64_t stride,
                                                       Reg (&out)[8]) {
    Transpose16x32(p, stride, out);
  }
};

#include "devices/cpu/kernels_kquant_unpack.h"

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
  UnpackValues<kType, Zmm>(block, stride, u->values);
  if constexpr (kType == TensorType::kQ6_K) {
    __m512i sc[4];
    GatherQ6Scales<Zmm>(block, gather_index, sc);
#pragma GCC unroll 16
    for (int j = 0; j < 16; ++j) {
      // Scale byte to the high byte of the dword, shifted down with sign.
      u->scale[j] = _mm512_srai_epi32(Zmm::Shuffle8(sc[j / 4], kToByte3[j % 4]), 24);
    }
    Q6ScalePairs<Zmm>(sc, u->pairs);
    // f16 d at 208: read as the high half of the dword at 206, so that the
    // gather stays inside the 210-byte block.
    u->d = _mm512_cvtph_ps(
        _mm512_cvtepi32_epi16(Zmm::Srli32(Zmm::Gather(block + 206, gather_index), 16)));
    u->dmin = _mm512_setzero_ps();
    return;
  }
  // Q4_K / Q5_K: f16 d and dmin at 0, then the 6-bit scales and mins.
  const __m512i dd = Zmm::Gather(block, gather_index);
  u->d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(dd));
  u->dmin = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(Zmm::Srli32(dd, 16)));
  __m512i sc[2], mn[2];
  UnpackScalesAndMins<Zmm>(block, gather_index, sc, mn);
#pragma GCC unroll 8
  for (int j = 0; j < 8; ++j) {
    u->scale[j] = Zmm::Shuffle8(sc[j / 4], kToInt32[j % 4]);
    u->pairs[j] = Zmm::Shuffle8(mn[j / 4], kToPair[j % 4]);
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

TOKENMILL_KERNELS_TARGET_END

#endif  // TOKENMILL_KERNELS_X86
