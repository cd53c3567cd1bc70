#include "devices/backend.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace tokenmill::devices {

std::string_view KindOfDeviceId(std::string_view id) {
  const size_t colon = id.find(':');
  return colon == std::string_view::npos ? id : id.substr(0, colon);
}

std::string_view BackendKindOf(const DeviceInfo& info) {
  return info.kind == DeviceKind::kPlugin ? KindOfDeviceId(info.id) : DeviceKindName(info.kind);
}

absl::Status BackendRegistry::Add(DeviceBackendPtr backend) {
  if (backend == nullptr) return absl::InvalidArgumentError("no backend");
  if (ForKind(backend->kind()) != nullptr) {
    return absl::AlreadyExistsError(
        absl::StrCat("a backend for device kind \"", backend->kind(), "\" is already registered"));
  }
  backends_.push_back(std::move(backend));
  return absl::OkStatus();
}

absl::StatusOr<Discovery> BackendRegistry::DiscoverAll(const DiscoveryOptions& options) const {
  Discovery found;
  for (const DeviceBackendPtr& backend : backends_) {
    if (absl::Status s = backend->Discover(options, found); !s.ok()) return s;
  }
  return found;
}

DeviceBackend* BackendRegistry::ForKind(std::string_view kind) const {
  for (const DeviceBackendPtr& backend : backends_) {
    if (backend->kind() == kind) return backend.get();
  }
  return nullptr;
}

DeviceBackend* BackendRegistry::For(const Device& device) const {
  return ForKind(BackendKindOf(device.Info()));
}

bool BackendRegistry::RunsModels(const Device& device) const {
  DeviceBackend* backend = For(device);
  return backend != nullptr && backend->RunsModels(device);
}

absl::StatusOr<KvArenaPtr> BackendRegistry::CreateKvArena(const Device& device,
                                                          KvArenaBudget budget,
                                                          size_t page_bytes) const {
  DeviceBackend* backend = For(device);
  if (backend == nullptr || !backend->RunsModels(device)) {
    return absl::UnimplementedError(
        absl::StrCat("no backend runs models on device ", device.Info().id));
  }
  return backend->CreateKvArena(device, budget, page_bytes);
}

absl::StatusOr<ExecutorPtr> BackendRegistry::CreateExecutor(const Device& device,
                                                            const ModelSpec& spec,
                                                            const ExecutorOptions& options) const {
  DeviceBackend* backend = For(device);
  if (backend == nullptr || !backend->RunsModels(device)) {
    return absl::UnimplementedError(
        absl::StrCat("no backend runs models on device ", device.Info().id));
  }
  return backend->CreateExecutor(device, spec, options);
}

nlohmann::json BackendRegistry::DetailsJson(const Device& device) const {
  DeviceBackend* backend = For(device);
  return backend != nullptr ? backend->DetailsJson(device) : nlohmann::json(nullptr);
}

std::vector<std::string> BackendRegistry::kinds() const {
  std::vector<std::string> out;
  for (const DeviceBackendPtr& backend : backends_) out.push_back(backend->kind());
  return out;
}

}  // namespace tokenmill::devices
