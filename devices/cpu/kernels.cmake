# CPU kernels (devices/cpu/kernels.h). Included from devices/CMakeLists.txt.
add_library(tokenmill_cpu_kernels cpu/kernels_placeholder.cc)
target_link_libraries(tokenmill_cpu_kernels PUBLIC tokenmill_devices)
