// What a token sells for: per-million-token prices of the models and the
// tenants, as values the composition root pushes into Metering at start,
// on SIGHUP and whenever a tenant changes, so that the engine thread reads a
// snapshot instead of reaching into the tenant registry every step.
#pragma once

#include <map>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"

namespace tokenmill::metering {

// Per-million-token prices of one tenant or model.
struct Prices {
  double input_per_mtok = 0.0;
  double output_per_mtok = 0.0;
};

// An immutable snapshot of every price in force. Lookups take string views
// and allocate nothing.
class PriceTable {
 public:
  PriceTable() = default;
  PriceTable(const std::map<std::string, Prices>& models,
             const std::map<std::string, Prices>& tenants) {
    for (const auto& [id, p] : models) models_.emplace(id, p);
    for (const auto& [name, p] : tenants) tenants_.emplace(name, p);
  }

  // Prices for a tenant on a model: each of the tenant's prices when > 0,
  // else the model's (0 when the model has none).
  Prices For(std::string_view tenant, std::string_view model) const {
    Prices out;
    if (auto it = models_.find(absl::string_view(model.data(), model.size()));
        it != models_.end()) {
      out = it->second;
    }
    if (auto it = tenants_.find(absl::string_view(tenant.data(), tenant.size()));
        it != tenants_.end()) {
      if (it->second.input_per_mtok > 0) out.input_per_mtok = it->second.input_per_mtok;
      if (it->second.output_per_mtok > 0) out.output_per_mtok = it->second.output_per_mtok;
    }
    return out;
  }

 private:
  absl::flat_hash_map<std::string, Prices> models_;
  absl::flat_hash_map<std::string, Prices> tenants_;
};

}  // namespace tokenmill::metering
