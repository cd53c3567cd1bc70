#include "runtime/node/device_backends.h"

#include "absl/strings/str_cat.h"
#include "devices/cpu/cpu_executor.h"
#ifdef TOKENMILL_HAVE_CUDA
#include "devices/cuda/cuda_executor.h"
#endif

namespace tokenmill::runtime {

bool DeviceRunsModels(const devices::Device& device) {
  switch (device.Info().kind) {
    case devices::DeviceKind::kCpu:
      return true;
#ifdef TOKENMILL_HAVE_CUDA
    case devices::DeviceKind::kCuda:
      return device.Info().cuda.has_value();
#endif
    default:
      return false;
  }
}

absl::StatusOr<devices::KvArenaPtr> CreateKvArenaFor(const devices::Device& device,
                                                     devices::KvArenaBudget budget,
                                                     size_t page_bytes) {
  const devices::DeviceInfo info = device.Info();
  if (info.kind == devices::DeviceKind::kCpu) return devices::CreateHostKvArena(budget, page_bytes);
#ifdef TOKENMILL_HAVE_CUDA
  if (info.kind == devices::DeviceKind::kCuda && info.cuda) {
    return devices::cuda::CreateCudaKvArena(info.cuda->ordinal, budget, page_bytes);
  }
#endif
  return absl::UnimplementedError(absl::StrCat("this build has no executor for device ", info.id));
}

absl::StatusOr<devices::ExecutorPtr> CreateExecutorFor(const devices::Device& device,
                                                       const devices::ModelSpec& spec,
                                                       const devices::ExecutorOptions& options) {
  const devices::DeviceInfo info = device.Info();
  if (info.kind == devices::DeviceKind::kCpu) return devices::cpu::CreateCpuExecutor(spec, options);
#ifdef TOKENMILL_HAVE_CUDA
  if (info.kind == devices::DeviceKind::kCuda && info.cuda) {
    return devices::cuda::CreateCudaExecutor(spec, options, info.cuda->ordinal);
  }
#endif
  return absl::UnimplementedError(absl::StrCat("this build has no executor for device ", info.id));
}

}  // namespace tokenmill::runtime
