#include "devices/backend.h"

#include <algorithm>
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

absl::Status CheckCapabilities(const std::string& device_id, const DeviceCapabilities& caps,
                               const ModelSpec& spec, const ExecutorOptions& options) {
  auto claims = [](const auto& list, auto value) {
    return std::find(list.begin(), list.end(), value) != list.end();
  };
  if (!claims(caps.architectures, spec.arch)) {
    return absl::UnimplementedError(absl::StrCat(
        "device ", device_id, " does not run architecture ", ArchitectureName(spec.arch)));
  }
  if (!claims(caps.kv_types, options.kv_type)) {
    return absl::UnimplementedError(absl::StrCat("device ", device_id, " does not run KV type ",
                                                 options.kv_type == KvType::kF16 ? "f16" : "f32"));
  }
  if (options.block_tokens < 1 ||
      (caps.max_block_tokens != 0 && options.block_tokens > caps.max_block_tokens)) {
    return absl::UnimplementedError(absl::StrCat(
        "device ", device_id, " does not run KV blocks of ", options.block_tokens, " tokens"));
  }
  auto check_type = [&](const TensorView& t) -> absl::Status {
    if (t.empty() || claims(caps.weight_types, t.type)) return absl::OkStatus();
    return absl::UnimplementedError(absl::StrCat("device ", device_id, " does not run weight type ",
                                                 TensorTypeName(t.type), " (", t.name, ")"));
  };
  for (const TensorView* t : {&spec.token_embedding, &spec.output}) {
    if (absl::Status s = check_type(*t); !s.ok()) return s;
  }
  for (const LayerWeights& w : spec.layers) {
    for (const TensorView* t : {&w.wq, &w.wk, &w.wv, &w.wo, &w.w_gate, &w.w_up, &w.w_down,
                                &w.router, &w.gate_exps, &w.up_exps, &w.down_exps}) {
      if (absl::Status s = check_type(*t); !s.ok()) return s;
    }
  }
  return absl::OkStatus();
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
  if (absl::Status s =
          CheckCapabilities(device.Info().id, backend->Capabilities(device), spec, options);
      !s.ok()) {
    return s;
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
