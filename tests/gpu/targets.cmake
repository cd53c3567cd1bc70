# The GPU tests (tokenmill_gpu_tests) and benchmark (tokenmill_gpu_bench),
# shared by the standalone project (tests/gpu/CMakeLists.txt) and the main
# build (tests/CMakeLists.txt when TOKENMILL_HAVE_CUDA). Expects the target
# tokenmill_cuda_core. The naive reference comes from the main build's
# tokenmill_reference (with Abseil there, through tokenmill_devices) or, in
# the standalone project, from a plain library of the same two files.
set(TOKENMILL_GPU_TESTS_DIR ${CMAKE_CURRENT_LIST_DIR})
get_filename_component(TOKENMILL_GPU_ROOT ${CMAKE_CURRENT_LIST_DIR}/../.. ABSOLUTE)

if(NOT TARGET tokenmill_reference)
  add_library(tokenmill_gpu_reference STATIC
    ${TOKENMILL_GPU_ROOT}/tests/reference/naive_ops.cc
    ${TOKENMILL_GPU_ROOT}/tests/reference/reference_model.cc)
  target_include_directories(tokenmill_gpu_reference PUBLIC ${TOKENMILL_GPU_ROOT})
  target_link_libraries(tokenmill_gpu_reference PUBLIC tokenmill_model_spec)
  target_compile_options(tokenmill_gpu_reference PRIVATE -Wall -Wextra)
  set(TOKENMILL_GPU_REFERENCE_LIBS tokenmill_gpu_reference)
else()
  set(TOKENMILL_GPU_REFERENCE_LIBS tokenmill_reference tokenmill_reference_ops)
endif()

# Helpers of both executables: device buffers, host matrices, synthetic
# models, the GPU probe.
add_library(tokenmill_gpu_test_util STATIC
  ${TOKENMILL_GPU_TESTS_DIR}/test_util.cc
  ${TOKENMILL_GPU_TESTS_DIR}/synth_spec.cc)
target_include_directories(tokenmill_gpu_test_util PUBLIC ${TOKENMILL_GPU_ROOT})
target_link_libraries(tokenmill_gpu_test_util PUBLIC
  tokenmill_cuda_core ${TOKENMILL_GPU_REFERENCE_LIBS} CUDA::cudart_static)
target_compile_options(tokenmill_gpu_test_util PRIVATE -Wall -Wextra)

add_executable(tokenmill_gpu_tests
  ${TOKENMILL_GPU_TESTS_DIR}/gpu_test.cc
  ${TOKENMILL_GPU_TESTS_DIR}/kernel_test.cc
  ${TOKENMILL_GPU_TESTS_DIR}/layer_kernel_test.cc
  ${TOKENMILL_GPU_TESTS_DIR}/engine_scenario.cc
  ${TOKENMILL_GPU_TESTS_DIR}/engine_test.cc)
target_link_libraries(tokenmill_gpu_tests PRIVATE tokenmill_gpu_test_util)
target_compile_options(tokenmill_gpu_tests PRIVATE -Wall -Wextra)

# Benchmarks live under tests/bench (the repository rule); this one shares
# the GPU helpers.
add_executable(tokenmill_gpu_bench ${TOKENMILL_GPU_ROOT}/tests/bench/gpu_bench.cc)
target_link_libraries(tokenmill_gpu_bench PRIVATE tokenmill_gpu_test_util)
target_compile_options(tokenmill_gpu_bench PRIVATE -Wall -Wextra)

# Exit 77 (no CUDA GPU) is a skip.
add_test(NAME gpu_tests COMMAND tokenmill_gpu_tests)
set_tests_properties(gpu_tests PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 600)
