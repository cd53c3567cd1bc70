# CPU kernels (devices/cpu/kernels.h). Included from devices/CMakeLists.txt.
# The AVX2 and AVX-512 files select their target per function (pragmas), so
# the library builds for baseline x86-64 and dispatches at run time.
add_library(tokenmill_cpu_kernels
  cpu/kernels.cc
  cpu/kernels_quantize.cc
  cpu/kernels_scalar.cc
  cpu/kernels_avx2.cc
  cpu/kernels_avx2_kquant_batch.cc
  cpu/kernels_avx512.cc
  cpu/kernels_avx512_quant.cc
  cpu/kernels_avx512_q8_batch.cc
  cpu/kernels_avx512_kquant_batch.cc
  cpu/kernels_kquant.cc
  cpu/memory_bandwidth.cc)
target_link_libraries(tokenmill_cpu_kernels PUBLIC tokenmill_devices Threads::Threads)
# Complete unrolling and vectorization of the tile loops want -O3 outside Debug.
set_source_files_properties(cpu/kernels_scalar.cc cpu/kernels_avx2.cc
  cpu/kernels_avx2_kquant_batch.cc cpu/kernels_avx512.cc
  cpu/kernels_avx512_quant.cc cpu/kernels_avx512_q8_batch.cc cpu/kernels_avx512_kquant_batch.cc
  cpu/kernels_kquant.cc PROPERTIES COMPILE_OPTIONS "$<$<NOT:$<CONFIG:Debug>>:-O3>")
