// Run-time dispatch of the CPU kernels: probes the CPU once, caps the ISA with
// TOKENMILL_CPU_ISA, and routes each kernel to its scalar, AVX2 or AVX-512
// body. Also the kernels that need no SIMD (RoPE, its frequencies).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <numbers>
#include <string_view>

#include "devices/cpu/kernels.h"
#include "devices/cpu/kernels_internal.h"

#if defined(TOKENMILL_KERNELS_X86)
#include <cpuid.h>
#endif

namespace tokenmill::devices::cpu {
namespace internal {
namespace {

#if defined(TOKENMILL_KERNELS_X86)
// XCR0: which register states the OS saves on context switch.
uint64_t ReadXcr0() {
  uint32_t eax = 0, edx = 0;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<uint64_t>(edx) << 32) | eax;
}
#endif

CpuFeatures ProbeCpuFeatures() {
  CpuFeatures f;
#if defined(TOKENMILL_KERNELS_X86)
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid_count(1, 0, &a, &b, &c, &d)) return f;
  const bool fma = c & (1u << 12), osxsave = c & (1u << 27), avx = c & (1u << 28),
             f16c = c & (1u << 29);
  if (!osxsave || !avx) return f;
  const uint64_t xcr0 = ReadXcr0();
  const bool ymm_state = (xcr0 & 0x6) == 0x6;
  const bool zmm_state = (xcr0 & 0xe6) == 0xe6;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return f;
  const bool avx2 = b & (1u << 5), avx512f = b & (1u << 16), avx512bw = b & (1u << 30),
             avx512vl = b & (1u << 31), avx512vnni = c & (1u << 11);
  f.avx2 = ymm_state && avx2 && fma && f16c;
  f.avx512 = f.avx2 && zmm_state && avx512f && avx512bw && avx512vl;
  f.avx512_vnni = f.avx512 && avx512vnni;
#endif
  return f;
}

}  // namespace

const CpuFeatures& HostCpuFeatures() {
  static const CpuFeatures features = ProbeCpuFeatures();
  return features;
}

bool KQuantBatchEnabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("TOKENMILL_CPU_KQUANT_BATCH");
    return v == nullptr || std::string_view(v) != "off";
  }();
  return enabled;
}

}  // namespace internal

namespace {

Isa HardwareIsa() {
  const internal::CpuFeatures& f = internal::HostCpuFeatures();
  return f.avx512 ? Isa::kAvx512 : f.avx2 ? Isa::kAvx2 : Isa::kScalar;
}

// The ISA a kernel call runs with: the caller's choice, never above what the
// CPU has (so a wrong argument cannot fault with an illegal instruction).
Isa Usable(Isa isa) { return std::min(isa, HardwareIsa()); }

}  // namespace

Isa DetectIsa() {
  const Isa hw = HardwareIsa();
  const char* cap = std::getenv("TOKENMILL_CPU_ISA");
  if (cap == nullptr) return hw;
  const std::string_view want(cap);
  if (want == "scalar") return Isa::kScalar;
  if (want == "avx2") return std::min(hw, Isa::kAvx2);
  return hw;  // "avx512" or anything unknown: no cap
}

const char* IsaName(Isa isa) {
  switch (isa) {
    case Isa::kScalar:
      return "scalar";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kAvx512:
      return "avx512";
  }
  return "unknown";
}

#if defined(TOKENMILL_KERNELS_X86)
#define TOKENMILL_DISPATCH(isa, fn, ...)        \
  switch (Usable(isa)) {                        \
    case Isa::kAvx512:                          \
      return internal::avx512::fn(__VA_ARGS__); \
    case Isa::kAvx2:                            \
      return internal::avx2::fn(__VA_ARGS__);   \
    case Isa::kScalar:                          \
      break;                                    \
  }                                             \
  return internal::scalar::fn(__VA_ARGS__)
#else
#define TOKENMILL_DISPATCH(isa, fn, ...) return internal::scalar::fn(__VA_ARGS__)
#endif

