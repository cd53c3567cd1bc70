// Number formats: f16/bf16 conversions, GGUF block quantization and
// dequantization, and the prepared activations quantized matmuls consume.
#include <algorithm>
#include <cmath>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "devices/cpu/kernels.h"
#include "devices/cpu/kernels_internal.h"

namespace tokenmill::devices::cpu {
namespace {

uint32_t FloatBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

float BitsToFloat(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

// Weight types whose matmuls take prepared (quantized) activations.
bool IsQuantized(TensorType t) {
  return t == TensorType::kQ8_0 || t == TensorType::kQ4_0 || internal::IsKQuant(t);
}

void StoreU16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, sizeof(v)); }

void QuantizeQ4_0(const float* x, int64_t n, uint8_t* out) {
  for (int64_t b = 0; b < n / internal::kBlock; ++b) {
    const float* v = x + b * internal::kBlock;
    float max = 0.0f;  // the element of largest magnitude, sign kept
    for (int j = 0; j < 32; ++j) {
      if (std::fabs(v[j]) > std::fabs(max)) max = v[j];
    }
    const float d = max / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    uint8_t* block = out + b * internal::kQ4BlockBytes;
    StoreU16(block, FloatToHalf(d));
    for (int j = 0; j < 16; ++j) {
      const int lo = std::min(15, static_cast<int>(static_cast<int8_t>(v[j] * id + 8.5f)));
      const int hi = std::min(15, static_cast<int>(static_cast<int8_t>(v[j + 16] * id + 8.5f)));
      block[2 + j] = static_cast<uint8_t>(lo | (hi << 4));
    }
  }
}

}  // namespace

namespace internal {

#if defined(__SSE2__)
// SSE2 is part of x86-64, so this needs no dispatch. Max is exact in any
// order for non-NaN values; the rounding is std::round's: truncate (exact
// below 2^31), then step away from zero when the dropped part (exact: x and
// its truncation share sign and exponent range) is at least one half.
float AbsMax(const float* x, int64_t n) {
  const __m128 magnitude = _mm_castsi128_ps(_mm_set1_epi32(0x7fffffff));
  __m128 m0 = _mm_setzero_ps(), m1 = m0, m2 = m0, m3 = m0;
  for (int64_t i = 0; i < n; i += 16) {
    m0 = _mm_max_ps(m0, _mm_and_ps(_mm_loadu_ps(x + i), magnitude));
    m1 = _mm_max_ps(m1, _mm_and_ps(_mm_loadu_ps(x + i + 4), magnitude));
    m2 = _mm_max_ps(m2, _mm_and_ps(_mm_loadu_ps(x + i + 8), magnitude));
    m3 = _mm_max_ps(m3, _mm_and_ps(_mm_loadu_ps(x + i + 12), magnitude));
  }
  __m128 m = _mm_max_ps(_mm_max_ps(m0, m1), _mm_max_ps(m2, m3));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}

void ScaleRoundToInt8(const float* x, int64_t n, float id, int8_t* q) {
  const __m128 scale = _mm_set1_ps(id);
  const __m128 half = _mm_set1_ps(0.5f), minus_half = _mm_set1_ps(-0.5f);
  auto round4 = [&](const float* p) {
    const __m128 s = _mm_mul_ps(_mm_loadu_ps(p), scale);
    const __m128i t = _mm_cvttps_epi32(s);
    const __m128 rest = _mm_sub_ps(s, _mm_cvtepi32_ps(t));
    // Comparison masks are -1 where true.
    const __m128i up = _mm_castps_si128(_mm_cmpge_ps(rest, half));
    const __m128i down = _mm_castps_si128(_mm_cmple_ps(rest, minus_half));
    return _mm_add_epi32(_mm_sub_epi32(t, up), down);
  };
  for (int64_t i = 0; i < n; i += 16) {
    const __m128i lo = _mm_packs_epi32(round4(x + i), round4(x + i + 4));
    const __m128i hi = _mm_packs_epi32(round4(x + i + 8), round4(x + i + 12));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + i), _mm_packs_epi16(lo, hi));
  }
}
#else
float AbsMax(const float* x, int64_t n) {
  float amax = 0.0f;
  for (int64_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[i]));
  return amax;
}

void ScaleRoundToInt8(const float* x, int64_t n, float id, int8_t* q) {
  for (int64_t i = 0; i < n; ++i) {
    q[i] = static_cast<int8_t>(std::clamp(std::round(x[i] * id), -128.0f, 127.0f));
  }
}
#endif

