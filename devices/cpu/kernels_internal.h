// Internals of the CPU kernels (devices/cpu/kernels.h): the CPU feature probe,
// GGUF block helpers and the per-ISA entry points the dispatcher in
// kernels.cc calls. The AVX2 and AVX-512 entry points are compiled with
// per-function target attributes, so the library runs on any x86-64 and only
// calls them after DetectIsa() said the CPU has them.
#pragma once

#include <cstdint>
#include <cstring>

#include "devices/cpu/kernels.h"
#include "devices/model_spec.h"

namespace tokenmill::devices::cpu::internal {

// What cpuid and xgetbv report, probed once per process (the answer cannot
// change while it runs).
struct CpuFeatures {
  bool avx2 = false;         // AVX2 + FMA + F16C, with OS-saved YMM state
  bool avx512 = false;       // AVX-512 F + BW + VL, with OS-saved ZMM state
  bool avx512_vnni = false;  // AVX-512 VNNI (vpdpbusd on ymm/zmm)
};
const CpuFeatures& HostCpuFeatures();

// GGUF block sizes (32 elements; f16 scale first).
inline constexpr int64_t kBlock = 32;
inline constexpr int64_t kQ8BlockBytes = 34;
inline constexpr int64_t kQ4BlockBytes = 18;

inline uint16_t LoadU16(const void* p) {
  uint16_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline int32_t LoadI32(const void* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// One activation row prepared for quantized weights: its Q8_0 blocks
// (cols/32 x 34 bytes), then, from the next 64-byte boundary, per block the
// f32 scale (the stored f16 d, widened) and the int32 offset correction
// -128 * sum(q) (what (q_w + 128) . q_x overshoots w . x by), so that the
// batched VNNI kernel needs neither a convert nor a correction dot per block.
// Rows are 64-byte multiples apart.
inline int64_t Q8BlocksBytes(int64_t cols) { return cols / kBlock * kQ8BlockBytes; }
inline int64_t Q8ScalesOffset(int64_t cols) { return (Q8BlocksBytes(cols) + 63) / 64 * 64; }
inline int64_t Q8CorrectionsOffset(int64_t cols) {
  return Q8ScalesOffset(cols) + cols / kBlock * 4;
}
// The Q8_0 part ends at Q8KValuesOffset. After it, for K-quant weights, the
// row again as Q8_K: int8 values in blocks of 256 (one f32 scale per block,
// d = max|x| / 127, q = round(x / d)), then the f32 scales, then per 16
// values the int16 sum of q (so that Q4_K/Q5_K's mins and Q6_K's offset of
// 32 are integer dots with the weight's per-sub-block scales), then per 16
// values that sum times d as f32 (the same terms as one f32 FMA per
// super-block, for the batched kernel). Written when
// cols % 256 == 0; the space is sized for cols rounded up to 256, so that
// the row bytes never shrink as cols grows (callers size one buffer for the
// widest input).
inline constexpr int64_t kSuperBlock = 256;
inline int64_t Q8KValuesOffset(int64_t cols) {
  return (Q8CorrectionsOffset(cols) + cols / kBlock * 4 + 63) / 64 * 64;
}
inline int64_t Q8KSupers(int64_t cols) { return (cols + kSuperBlock - 1) / kSuperBlock; }
inline int64_t Q8KScalesOffset(int64_t cols) {
  return Q8KValuesOffset(cols) + Q8KSupers(cols) * kSuperBlock;
}
inline int64_t Q8KSumsOffset(int64_t cols) { return Q8KScalesOffset(cols) + Q8KSupers(cols) * 4; }
inline int64_t Q8KScaledSumsOffset(int64_t cols) {
  return (Q8KSumsOffset(cols) + Q8KSupers(cols) * 16 * 2 + 63) / 64 * 64;
}
// Bytes of one prepared activation row (the stride between rows).
inline int64_t Q8RowBytes(int64_t cols) {
  return Q8KScaledSumsOffset(cols) + Q8KSupers(cols) * 16 * 4;
}

// vpshufb controls (64 bytes; AVX2 loads the first 32) that move byte k of
// every dword to byte `to` (and to2 when >= 0), the other bytes zero: how
// the K-quant batch kernels spread per-row scale bytes across their lanes.
struct alignas(64) ByteSpread {
  int8_t c[64];
};
constexpr ByteSpread MakeSpread(int k, int to, int to2) {
  ByteSpread s{};
  for (int i = 0; i < 64; ++i) {
    const int in_dword = i % 4, dword_base = i / 4 % 4 * 4;
    s.c[i] = (in_dword == to || in_dword == to2) ? static_cast<int8_t>(dword_base + k)
                                                 : static_cast<int8_t>(-128);
  }
  return s;
}
// Per k: to byte 0 (an unsigned int32); to bytes 0 and 2 (an unsigned int16
// pair); to byte 3, to byte 1, to bytes 1 and 3 (for sign-extending shifts).
inline constexpr ByteSpread kToInt32[4] = {MakeSpread(0, 0, -1), MakeSpread(1, 0, -1),
                                           MakeSpread(2, 0, -1), MakeSpread(3, 0, -1)};
inline constexpr ByteSpread kToPair[4] = {MakeSpread(0, 0, 2), MakeSpread(1, 0, 2),
                                          MakeSpread(2, 0, 2), MakeSpread(3, 0, 2)};
inline constexpr ByteSpread kToByte3[4] = {MakeSpread(0, 3, -1), MakeSpread(1, 3, -1),
                                           MakeSpread(2, 3, -1), MakeSpread(3, 3, -1)};
inline constexpr ByteSpread kToByte1[4] = {MakeSpread(0, 1, -1), MakeSpread(1, 1, -1),
                                           MakeSpread(2, 1, -1), MakeSpread(3, 1, -1)};
inline constexpr ByteSpread kToHighPair[4] = {MakeSpread(0, 1, 3), MakeSpread(1, 1, 3),
                                              MakeSpread(2, 1, 3), MakeSpread(3, 1, 3)};

// Quantizes n floats (n % 32 == 0) to Q8_0 blocks: d = max|x| / 127 (stored as
// f16), q = round-half-away-from-zero(x / d) computed as x * (1 / d).
void QuantizeQ8_0(const float* x, int64_t n, uint8_t* out);
// The activation quantizers' two loops, exact to std::fabs / std::max and
// std::round (ties away from zero) for finite values, SSE2 on x86-64 (the
// library call std::round makes had been a tenth of batch-16 decode):
// max |x_i| over n values (n % 16 == 0), and q_i = round(x_i * id) as int8,
// saturated to [-128, 127] (n % 16 == 0; callers keep |x_i * id| <= 127.5).
float AbsMax(const float* x, int64_t n);
void ScaleRoundToInt8(const float* x, int64_t n, float id, int8_t* q);

// False when TOKENMILL_CPU_KQUANT_BATCH=off is in the environment (read
// once): K-quant matmuls then keep the per-row kernel at every batch size,
// for benchmarks that compare the two.
bool KQuantBatchEnabled();
// The K-quant batch kernels' weight-row tiles (avx512::MatMulKBatch: 16
// rows, a zmm of lanes; avx2::MatMulKBatch: 8 rows, a ymm), and the fewest
// activation rows that take them (below, the per-row kernels are faster;
// measured with tests/bench/kernels_bench, batch kernel on and off).
inline constexpr int64_t kKBatchTileRows = 16;
// AVX-512, with the weights streaming from memory (BM_MatMulRowsStream): at
// 2 rows the per-row kernels are faster, at 4 Q4_K/Q5_K's batch kernel ties
// or wins and Q6_K's ties, from 6 all win clearly.
constexpr int64_t KBatchMinRows(TensorType type) { return type == TensorType::kQ6_K ? 6 : 4; }
// AVX2: ties with the per-row kernel at 2 rows streaming, wins with the
// weights in cache (BM_MatMulRows), wins clearly from 6.
inline constexpr int64_t kKBatchTileRowsAvx2 = 8;
inline constexpr int64_t kKBatchMinRowsAvx2 = 2;

// K-quants (kernels_kquant.cc): rows of n values (n % 256 == 0) quantized
// into / dequantized from the type's GGUF super-blocks.
bool IsKQuant(TensorType type);
void QuantizeKQuant(TensorType type, const float* x, int64_t n, uint8_t* out);
void DequantizeKQuant(TensorType type, const uint8_t* row, int64_t n, float* out);
// Quantizes n floats (n % 256 == 0) to the Q8_K part of a prepared row
// (values, scales and sums at the offsets above, `row` its start).
void QuantizeQ8K(const float* x, int64_t n, uint8_t* row);
// MatMulRows for K-quant weights against the Q8_K part of prepared rows.
namespace scalar {
void MatMulKQuant(const TensorView& w, int64_t row_begin, int64_t row_end, const Activations& x,
                  float* y, int64_t y_stride);
}  // namespace scalar
#if defined(__x86_64__) || defined(__i386__)
namespace avx2 {
// From kKBatchMinRowsAvx2 activation rows (and when KQuantBatchEnabled())
// whole tiles of kKBatchTileRowsAvx2 rows go to MatMulKBatch.
void MatMulKQuant(const TensorView& w, int64_t row_begin, int64_t row_end, const Activations& x,
                  float* y, int64_t y_stride);
// K-quant weights against many activation rows (kernels_avx2_kquant_batch.cc):
// rows [row_begin, row_end) in tiles of kKBatchTileRowsAvx2 (the range must
// be a multiple of it), every activation row. Needs AVX2 + FMA + F16C.
void MatMulKBatch(const TensorView& w, int64_t row_begin, int64_t row_end, const Activations& x,
                  float* y, int64_t y_stride);
}  // namespace avx2
#endif

// One set of kernels per ISA, same contracts as the public functions in
// kernels.h (minus the isa argument).
#define TOKENMILL_DECLARE_ISA_KERNELS(ns)                                                        \
  namespace ns {                                                                                 \
  void MatMulRows(const TensorView& w, int64_t row_begin, int64_t row_end, const Activations& x, \
                  float* y, int64_t y_stride);                                                   \
  void RmsNorm(const float* x, const float* weight, int64_t n, float eps, float* out);           \
  void SiluMul(float* gate, const float* up, int64_t n);                                         \
  void Add(float* y, const float* x, int64_t n);                                                 \
  float DotF32(const float* a, const float* b, int64_t n);                                       \
  float DotF16(const uint16_t* a, const float* b, int64_t n);                                    \
  void AxpyF32(float a, const float* x, float* y, int64_t n);                                    \
  void AxpyF16(float a, const uint16_t* x, float* y, int64_t n);                                 \
  void StoreF16(const float* x, uint16_t* out, int64_t n);                                       \
  }

TOKENMILL_DECLARE_ISA_KERNELS(scalar)
#if defined(__x86_64__) || defined(__i386__)
#define TOKENMILL_KERNELS_X86 1
TOKENMILL_DECLARE_ISA_KERNELS(avx2)
TOKENMILL_DECLARE_ISA_KERNELS(avx512)
namespace avx512 {
// MatMulRows for Q8_0/Q4_0 weights with vpdpbusd (AVX-512 VNNI), in
// kernels_avx512_quant.cc.
void MatMulRowsVnni(const TensorView& w, int64_t row_begin, int64_t row_end, const Activations& x,
                    float* y, int64_t y_stride);
// Q8_0 weights against many activation rows (kernels_avx512_q8_batch.cc):
// rows [row_begin, row_end) in tiles of kQ8BatchTileRows (the range must be
// a multiple of it), every activation row. Worth it from kQ8BatchMinRows
// activation rows; below, the weight transposes cost more than they save.
inline constexpr int64_t kQ8BatchTileRows = 16;
inline constexpr int64_t kQ8BatchMinRows = 6;
void MatMulQ8Batch(const TensorView& w, int64_t row_begin, int64_t row_end, const Activations& x,
                   float* y, int64_t y_stride);
// K-quant weights against many activation rows (kernels_avx512_kquant_
// batch.cc), as MatMulQ8Batch: rows [row_begin, row_end) in tiles of
// kKBatchTileRows (the range must be a multiple of it), every activation
// row. MatMulKQuantVnni takes it from KBatchMinRows(type) activation rows (and
// when KQuantBatchEnabled()).
void MatMulKBatch(const TensorView& w, int64_t row_begin, int64_t row_end, const Activations& x,
                  float* y, int64_t y_stride);
// K-quant weights with vpmaddubsw + vpdpwssd (AVX-512 BW + VNNI), in
// kernels_kquant.cc; from KBatchMinRows(type) activation rows whole tiles go to
// MatMulKBatch.
void MatMulKQuantVnni(const TensorView& w, int64_t row_begin, int64_t row_end, const Activations& x,
                      float* y, int64_t y_stride);
}  // namespace avx512
#endif
#undef TOKENMILL_DECLARE_ISA_KERNELS

// Activation rows per cache block in MatMulRows: enough rows that a block of
// activations stays in L2 (~256 KiB) while every weight row streams past it
// once, at least 4.
inline int64_t ActivationBlockRows(int64_t row_bytes) {
  const int64_t rows = (512 << 10) / (row_bytes > 0 ? row_bytes : 1);
  return rows < 4 ? 4 : rows;
}

}  // namespace tokenmill::devices::cpu::internal
