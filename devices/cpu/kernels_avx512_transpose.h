// The register transpose the AVX-512 batch kernels (kernels_avx512_q8_batch.cc,
// kernels_avx512_kquant_batch.cc) share: 32 bytes of 16 weight rows turned
// into 8 zmm whose 32-bit lanes each hold 4 bytes of one row, so that one
// vpdpbusd with broadcast activation bytes works on 16 rows at once, and the
// order in which the rows come out in the lanes.
//
// Only include from files that call these after HostCpuFeatures().avx512.
// The functions carry their own target attribute (the including files select
// theirs per function), a subset of their callers', so they inline there.
#pragma once

#include <cstdint>

#include "devices/cpu/kernels_internal.h"
#include "devices/cpu/kernels_target.h"

#if defined(TOKENMILL_KERNELS_X86)

namespace tokenmill::devices::cpu::internal::avx512 {

// Weight row of output lane l after Transpose16x32: lanes come out as rows
// 0-3, 8-11, 4-7, 12-15 (the last shuffle picks 128-bit quarters), so an
// accumulator of 16 rows gets its quarters 1 and 2 swapped before the store
// (_mm512_shuffle_f32x4(acc, acc, _MM_SHUFFLE(3, 1, 2, 0))), and per-row
// data is gathered with LaneRow(l) * stride as lane l's index.
constexpr int LaneRow(int lane) {
  const int quarter = lane / 4;
  const int base[4] = {0, 8, 4, 12};
  return base[quarter] + lane % 4;
}

// The 32 bytes at p of 16 rows (row r at p + r * stride) as 8 zmm: register
// i, lane l = bytes 4i..4i+3 of row LaneRow(l).
__attribute__((always_inline, target("avx512f"))) inline void Transpose16x32(const uint8_t* p,
                                                                             int64_t stride,
                                                                             __m512i (&out)[8]) {
  __m512i z[8];
#pragma GCC unroll 8
  for (int r = 0; r < 8; ++r) {
    z[r] = _mm512_inserti64x4(
        _mm512_castsi256_si512(
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + r * stride))),
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + (r + 8) * stride)), 1);
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

}  // namespace tokenmill::devices::cpu::internal::avx512

#endif  // TOKENMILL_KERNELS_X86