void MatMulRows(Isa isa, const TensorView& w, int64_t row_begin, int64_t row_end,
                const Activations& x, float* y, int64_t y_stride) {
  if (row_begin >= row_end || x.rows <= 0) return;
  if (internal::IsKQuant(w.type)) {
#if defined(TOKENMILL_KERNELS_X86)
    if (Usable(isa) == Isa::kAvx512 && internal::HostCpuFeatures().avx512_vnni) {
      return internal::avx512::MatMulKQuantVnni(w, row_begin, row_end, x, y, y_stride);
    }
    // AVX-512 without VNNI takes the AVX2 body.
    if (Usable(isa) != Isa::kScalar) {
      return internal::avx2::MatMulKQuant(w, row_begin, row_end, x, y, y_stride);
    }
#endif
    return internal::scalar::MatMulKQuant(w, row_begin, row_end, x, y, y_stride);
  }
#if defined(TOKENMILL_KERNELS_X86)
  const bool quantized = w.type == TensorType::kQ8_0 || w.type == TensorType::kQ4_0;
  if (quantized && Usable(isa) == Isa::kAvx512 && internal::HostCpuFeatures().avx512_vnni) {
    return internal::avx512::MatMulRowsVnni(w, row_begin, row_end, x, y, y_stride);
  }
#endif
  TOKENMILL_DISPATCH(isa, MatMulRows, w, row_begin, row_end, x, y, y_stride);
}

void RmsNorm(Isa isa, const float* x, const float* weight, int64_t n, float eps, float* out) {
  TOKENMILL_DISPATCH(isa, RmsNorm, x, weight, n, eps, out);
}

void SiluMul(Isa isa, float* gate, const float* up, int64_t n) {
  TOKENMILL_DISPATCH(isa, SiluMul, gate, up, n);
}

void Add(Isa isa, float* y, const float* x, int64_t n) { TOKENMILL_DISPATCH(isa, Add, y, x, n); }

float DotF32(Isa isa, const float* a, const float* b, int64_t n) {
  TOKENMILL_DISPATCH(isa, DotF32, a, b, n);
}

float DotF16(Isa isa, const uint16_t* a, const float* b, int64_t n) {
  TOKENMILL_DISPATCH(isa, DotF16, a, b, n);
}

void AxpyF32(Isa isa, float a, const float* x, float* y, int64_t n) {
  TOKENMILL_DISPATCH(isa, AxpyF32, a, x, y, n);
}

void AxpyF16(Isa isa, float a, const uint16_t* x, float* y, int64_t n) {
  TOKENMILL_DISPATCH(isa, AxpyF16, a, x, y, n);
}

void StoreF16(Isa isa, const float* x, uint16_t* out, int64_t n) {
  TOKENMILL_DISPATCH(isa, StoreF16, x, out, n);
}

#undef TOKENMILL_DISPATCH

void Rope(float* x, int32_t heads, int32_t head_dim, int32_t pos, const float* inv_freq,
          RopeStyle style) {
  const int32_t half = head_dim / 2;
  // Pair (a, b) of pair index i: adjacent (2i, 2i+1) or halves (i, i+half).
  const int32_t a_step = style == RopeStyle::kAdjacentPairs ? 2 : 1;
  const int32_t b_offset = style == RopeStyle::kAdjacentPairs ? 1 : half;
  for (int32_t i = 0; i < half; ++i) {
    // The angle in f64: pos * inv_freq reaches thousands of radians, where an
    // f32 product would lose the phase.
    const double angle = static_cast<double>(pos) * inv_freq[i];
    const float c = static_cast<float>(std::cos(angle)), s = static_cast<float>(std::sin(angle));
    const int32_t a = i * a_step;
    for (int32_t h = 0; h < heads; ++h) {
      float* head = x + static_cast<int64_t>(h) * head_dim;
      const float x0 = head[a], x1 = head[a + b_offset];
      head[a] = x0 * c - x1 * s;
      head[a + b_offset] = x0 * s + x1 * c;
    }
  }
}

}  // namespace tokenmill::devices::cpu
