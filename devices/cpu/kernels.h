// CPU kernels for the Llama-family forward, chosen at run time by CPU
// features: AVX-512 (F+BW+VL) where present, else AVX2+FMA+F16C, else plain
// C++. Every kernel is checked against the naive f32 loops in
// tests/reference/ for every weight type and ISA (tests/kernels/).
//
// Threading: kernels are plain functions on caller-owned memory; the
// executor's worker pool splits rows across threads. No kernel allocates.
#pragma once

#include <cstddef>
#include <cstdint>

#include "devices/model_spec.h"

namespace tokenmill::devices::cpu {

enum class Isa { kScalar, kAvx2, kAvx512 };

// The best ISA this CPU supports (cpuid + OS support for the registers).
// TOKENMILL_CPU_ISA=scalar|avx2|avx512 in the environment caps it (for tests
// and benchmarks that compare paths).
Isa DetectIsa();
const char* IsaName(Isa isa);

// Quantizes n floats (n a multiple of the type's block size) into `out` in the
// type's GGUF layout: Q8_0 d = max|x|/127, q = round(x/d); Q4_0 d = max/-8
// (max = the element of largest magnitude, sign kept), q = min(15, x/d + 8.5)
// truncated. Plain and exact, not fast: for writing model files and tests.
void QuantizeRow(TensorType type, const float* x, int64_t n, void* out);

// Conversions (scalar, exact IEEE round-to-nearest-even for f32 -> f16/bf16).
float HalfToFloat(uint16_t h);
uint16_t FloatToHalf(float f);
float Bf16ToFloat(uint16_t b);
uint16_t FloatToBf16(float f);

// Activations in the form a weight type's dot product wants: f32 rows for
// F32/F16/BF16 weights; for Q8_0, Q4_0 and K-quant weights also the rows
// quantized: for Q8_0 and Q4_0 weights to Q8_0 blocks (so the inner loop is an
// int8 dot product), each row's blocks followed by per-block precomputed data
// (the f32 scale and the unsigned-offset correction) for the batched kernel;
// for K-quant weights to Q8_K blocks of 256 after those; the row layout is
// internal
// (kernels_internal.h: Q8RowBytes and friends).
struct Activations {
  const float* f32 = nullptr;   // rows x cols, row stride = cols
  const uint8_t* q8 = nullptr;  // rows of prepared Q8_0 data, or null
  int64_t rows = 0;
  int64_t cols = 0;
};

// The parts of a prepared activation row, as bit flags: the Q8_0 blocks with
// their per-block scale and correction (what Q8_0 and Q4_0 weights read), and
// the Q8_K super-blocks (what K-quant weights read; rows whose width is a
// multiple of 256 only). An input read by several weight types is prepared
// once with the union of their parts.
enum ActivationFormat : uint32_t {
  kActivationQ8_0 = 1u << 0,
  kActivationQ8K = 1u << 1,
};
// The parts weights of type `w` read: 0 for F32/F16/BF16 (they read x.f32).
uint32_t ActivationFormats(TensorType w);

// Scratch bytes PrepareActivations needs for weights of type `w`.
size_t ActivationScratchBytes(TensorType w, int64_t rows, int64_t cols);

// Quantizes rows [row_begin, row_end) of x into scratch, writing the parts
// named in `formats` (a row's layout is the same whichever parts are
// written; the others are left as they were). Threads may prepare disjoint
// row ranges of one Activations concurrently; Bind() then gives the view
// (cheap, no work). The TensorType form prepares ActivationFormats(w).
void PrepareActivationRows(Isa isa, uint32_t formats, const float* x, int64_t cols,
                           int64_t row_begin, int64_t row_end, uint8_t* scratch);
void PrepareActivationRows(Isa isa, TensorType w, const float* x, int64_t cols, int64_t row_begin,
                           int64_t row_end, uint8_t* scratch);
Activations BindActivations(TensorType w, const float* x, int64_t rows, int64_t cols,
                            const uint8_t* scratch);

// y[m * y_stride + n] = sum_k W[n][k] * x[m][k] for n in [row_begin, row_end)
// and every activation row m. Each weight row is read once and used for all
// activation rows (the point of batching). W.cols() == x.cols; cols is a
// multiple of 32.
void MatMulRows(Isa isa, const TensorView& w, int64_t row_begin, int64_t row_end,
                const Activations& x, float* y, int64_t y_stride);

// out[i] = float(row r of w)[i], i < w.cols(): embedding lookup, any type.
void DequantizeRow(const TensorView& w, int64_t r, float* out);

// out = x / sqrt(mean(x^2) + eps) * weight. weight is f32 (norms are f32 in
// every supported file; loaders convert). out may alias x.
void RmsNorm(Isa isa, const float* x, const float* weight, int64_t n, float eps, float* out);

// gate[i] = silu(gate[i]) * up[i].
void SiluMul(Isa isa, float* gate, const float* up, int64_t n);

// y[i] += x[i].
void Add(Isa isa, float* y, const float* x, int64_t n);

// Dot products and accumulations against KV rows stored as f16 or f32.
float DotF32(Isa isa, const float* a, const float* b, int64_t n);
float DotF16(Isa isa, const uint16_t* a, const float* b, int64_t n);
// y[i] += a * x[i]
void AxpyF32(Isa isa, float a, const float* x, float* y, int64_t n);
void AxpyF16(Isa isa, float a, const uint16_t* x, float* y, int64_t n);
// Stores f32 values as f16 (KV writes).
void StoreF16(Isa isa, const float* x, uint16_t* out, int64_t n);

// Rotary position embedding: Rope() rotates each of `heads` consecutive heads
// of head_dim floats at position pos, with inverse frequencies from
// devices::RopeInvFrequencies (model_spec.h).
void Rope(float* x, int32_t heads, int32_t head_dim, int32_t pos, const float* inv_freq,
          RopeStyle style);

}  // namespace tokenmill::devices::cpu
