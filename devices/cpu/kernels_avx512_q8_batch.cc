// MatMulRows for Q8_0 weights against many activation rows, AVX-512 VNNI.
//
// The pair kernel (kernels_avx512_quant.cc) keeps one output per register and
// so pays a convert, a scale product and an FMA for every vpdpbusd: at batch
// sizes where the matmul is compute-bound those dominate. Here a register
// holds 16 outputs instead, one per weight row: the 32-byte blocks of 16
// weight rows are transposed in registers into 8 zmm (kernels_avx512_
// transpose.h), zmm i holding bytes 4i..4i+3 of each row's block (offset
// to unsigned, as in the pair kernel), so that one vpdpbusd with four
// activation bytes broadcast does 16 rows x 4 elements. Per block and
// activation row that is 8 vpdpbusd, one convert, one multiply and one FMA;
// the transpose and the 16 weight scales (a gather) are paid once per block
// for every activation row. The activation
// scale and offset correction come precomputed from PrepareActivationRows.
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

constexpr int kRows = static_cast<int>(kQ8BatchTileRows);
// Most activation rows one tile call takes: 16 accumulators, 8 weight
// registers, the scales and temporaries fill the 32 zmm.
constexpr int kMaxGroup = 16;

float LoadF32(const uint8_t* p) {
  float v;
  std::memcpy(&v, p, sizeof(v));
  return v;
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
      for (int64_t o = 0; o < kSliceBytes + 63; o += 64) PrefetchWeights(slice + o);
    }
    const uint8_t* wb = w + b * kQ8BlockBytes;
    // The 32 bytes after each row's f16 scale, offset to unsigned.
    __m512i wq[8];
    Transpose16x32(wb + 2, w_stride, wq);
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) wq[i] = _mm512_xor_si512(wq[i], offset);
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

struct Q8Tiles {
  template <int A>
  static void Run(const uint8_t* w, int64_t w_stride, const uint8_t* x, int64_t x_stride,
                  int64_t cols, const char* next, float* y, int64_t y_stride) {
    BatchTile<A>(w, w_stride, x, x_stride, cols, next, y, y_stride);
  }
};

}  // namespace

void MatMulQ8Batch(const TensorView& w, int64_t row_begin, int64_t row_end, const Activations& x,
                   float* y, int64_t y_stride) {
  RunBatchTiles<Q8Tiles, kRows, kMaxGroup>(w, row_begin, row_end, x, y, y_stride);
}

}  // namespace tokenmill::devices::cpu::internal::avx512

TOKENMILL_KERNELS_TARGET_END

#endif  // TOKENMILL_KERNELS_X86