void QuantizeQ8_0(const float* x, int64_t n, uint8_t* out) {
  for (int64_t b = 0; b < n / kBlock; ++b) {
    const float* v = x + b * kBlock;
    const float amax = AbsMax(v, kBlock);
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    uint8_t* block = out + b * kQ8BlockBytes;
    StoreU16(block, FloatToHalf(d));
    ScaleRoundToInt8(v, kBlock, id, reinterpret_cast<int8_t*>(block + 2));
  }
}

}  // namespace internal

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) {  // Inf, or NaN made quiet (as F16C does)
    return BitsToFloat(sign | 0x7f800000u | (mant << 13) | (mant != 0 ? 0x400000u : 0u));
  }
  if (exp == 0) {
    if (mant == 0) return BitsToFloat(sign);
    // Subnormal: shift the leading 1 into the implicit bit.
    uint32_t e = 113;
    while ((mant & 0x400u) == 0) {
      mant <<= 1;
      --e;
    }
    return BitsToFloat(sign | (e << 23) | ((mant & 0x3ffu) << 13));
  }
  return BitsToFloat(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t FloatToHalf(float f) {
  const uint32_t bits = FloatBits(f);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t abs = bits & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u | ((abs >> 13) & 0x3ffu));
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // >= 65520: Inf
  if (abs < 0x38800000u) {  // below 2^-14: f16 subnormal, units of 2^-24
    const uint32_t shift = 126 - (abs >> 23);
    if (shift > 24) return sign;
    const uint32_t m = (abs & 0x7fffffu) | 0x800000u;
    uint32_t q = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1), halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (q & 1u))) ++q;
    return static_cast<uint16_t>(sign | q);
  }
  uint32_t h = (abs >> 13) - (112u << 10);
  const uint32_t rem = abs & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // a carry bumps the exponent
  return static_cast<uint16_t>(sign | h);
}

float Bf16ToFloat(uint16_t b) { return BitsToFloat(static_cast<uint32_t>(b) << 16); }

