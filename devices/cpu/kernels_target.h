// What every ISA kernel file starts and ends with: the x86 intrinsics
// header, and a region whose functions are compiled for one target ISA (the
// dispatcher calls them only on CPUs that have it), for GCC and clang.
//
//   #include "devices/cpu/kernels_target.h"
//   #if defined(TOKENMILL_KERNELS_X86)
//   TOKENMILL_KERNELS_TARGET_BEGIN(TOKENMILL_ISA_AVX2)
//   ... kernels ...
//   TOKENMILL_KERNELS_TARGET_END
//   #endif
//
// Begin after every include, so that no header's inline functions are
// compiled for the target.
#pragma once

#include "devices/cpu/kernels_internal.h"

#if defined(TOKENMILL_KERNELS_X86)
// GCC 12 flags the _mm512_undefined_* inside many AVX-512 intrinsics as
// uninitialized once inlined at -O3 (GCC bug 105593, fixed in 13); the
// warnings point into the header, so silencing them there hides nothing of
// ours.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#if !defined(__clang__)  // a GCC-only warning group
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#pragma GCC diagnostic pop

namespace tokenmill::devices::cpu::internal {

// Software prefetch of weights a kernel reads soon (the next tile): into L2,
// not L1. Measured on the 1B shape, 2 threads, Zen 4, with L1 hints:
// batch-1 decode Q8_0 19.1-20.4 tok/s, F16 8.7-9.1, batch 8 Q8_0 89-108;
// with L2 hints 20.5-22.1, 11.6-14.6, 119-133 (batch 16 unchanged). L1 hints
// fill the few L1 miss buffers and evict what the kernel is reading; L2 keeps
// more lines in flight.
inline void PrefetchWeights(const char* p) { _mm_prefetch(p, _MM_HINT_T1); }

}  // namespace tokenmill::devices::cpu::internal

// The target ISAs, as target attributes spell them.
#define TOKENMILL_ISA_AVX2 "avx2,fma,f16c"
#define TOKENMILL_ISA_AVX512 "avx512f,avx512bw,avx512vl,avx2,fma,f16c"
#define TOKENMILL_ISA_AVX512_VNNI "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c"

#define TOKENMILL_KERNELS_PRAGMA(text) _Pragma(#text)
#if defined(__clang__)
#define TOKENMILL_KERNELS_TARGET_BEGIN(isa) \
  TOKENMILL_KERNELS_PRAGMA(clang attribute push(__attribute__((target(isa))), apply_to = function))
#define TOKENMILL_KERNELS_TARGET_END TOKENMILL_KERNELS_PRAGMA(clang attribute pop)
#else
#define TOKENMILL_KERNELS_TARGET_BEGIN(isa) \
  TOKENMILL_KERNELS_PRAGMA(GCC push_options) TOKENMILL_KERNELS_PRAGMA(GCC target(isa))
#define TOKENMILL_KERNELS_TARGET_END TOKENMILL_KERNELS_PRAGMA(GCC pop_options)
#endif
#endif  // TOKENMILL_KERNELS_X86
