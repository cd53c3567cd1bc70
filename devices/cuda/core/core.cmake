# The CUDA core (devices/cuda/core): kernels and the Engine, plain C++ and
# CUDA with no Abseil, so that tests/gpu/CMakeLists.txt can build it on a
# machine with only the CUDA toolkit, CMake and a compiler. Included from
# devices/CMakeLists.txt and tests/gpu/CMakeLists.txt; expects TOKENMILL_ROOT
# (the repository root) and a target tokenmill_model_spec.
set(TOKENMILL_CUDA_CORE_DIR ${TOKENMILL_ROOT}/devices/cuda/core)
add_library(tokenmill_cuda_core STATIC
  ${TOKENMILL_CUDA_CORE_DIR}/status.cc
  ${TOKENMILL_CUDA_CORE_DIR}/cuda_call.cc
  ${TOKENMILL_CUDA_CORE_DIR}/cublas_library.cc
  ${TOKENMILL_CUDA_CORE_DIR}/matmul.cu
  ${TOKENMILL_CUDA_CORE_DIR}/matmul_runner.cc
  ${TOKENMILL_CUDA_CORE_DIR}/layer_kernels.cu
  ${TOKENMILL_CUDA_CORE_DIR}/paged_attention.cu
  ${TOKENMILL_CUDA_CORE_DIR}/engine.cc
  ${TOKENMILL_CUDA_CORE_DIR}/engine_weights.cc)
target_include_directories(tokenmill_cuda_core PUBLIC ${TOKENMILL_ROOT})
# cuBLAS is loaded at run time (cublas_library.h says why): headers only here.
# The CUDA runtime is linked statically, so that no binary lists libcudart in
# its NEEDED entries: the .deb cannot depend on it, and a node without CUDA
# must start the daemon. cudart_static finds the driver (libcuda.so.1) with
# dlopen at the first CUDA call and reports no GPU where there is none.
target_link_libraries(tokenmill_cuda_core PUBLIC tokenmill_model_spec CUDA::cudart_static
  ${CMAKE_DL_LIBS})
# Where cuBLAS is looked for when the loader's path has none: this toolkit.
set_source_files_properties(${TOKENMILL_CUDA_CORE_DIR}/cublas_library.cc PROPERTIES
  COMPILE_DEFINITIONS "TOKENMILL_CUDA_LIBRARY_DIR=\"${CUDAToolkit_LIBRARY_DIR}\"")
target_include_directories(tokenmill_cuda_core PUBLIC ${CUDAToolkit_INCLUDE_DIRS})
set_target_properties(tokenmill_cuda_core PROPERTIES
  CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON POSITION_INDEPENDENT_CODE ON)
target_compile_options(tokenmill_cuda_core PRIVATE
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra>
  $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra --Werror=all-warnings>)
