#include "runtime/node/device_backends.h"

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "devices/cpu/cpu_device.h"
#include "devices/cpu/cpu_executor.h"
#include "devices/cuda/cuda_device.h"
#ifdef TOKENMILL_HAVE_CUDA
#include "devices/cuda/cuda_executor.h"
#endif

namespace tokenmill::runtime {
namespace {

class CpuBackend : public devices::DeviceBackend {
 public:
  const std::string& kind() const override { return kind_; }

  absl::Status Discover(const devices::DiscoveryOptions& options,
                        devices::Discovery& found) override {
    devices::DiscoveryOptions cpu_options = options;
    if (options.watts_for) {
      if (std::optional<double> w = options.watts_for("cpu")) cpu_options.cpu_watts = w;
    }
    auto cpu = devices::CpuDevice::Create(cpu_options);
    if (!cpu.ok()) return cpu.status();
    found.devices.push_back(std::move(*cpu));
    return absl::OkStatus();
  }

  bool RunsModels(const devices::Device&) const override { return true; }

  devices::DeviceCapabilities Capabilities(const devices::Device&) const override {
    using devices::TensorType;
    return {.architectures = {devices::Architecture::kLlama, devices::Architecture::kQwen2,
                              devices::Architecture::kQwen3, devices::Architecture::kGemma3,
                              devices::Architecture::kQwen3Moe},
            .weight_types = {TensorType::kF32, TensorType::kF16, TensorType::kBF16,
                             TensorType::kQ8_0, TensorType::kQ4_0, TensorType::kQ4_K,
                             TensorType::kQ5_K, TensorType::kQ6_K},
            .kv_types = {devices::KvType::kF16, devices::KvType::kF32}};
  }

  absl::StatusOr<devices::KvArenaPtr> CreateKvArena(const devices::Device&,
                                                    devices::KvArenaBudget budget,
                                                    size_t page_bytes) override {
    return devices::CreateHostKvArena(budget, page_bytes);
  }

  absl::StatusOr<devices::ExecutorPtr> CreateExecutor(
      const devices::Device&, const devices::ModelSpec& spec,
      const devices::ExecutorOptions& options) override {
    return devices::cpu::CreateCpuExecutor(spec, options);
  }

  nlohmann::json DetailsJson(const devices::Device& device) const override {
    const auto& info = device.Info();
    if (!info.cpu) return nullptr;
    const auto& c = *info.cpu;
    return {{"vendor", c.vendor},
            {"model", c.model_name},
            {"sockets", c.sockets},
            {"physical_cores", c.physical_cores},
            {"logical_cpus", c.logical_cpus},
            {"numa_nodes", c.numa_nodes},
            {"simd", c.simd},
            {"power_source", c.power_source}};
  }

 private:
  std::string kind_ = "cpu";
};

class CudaBackend : public devices::DeviceBackend {
 public:
  const std::string& kind() const override { return kind_; }

  absl::Status Discover(const devices::DiscoveryOptions& options,
                        devices::Discovery& found) override {
    if (!options.cuda) return absl::OkStatus();
    devices::cuda::CudaDiscovery gpus = devices::cuda::DiscoverCudaDevices(options);
    for (devices::DevicePtr& gpu : gpus.devices) found.devices.push_back(std::move(gpu));
    found.cuda_unavailable_reason = std::move(gpus.unavailable_reason);
    found.nvml_unavailable_reason = std::move(gpus.nvml_unavailable_reason);
    return absl::OkStatus();
  }

  bool RunsModels(const devices::Device& device) const override {
#ifdef TOKENMILL_HAVE_CUDA
    return device.Info().cuda.has_value();
#else
    (void)device;
    return false;
#endif
  }

  devices::DeviceCapabilities Capabilities(const devices::Device&) const override {
    using devices::TensorType;
    return {
        .architectures = {devices::Architecture::kLlama, devices::Architecture::kQwen2},
        .weight_types = {TensorType::kF32, TensorType::kF16, TensorType::kBF16, TensorType::kQ8_0},
        .kv_types = {devices::KvType::kF16, devices::KvType::kF32}};
  }

  absl::StatusOr<devices::KvArenaPtr> CreateKvArena(const devices::Device& device,
                                                    devices::KvArenaBudget budget,
                                                    size_t page_bytes) override {
#ifdef TOKENMILL_HAVE_CUDA
    if (device.Info().cuda) {
      return devices::cuda::CreateCudaKvArena(device.Info().cuda->ordinal, budget, page_bytes);
    }
#else
    (void)budget;
    (void)page_bytes;
#endif
    return NoExecutor(device);
  }

  absl::StatusOr<devices::ExecutorPtr> CreateExecutor(
      const devices::Device& device, const devices::ModelSpec& spec,
      const devices::ExecutorOptions& options) override {
#ifdef TOKENMILL_HAVE_CUDA
    if (device.Info().cuda) {
      return devices::cuda::CreateCudaExecutor(spec, options, device.Info().cuda->ordinal);
    }
#else
    (void)spec;
    (void)options;
#endif
    return NoExecutor(device);
  }

  nlohmann::json DetailsJson(const devices::Device& device) const override {
    const auto& info = device.Info();
    if (!info.cuda) return nullptr;
    const auto& g = *info.cuda;
    return {{"ordinal", g.ordinal},
            {"compute_capability", absl::StrCat(g.compute_major, ".", g.compute_minor)},
            {"multiprocessors", g.multiprocessors},
            {"pci_bus_id", g.pci_bus_id},
            {"uuid", g.uuid},
            {"driver_version", g.driver_version},
            {"nvml", g.nvml}};
  }

 private:
  static absl::Status NoExecutor(const devices::Device& device) {
    return absl::UnimplementedError(
        absl::StrCat("this build has no executor for device ", device.Info().id));
  }
  std::string kind_ = "cuda";
};

}  // namespace

devices::DeviceBackendPtr MakeCpuBackend() { return std::make_unique<CpuBackend>(); }
devices::DeviceBackendPtr MakeCudaBackend() { return std::make_unique<CudaBackend>(); }

absl::Status AddBuiltinBackends(devices::BackendRegistry& registry) {
  if (absl::Status s = registry.Add(MakeCpuBackend()); !s.ok()) return s;
  return registry.Add(MakeCudaBackend());
}

}  // namespace tokenmill::runtime
