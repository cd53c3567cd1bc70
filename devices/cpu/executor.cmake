# CPU executor (devices/cpu/cpu_executor.h). Included from devices/CMakeLists.txt.
add_library(tokenmill_cpu_executor
  cpu/cpu_executor.cc
  cpu/executor_attention.cc
  cpu/executor_plan.cc
  cpu/executor_spec_check.cc
  cpu/worker_pool.cc)
target_link_libraries(tokenmill_cpu_executor PUBLIC tokenmill_devices tokenmill_cpu_kernels
  absl::status absl::statusor absl::strings Threads::Threads)
