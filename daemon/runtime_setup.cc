#include "daemon/runtime_setup.h"

#include <algorithm>
#include <set>
#include <string>

#include "daemon/tenants_api.h"
#include "spdlog/spdlog.h"

namespace tokenmill::daemon {
namespace {

constexpr char kTenantPrefix[] = "tenant/";

}  // namespace

tenants::TenantPolicy TenantPolicyFromConfig(const config::TenantConfig& t) {
  tenants::TenantPolicy p;
  p.name = t.name;
  p.api_keys_sha256 = t.api_keys_sha256;
  p.weight = t.weight;
  p.kv_reserved_blocks = t.kv_reserved_blocks;
  p.kv_max_fraction = t.kv_max_fraction;
  p.rate_limit_tokens_per_s = t.rate_limit_tokens_per_s;
  p.schema_compile_s_per_min = t.schema_compile_s_per_min;
  p.max_concurrent = t.max_concurrent;
  p.max_queue = t.max_queue;
  p.cache_group = t.cache_group;
  p.models = t.models;
  p.price_input_per_mtok = t.price_input_per_mtok;
  p.price_output_per_mtok = t.price_output_per_mtok;
  p.source = tenants::TenantSource::kConfig;
  return p;
}

runtime::ModelLoadSpec ModelSpecFromConfig(const config::ModelConfig& m) {
  runtime::ModelLoadSpec spec;
  spec.id = m.id;
  spec.path = m.path;
  spec.device = m.device;
  spec.max_seqs = m.max_seqs;
  spec.max_batch_tokens = m.max_batch_tokens;
  spec.context = m.context;
  spec.source = runtime::ModelSource::kConfig;
  return spec;
}

runtime::InstanceManagerOptions InstanceManagerOptionsFrom(
    const config::NodeConfig& config, const std::vector<devices::Device*>& devices,
    const telemetry::DeviceSampler* sampler) {
  runtime::InstanceManagerOptions o;
  o.block_tokens = static_cast<int32_t>(config.scheduler.block_tokens);
  o.default_max_seqs = config.scheduler.max_seqs;
  o.default_max_batch_tokens = config.scheduler.max_batch_tokens;
  o.vtc_input_weight = config.scheduler.vtc_input_weight;
  o.vtc_output_weight = config.scheduler.vtc_output_weight;
  if (const config::DeviceConfig* cpu = config::FindDeviceConfig(config, "cpu")) {
    o.cpu_threads = static_cast<int32_t>(cpu->threads);
  }
  std::vector<std::string> ids;
  for (const devices::Device* d : devices) ids.push_back(d->Info().id);
  o.latest_sample = [sampler, ids](const std::string& id) -> std::optional<devices::DeviceSample> {
    if (sampler == nullptr) return std::nullopt;
    const auto samples = sampler->Latest();
    for (size_t i = 0; i < ids.size() && i < samples.size(); ++i) {
      if (ids[i] == id) return samples[i];
    }
    return std::nullopt;
  };
  o.kv_memory = [config](const devices::Device& device) {
    const config::DeviceConfig* d = config::FindDeviceConfig(config, device.Info().id);
    const config::MemoryAmount amount = d ? d->kv_memory : config::MemoryAmount{};
    devices::KvArenaBudget budget;
    budget.bytes = amount.bytes;
    budget.fraction = amount.fraction;
    return budget;
  };
  return o;
}

metering::CostInputs CostInputsFrom(const config::NodeConfig& config,
                                    const std::vector<devices::Device*>& devices) {
  metering::CostInputs in;
  in.currency = config.cost.currency;
  in.capex = config.cost.capex;
  in.depreciation_years = config.cost.depreciation_years;
  in.power_usd_per_kwh = config.cost.power_usd_per_kwh;
  in.pue = config.cost.pue;
  in.network_usd_per_hour = config.cost.network_usd_per_hour;
  in.debt_service_usd_per_hour = config.cost.debt_service_usd_per_hour;
  in.other_usd_per_hour = config.cost.other_usd_per_hour;
  in.prefill_token_weight = config.cost.prefill_token_weight;
  for (const devices::Device* d : devices) {
    metering::CostInputs::Device device;
    device.id = d->Info().id;
    if (const config::DeviceConfig* c = config::FindDeviceConfig(config, device.id)) {
      device.cost_weight = c->cost_weight;
      device.watts = c->watts;
    }
    in.devices.push_back(std::move(device));
  }
  return in;
}

std::map<std::string, metering::Prices> ModelPricesFrom(const config::NodeConfig& config) {
  std::map<std::string, metering::Prices> prices;
  for (const auto& m : config.models) {
    prices[m.id] = metering::Prices{m.price_input_per_mtok, m.price_output_per_mtok};
  }
  return prices;
}

std::map<std::string, metering::Prices> TenantPricesFrom(
    const std::vector<tenants::TenantPolicy>& tenants) {
  std::map<std::string, metering::Prices> prices;
  for (const tenants::TenantPolicy& t : tenants) {
    prices[t.name] = metering::Prices{t.price_input_per_mtok, t.price_output_per_mtok};
  }
  return prices;
}

absl::Status RestoreTenants(const config::NodeConfig& config, storage::MeterStore& store,
                            tenants::TenantRegistry& registry) {
  std::vector<tenants::TenantPolicy> from_config;
  std::set<std::string> names;
  for (const auto& t : config.tenants) {
    from_config.push_back(TenantPolicyFromConfig(t));
    names.insert(t.name);
  }
  if (absl::Status s = registry.ReplaceConfigTenants(std::move(from_config)); !s.ok()) return s;
  auto stored = store.ListState(kTenantPrefix);
  if (!stored.ok()) return stored.status();
  for (const auto& [key, value] : *stored) {
    const std::string name = key.substr(sizeof(kTenantPrefix) - 1);
    if (names.contains(name)) {
      spdlog::warn("api_tenant_shadowed tenant={} reason=\"the config defines it now\"", name);
      (void)store.DeleteState(key);
      continue;
    }
    auto policy = ParseTenantBody(name, value);
    absl::Status s = policy.ok() ? registry.Put(*policy) : policy.status();
    if (!s.ok()) {
      spdlog::error("api_tenant_not_restored tenant={} error=\"{}\"", name, s.ToString());
    }
  }
  return absl::OkStatus();
}

}  // namespace tokenmill::daemon
