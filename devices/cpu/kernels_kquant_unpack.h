// The K-quant batch kernels' super-block unpacking, written once for both
// register widths (kernels_avx2_kquant_batch.cc: 8 weight rows in a ymm;
// kernels_avx512_kquant_batch.cc: 16 rows in a zmm): the bit logic that
// turns transposed packed bytes into unsigned values, Q4_K/Q5_K's 6-bit
// sub-block scales and mins as bytes, and Q6_K's int8 scales as the int16
// pairs that multiply the activation's per-16 sums. What each kernel's
// multiply wants from the scales (int16 pairs for vpmaddwd, int32 for
// vpmulld) and the f16 super-block scales stay in the kernels.
//
// No include guard, on purpose: each kernel file includes this inside its
// target region and its own ISA namespace, so that the templates here are
// defined (and compiled) with that file's target. GCC gives a template the
// target of the place where it is defined, not where it is instantiated: a
// template defined outside the region could not inline the width's
// intrinsics ("target specific option mismatch"), and a unity build that
// puts both kernel files in one translation unit reads this once per
// namespace. It includes nothing: the including file has <immintrin.h> and
// kernels_internal.h (TensorType, ByteSpread, kToByte1/kToByte3).
//
// W, the width, provides (all static, always_inline):
//   Reg                       __m256i or __m512i: one dword lane per weight row
//   And, Or (Reg, Reg)        bitwise
//   Slli16, Srli16 (Reg, int) shifts of each 16-bit word (the count is a
//                             constant once the loops here are unrolled)
//   Srli32 (Reg, int)         shift of each dword
//   Srai16 (Reg, int)         arithmetic shift of each 16-bit word
//   Set1Epi8 (char)           the byte in every byte
//   Shuffle8 (Reg, ByteSpread) vpshufb by the spread's byte pattern
//   Gather (p, Reg index)     the dword at p + index (bytes) per lane
//   Transpose (p, stride, Reg (&out)[8])  32 bytes at p of each weight row
//                             (row r at p + r * stride) into 8 registers:
//                             register i, a row's lane = its bytes 4i..4i+3

// values[8s + i] of one super-block of the tile's rows: per lane, values
// 32s + 4i .. 32s + 4i + 3 of its row, unsigned (Q4_K 0..15, Q5_K 0..31,
// Q6_K 0..63), for s < 8 and i < 8.
template <TensorType kType, typename W>
__attribute__((always_inline)) inline void UnpackValues(const uint8_t* block, int64_t stride,
                                                        typename W::Reg* values) {
  using Reg = typename W::Reg;
  const Reg low4 = W::Set1Epi8(0x0f);
  if constexpr (kType == TensorType::kQ6_K) {
    // ql at 0 (128 bytes: low 4 bits), qh at 128 (64 bytes: high 2 bits).
    const Reg m30 = W::Set1Epi8(0x30);
#pragma GCC unroll 2
    for (int n = 0; n < 2; ++n) {
      Reg a[8], b[8], h[8];
      W::Transpose(block + 64 * n, stride, a);
      W::Transpose(block + 64 * n + 32, stride, b);
      W::Transpose(block + 128 + 32 * n, stride, h);
#pragma GCC unroll 8
      for (int i = 0; i < 8; ++i) {
        // Values 128n + 32c + 4i (c = 0..3): slice 4n + c.
        Reg* v = values + 8 * (4 * n) + i;
        v[0] = W::Or(W::And(a[i], low4), W::And(W::Slli16(h[i], 4), m30));
        v[8] = W::Or(W::And(b[i], low4), W::And(W::Slli16(h[i], 2), m30));
        v[16] = W::Or(W::And(W::Srli16(a[i], 4), low4), W::And(h[i], m30));
        v[24] = W::Or(W::And(W::Srli16(b[i], 4), low4), W::And(W::Srli16(h[i], 2), m30));
      }
    }
    return;
  }
  // Q4_K / Q5_K: (Q5_K) 32 bytes of high bits at 16, then 128 bytes of
  // nibbles.
  constexpr bool kFive = kType == TensorType::kQ5_K;
  const uint8_t* qs = block + (kFive ? 48 : 16);
  Reg h[8];
  if constexpr (kFive) W::Transpose(block + 16, stride, h);
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) {
    Reg t[8];
    W::Transpose(qs + 32 * j, stride, t);
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) {
      // Values 64j + 4i (low nibbles, slice 2j) and 64j + 32 + 4i (high,
      // slice 2j + 1); Q5_K's fifth bit is bit 2j (2j + 1) of qh's byte.
      Reg lo = W::And(t[i], low4);
      Reg hi = W::And(W::Srli16(t[i], 4), low4);
      if constexpr (kFive) {
        const Reg bit = W::Set1Epi8(0x10);
        const Reg hl = 2 * j <= 4 ? W::Slli16(h[i], 4 - 2 * j) : W::Srli16(h[i], 2 * j - 4);
        const Reg hh = 2 * j + 1 <= 4 ? W::Slli16(h[i], 3 - 2 * j) : W::Srli16(h[i], 2 * j - 3);
        lo = W::Or(lo, W::And(hl, bit));
        hi = W::Or(hi, W::And(hh, bit));
      }
      values[8 * (2 * j) + i] = lo;
      values[8 * (2 * j + 1) + i] = hi;
    }
  }
}

