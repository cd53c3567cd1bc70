// Naive reference ops: plain f32/f64 loops with no SIMD, written independently
// of devices/cpu/kernels so that the kernels (every ISA) and the reference
// model are checked against code that shares nothing with them.
// Slow on purpose; for tests only.
#pragma once

#include <cstdint>
#include <vector>

#include "devices/model_spec.h"

namespace tokenmill::reference {

// IEEE half <-> float. f16 -> f32 is exact; NaNs come back quiet with their
// payload (what F16C does). f32 -> f16 rounds to nearest even, overflows to
// infinity, and turns NaN into a quiet NaN with the payload's top bits.
float HalfToFloatNaive(uint16_t h);
uint16_t FloatToHalfNaive(float f);
// bfloat16 <-> float. bf16 -> f32 is the bit pattern shifted up (exact, NaN
// payload kept). f32 -> bf16 rounds to nearest even; NaN stays a quiet NaN.
float Bf16ToFloatNaive(uint16_t b);
uint16_t FloatToBf16Naive(float f);

// out[i] = float(row r of w)[i] for i < w.cols(), any weight type.
void DequantizeRowNaive(const devices::TensorView& w, int64_t r, float* out);
// The whole tensor as f32, rows x cols row-major.
std::vector<float> DequantizeTensor(const devices::TensorView& w);

// Quantizes n floats (n % 32 == 0) into GGUF Q8_0 blocks (d = max|x|/127 stored
// as f16, q = round-half-away(x / d)); the form activations take for
// quantized matmuls.
std::vector<uint8_t> QuantizeQ8_0Naive(const float* x, int64_t n);

// y[r] = sum_k w[r * cols + k] * x[k], accumulated in f64.
void MatVecNaive(const float* w, int64_t rows, int64_t cols, const float* x, float* y);
// The same, returning the f64 sums (tests compare kernels against these).
std::vector<double> MatVecNaiveF64(const float* w, int64_t rows, int64_t cols, const float* x);

// out = x / sqrt(mean(x^2) + eps) * weight (f64 sums). out may alias x.
void RmsNormNaive(const float* x, const float* weight, int64_t n, float eps, float* out);
// silu(x) = x / (1 + exp(-x)), in f64.
float SiluNaive(float x);
// gate[i] = silu(gate[i]) * up[i].
void SiluMulNaive(float* gate, const float* up, int64_t n);
// gate[i] = gelu(gate[i]) * up[i], GELU's tanh approximation
// 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), in f64.
void GeluTanhMulNaive(float* gate, const float* up, int64_t n);
// x = softmax(x), in f64 with the max subtracted.
void SoftmaxNaive(float* x, int64_t n);

// Inverse RoPE frequencies of a head, computed in f64: theta^(-2i/d), then
// Llama 3 scaling when hp.rope_scaling is enabled, or divided by
// freq_factors[i] when freq_factors is not null.
std::vector<double> RopeInvFrequenciesNaive(const devices::ModelHyperparams& hp,
                                            const float* freq_factors);
// Rotates `heads` consecutive heads of head_dim floats at position pos, with
// frequencies from hp (rope_theta, rope_scaling) and freq_factors (may be null).
void RopeNaive(float* x, int32_t heads, int32_t head_dim, int32_t pos,
               const devices::ModelHyperparams& hp, const float* freq_factors,
               devices::RopeStyle style);

}  // namespace tokenmill::reference
