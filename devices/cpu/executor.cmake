# CPU executor (devices/cpu/cpu_executor.h). Included from devices/CMakeLists.txt.
add_library(tokenmill_cpu_executor cpu/executor_placeholder.cc)
target_link_libraries(tokenmill_cpu_executor PUBLIC tokenmill_devices tokenmill_cpu_kernels
  absl::status absl::statusor Threads::Threads)