// Q4_K / Q5_K: the 12 bytes of 6-bit scales and mins at block + 4 (after
// the f16 d and dmin), per lane (gather_index: the lanes' row offsets), as
// bytes: byte k of sc[0] / mn[0] is the scale / min of sub-block k, of
// sc[1] / mn[1] those of sub-block k + 4.
template <typename W>
__attribute__((always_inline)) inline void UnpackScalesAndMins(const uint8_t* block,
                                                               typename W::Reg gather_index,
                                                               typename W::Reg (&sc)[2],
                                                               typename W::Reg (&mn)[2]) {
  using Reg = typename W::Reg;
  const Reg u0 = W::Gather(block + 4, gather_index);
  const Reg u1 = W::Gather(block + 8, gather_index);
  const Reg u2 = W::Gather(block + 12, gather_index);
  const Reg m3f = W::Set1Epi8(0x3f), m0f = W::Set1Epi8(0x0f), m30 = W::Set1Epi8(0x30);
  sc[0] = W::And(u0, m3f);
  sc[1] = W::Or(W::And(u2, m0f), W::And(W::Srli32(u0, 2), m30));
  mn[0] = W::And(u1, m3f);
  mn[1] = W::Or(W::And(W::Srli32(u2, 4), m0f), W::And(W::Srli32(u1, 2), m30));
}

// Q6_K: the 16 int8 sub-block scales at block + 192, per lane
// (gather_index: the lanes' row offsets), as 4 registers: byte k of sc[q]
// is the scale of sub-block 4q + k.
template <typename W>
__attribute__((always_inline)) inline void GatherQ6Scales(const uint8_t* block,
                                                          typename W::Reg gather_index,
                                                          typename W::Reg (&sc)[4]) {
#pragma GCC unroll 4
  for (int k = 0; k < 4; ++k) sc[k] = W::Gather(block + 192 + 4 * k, gather_index);
}

// Q6_K: pairs[p] the int16 pair of the scales (sc: from GatherQ6Scales) of
// sub-blocks 2p and 2p + 1, sign-extended, that multiplies the activation's
// sums of values 32p .. 32p + 15 and 32p + 16 .. 32p + 31.
template <typename W>
__attribute__((always_inline)) inline void Q6ScalePairs(const typename W::Reg (&sc)[4],
                                                        typename W::Reg (&pairs)[8]) {
  using Reg = typename W::Reg;
#pragma GCC unroll 8
  for (int p = 0; p < 8; ++p) {
    const int k = (2 * p) % 4;
    // Byte k to the high byte of word 0, byte k + 1 to word 1's.
    const Reg lo = W::Shuffle8(sc[p / 2], kToByte1[k]);
    const Reg hi = W::Shuffle8(sc[p / 2], kToByte3[k + 1]);
    pairs[p] = W::Srai16(W::Or(lo, hi), 8);
  }
}
