// The runtime's side of the composition root: config sections mapped into
// runtime settings, and the tenants a node starts with (the config's, plus
// those the control API created earlier, from the store; models: ModelsApi::Restore).
#pragma once

#include <vector>

#include "absl/status/status.h"
#include "config/node_config.h"
#include "metering/cost_model.h"
#include "metering/metering.h"
#include "runtime/node/instance_manager.h"
#include "runtime/tenants/tenant_registry.h"
#include "storage/meter_store.h"
#include "telemetry/metrics.h"

namespace tokenmill::daemon {

tenants::TenantPolicy TenantPolicyFromConfig(const config::TenantConfig& tenant);
runtime::ModelLoadSpec ModelSpecFromConfig(const config::ModelConfig& model);

// [scheduler] and [[device]] kv_memory as instance manager options. The
// sampler (may be null) gives memory figures for the fit check; a kv_memory
// fraction is read by the arena itself as it grows.
runtime::InstanceManagerOptions InstanceManagerOptionsFrom(
    const config::NodeConfig& config, const std::vector<devices::Device*>& devices,
    const telemetry::DeviceSampler* sampler);

// [cost] and the devices' [[device]] settings (cost_weight, watts) as cost
// model inputs; a device no [[device]] names gets weight 1.
metering::CostInputs CostInputsFrom(const config::NodeConfig& config,
                                    const std::vector<devices::Device*>& devices);
// The [[model]] prices by model id.
std::map<std::string, metering::Prices> ModelPricesFrom(const config::NodeConfig& config);
// Every tenant's own prices by name (0: the model's), for Metering.
std::map<std::string, metering::Prices> TenantPricesFrom(
    const std::vector<tenants::TenantPolicy>& tenants);

// Puts the config's tenants, then the API tenants kept in the store (a
// stored tenant whose name the config now uses is dropped from the store).
// A config tenant that does not validate fails start-up; a bad stored one is
// logged and skipped.
absl::Status RestoreTenants(const config::NodeConfig& config, storage::MeterStore& store,
                            tenants::TenantRegistry& registry);

}  // namespace tokenmill::daemon