uint16_t FloatToBf16(float f) {
  const uint32_t bits = FloatBits(f);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  return static_cast<uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

void QuantizeRow(TensorType type, const float* x, int64_t n, void* out) {
  uint8_t* dst = static_cast<uint8_t*>(out);
  switch (type) {
    case TensorType::kF32:
      std::memcpy(dst, x, static_cast<size_t>(n) * sizeof(float));
      return;
    case TensorType::kF16:
      for (int64_t i = 0; i < n; ++i) StoreU16(dst + 2 * i, FloatToHalf(x[i]));
      return;
    case TensorType::kBF16:
      for (int64_t i = 0; i < n; ++i) StoreU16(dst + 2 * i, FloatToBf16(x[i]));
      return;
    case TensorType::kQ8_0:
      internal::QuantizeQ8_0(x, n, dst);
      return;
    case TensorType::kQ4_0:
      QuantizeQ4_0(x, n, dst);
      return;
    case TensorType::kQ4_K:
    case TensorType::kQ5_K:
    case TensorType::kQ6_K:
      internal::QuantizeKQuant(type, x, n, dst);
      return;
  }
}

void DequantizeRow(const TensorView& w, int64_t r, float* out) {
  const int64_t cols = w.cols();
  const uint8_t* row = w.row(r);
  switch (w.type) {
    case TensorType::kF32:
      std::memcpy(out, row, static_cast<size_t>(cols) * sizeof(float));
      return;
    case TensorType::kF16:
      for (int64_t i = 0; i < cols; ++i) out[i] = HalfToFloat(internal::LoadU16(row + 2 * i));
      return;
    case TensorType::kBF16:
      for (int64_t i = 0; i < cols; ++i) out[i] = Bf16ToFloat(internal::LoadU16(row + 2 * i));
      return;
    case TensorType::kQ8_0:
      for (int64_t b = 0; b < cols / internal::kBlock; ++b) {
        const uint8_t* block = row + b * internal::kQ8BlockBytes;
        const float d = HalfToFloat(internal::LoadU16(block));
        for (int j = 0; j < 32; ++j) {
          out[b * 32 + j] = d * static_cast<float>(static_cast<int8_t>(block[2 + j]));
        }
      }
      return;
    case TensorType::kQ4_0:
      for (int64_t b = 0; b < cols / internal::kBlock; ++b) {
        const uint8_t* block = row + b * internal::kQ4BlockBytes;
        const float d = HalfToFloat(internal::LoadU16(block));
        for (int j = 0; j < 16; ++j) {
          out[b * 32 + j] = d * static_cast<float>((block[2 + j] & 0x0f) - 8);
          out[b * 32 + j + 16] = d * static_cast<float>((block[2 + j] >> 4) - 8);
        }
      }
      return;
    case TensorType::kQ4_K:
    case TensorType::kQ5_K:
    case TensorType::kQ6_K:
      internal::DequantizeKQuant(w.type, row, cols, out);
      return;
  }
}

uint32_t ActivationFormats(TensorType w) {
  if (w == TensorType::kQ8_0 || w == TensorType::kQ4_0) return kActivationQ8_0;
  if (internal::IsKQuant(w)) return kActivationQ8K;
  return 0;
}

size_t ActivationScratchBytes(TensorType w, int64_t rows, int64_t cols) {
  return IsQuantized(w) ? static_cast<size_t>(rows * internal::Q8RowBytes(cols)) : 0;
}

void PrepareActivationRows(Isa /*isa*/, uint32_t formats, const float* x, int64_t cols,
                           int64_t row_begin, int64_t row_end, uint8_t* scratch) {
  // One quantizer for every ISA (SSE2 on x86-64, AbsMax / ScaleRoundToInt8):
  // it costs O(rows x cols), against the matmul's O(rows x cols x out), and
  // keeps Q8 activations bit-identical across paths.
  const bool q8_0 = (formats & kActivationQ8_0) != 0;
  // The Q8_K part exists for rows of whole super-blocks only.
  const bool q8k = (formats & kActivationQ8K) != 0 && cols % internal::kSuperBlock == 0;
  if (!q8_0 && !q8k) return;
  const int64_t row_bytes = internal::Q8RowBytes(cols);
  // Padding zeroed, so that a prepared part is the same bytes every time.
  const int64_t blocks_end = internal::Q8BlocksBytes(cols);
  const int64_t extras_end = internal::Q8CorrectionsOffset(cols) + cols / internal::kBlock * 4;
  const int64_t q8k_begin = internal::Q8KValuesOffset(cols);
  const int64_t sums_end = internal::Q8KSumsOffset(cols) + internal::Q8KSupers(cols) * 16 * 2;
  for (int64_t r = row_begin; r < row_end; ++r) {
    uint8_t* row = scratch + r * row_bytes;
    if (q8k) {
      internal::QuantizeQ8K(x + r * cols, cols, row);
      std::memset(row + sums_end, 0,
                  static_cast<size_t>(internal::Q8KScaledSumsOffset(cols) - sums_end));
    }
    if (!q8_0) continue;
    internal::QuantizeQ8_0(x + r * cols, cols, row);
    std::memset(row + blocks_end, 0,
                static_cast<size_t>(internal::Q8ScalesOffset(cols) - blocks_end));
    std::memset(row + extras_end, 0, static_cast<size_t>(q8k_begin - extras_end));
    for (int64_t b = 0; b < cols / internal::kBlock; ++b) {
      const uint8_t* block = row + b * internal::kQ8BlockBytes;
      const float d = HalfToFloat(internal::LoadU16(block));
      int32_t sum = 0;
      for (int j = 0; j < 32; ++j) sum += static_cast<int8_t>(block[2 + j]);
      const int32_t correction = -128 * sum;
      std::memcpy(row + internal::Q8ScalesOffset(cols) + 4 * b, &d, sizeof(d));
      std::memcpy(row + internal::Q8CorrectionsOffset(cols) + 4 * b, &correction,
                  sizeof(correction));
    }
  }
}

void PrepareActivationRows(Isa isa, TensorType w, const float* x, int64_t cols, int64_t row_begin,
                           int64_t row_end, uint8_t* scratch) {
  PrepareActivationRows(isa, ActivationFormats(w), x, cols, row_begin, row_end, scratch);
}

Activations BindActivations(TensorType w, const float* x, int64_t rows, int64_t cols,
                            const uint8_t* scratch) {
  return Activations{
      .f32 = x, .q8 = IsQuantized(w) ? scratch : nullptr, .rows = rows, .cols = cols};
}

}  // namespace tokenmill::devices::cpu
