#include "daemon/tenants_api.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "daemon/api_errors.h"
#include "spdlog/spdlog.h"

namespace tokenmill::daemon {
namespace {

using nlohmann::json;

constexpr std::string_view kTenantsPath = "/control/v1/tenants";
constexpr std::string_view kTenantPrefix = "/control/v1/tenants/";

absl::Status ReadNumber(const json& v, std::string_view field, double* out) {
  if (!v.is_number()) return BadField(field, "must be a number");
  *out = v.get<double>();
  return absl::OkStatus();
}

template <typename Int>
absl::Status ReadUnsigned(const json& v, std::string_view field, Int* out) {
  if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<int64_t>() >= 0)) {
    return BadField(field, "must be an integer >= 0");
  }
  uint64_t value = v.get<uint64_t>();
  if constexpr (sizeof(Int) < sizeof(uint64_t)) {
    if (value > std::numeric_limits<Int>::max()) {
      return BadField(field, absl::StrCat("must be at most ", std::numeric_limits<Int>::max()));
    }
  }
  *out = static_cast<Int>(value);
  return absl::OkStatus();
}

absl::Status ReadStrings(const json& v, std::string_view field, std::vector<std::string>* out) {
  if (!v.is_array()) return BadField(field, "must be an array of strings");
  out->clear();
  for (const json& s : v) {
    if (!s.is_string()) return BadField(field, "must be an array of strings");
    out->push_back(s.get<std::string>());
  }
  return absl::OkStatus();
}

std::string SourceName(tenants::TenantSource source) {
  return source == tenants::TenantSource::kConfig ? "config" : "api";
}

json PolicyFields(const tenants::TenantPolicy& p) {
  return {{"name", p.name},
          {"weight", p.weight},
          {"kv_reserved_blocks", p.kv_reserved_blocks},
          {"kv_max_fraction", p.kv_max_fraction},
          {"rate_limit_tokens_per_s", p.rate_limit_tokens_per_s},
          {"schema_compile_s_per_min", p.schema_compile_s_per_min},
          {"max_concurrent", p.max_concurrent},
          {"max_queue", p.max_queue},
          {"cache_group", p.cache_group},
          {"models", p.models},
          {"price_input_per_mtok", p.price_input_per_mtok},
          {"price_output_per_mtok", p.price_output_per_mtok}};
}

}  // namespace

absl::StatusOr<tenants::TenantPolicy> ParseTenantBody(std::string_view name,
                                                      std::string_view body) {
  tenants::TenantPolicy defaults;
  defaults.name = std::string(name);
  return ApplyTenantBody(std::move(defaults), body);
}

absl::StatusOr<tenants::TenantPolicy> ApplyTenantBody(tenants::TenantPolicy policy,
                                                      std::string_view body) {
  json parsed = json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded() || !parsed.is_object()) {
    return absl::InvalidArgumentError("the body must be a JSON object");
  }
  const std::string name = policy.name;
  policy.source = tenants::TenantSource::kApi;
  std::vector<std::string> plaintext_keys;
  std::vector<std::string> key_hashes;
  bool keys_given = false;
  for (const auto& [key, v] : parsed.items()) {
    absl::Status status;
    if (key == "name") {
      if (!v.is_string() || v.get<std::string>() != name) {
        status = BadField(key, "must match the name in the path");
      }
    } else if (key == "weight") {
      status = ReadNumber(v, key, &policy.weight);
    } else if (key == "kv_reserved_blocks") {
      status = ReadUnsigned(v, key, &policy.kv_reserved_blocks);
    } else if (key == "kv_max_fraction") {
      status = ReadNumber(v, key, &policy.kv_max_fraction);
    } else if (key == "rate_limit_tokens_per_s") {
      status = ReadNumber(v, key, &policy.rate_limit_tokens_per_s);
    } else if (key == "schema_compile_s_per_min") {
      status = ReadNumber(v, key, &policy.schema_compile_s_per_min);
    } else if (key == "max_concurrent") {
      status = ReadUnsigned(v, key, &policy.max_concurrent);
    } else if (key == "max_queue") {
      status = ReadUnsigned(v, key, &policy.max_queue);
    } else if (key == "cache_group") {
      if (!v.is_string()) {
        status = BadField(key, "must be a string");
      } else {
        policy.cache_group = v.get<std::string>();
      }
    } else if (key == "models") {
      status = ReadStrings(v, key, &policy.models);
    } else if (key == "price_input_per_mtok") {
      status = ReadNumber(v, key, &policy.price_input_per_mtok);
    } else if (key == "price_output_per_mtok") {
      status = ReadNumber(v, key, &policy.price_output_per_mtok);
    } else if (key == "api_keys_sha256") {
      keys_given = true;
      status = ReadStrings(v, key, &key_hashes);
    } else if (key == "api_keys") {
      keys_given = true;
      status = ReadStrings(v, key, &plaintext_keys);
      for (const std::string& k : plaintext_keys) {
        if (status.ok() && k.empty()) status = BadField(key, "must not hold empty keys");
      }
    } else {
      status = BadField(key, "is not a tenant field");
    }
    if (!status.ok()) return status;
  }
  // Keys given replace the tenant's keys; keys not mentioned stay.
  if (keys_given) {
    policy.api_keys_sha256 = std::move(key_hashes);
    for (const std::string& k : plaintext_keys) {
      std::string hash = tenants::ApiKeySha256(k);
      auto& hashes = policy.api_keys_sha256;
      if (std::find(hashes.begin(), hashes.end(), hash) == hashes.end()) hashes.push_back(hash);
    }
  }
  if (absl::Status valid = tenants::ValidateTenantPolicy(policy); !valid.ok()) return valid;
  return policy;
}

json TenantStateJson(const tenants::TenantPolicy& policy) {
  json state = PolicyFields(policy);
  state["api_keys_sha256"] = policy.api_keys_sha256;
  return state;
}

TenantsApi::TenantsApi(tenants::TenantRegistry& registry, storage::MeterStore* store,
                       std::string config_source)
    : registry_(registry), store_(store), config_source_(std::move(config_source)) {}

json TenantsApi::TenantJson(const tenants::TenantPolicy& policy) const {
  json tenant = PolicyFields(policy);
  tenant["source"] = SourceName(policy.source);
  tenant["api_key_count"] = policy.api_keys_sha256.size();
  tenant["in_flight"] = registry_.InFlight(policy.name);
  return tenant;
}

absl::Status TenantsApi::RefuseConfigTenant(const std::string& name) const {
  return absl::FailedPreconditionError(absl::StrCat(
      "tenant '", name, "' is defined in ", config_source_, "; edit the config and reload"));
}

bool TenantsApi::Handle(const http::HttpRequest& request, const http::ResponseWriterPtr& response) {
  const std::string& path = request.path;
  const std::string& method = request.method;
  bool get = method == "GET" || method == "HEAD";
  if (path == kTenantsPath) {
    if (!get) return SendMethodNotAllowedError(*response, {"GET", "HEAD"}), true;
    json list = json::array();
    for (const tenants::TenantPolicy& policy : registry_.List()) list.push_back(TenantJson(policy));
    SendJson(*response, DumpJson(json{{"tenants", std::move(list)}}));
    return true;
  }
  if (!path.starts_with(kTenantPrefix)) return false;
  std::string name = path.substr(kTenantPrefix.size());
  if (get) {
    std::optional<tenants::TenantPolicy> policy = registry_.Get(name);
    if (!policy) {
      SendError(*response, absl::NotFoundError(absl::StrCat("no tenant '", name, "'")));
    } else {
      SendJson(*response, DumpJson(TenantJson(*policy)));
    }
  } else if (method == "PUT" || method == "PATCH") {
    Put(name, method == "PATCH", request, *response);
  } else if (method == "DELETE") {
    Delete(name, *response);
  } else {
    SendMethodNotAllowedError(*response, {"GET", "HEAD", "PUT", "PATCH", "DELETE"});
  }
  return true;
}

void TenantsApi::Put(const std::string& name, bool patch, const http::HttpRequest& request,
                     http::ResponseWriter& response) {
  std::optional<tenants::TenantPolicy> existing = registry_.Get(name);
  if (existing && existing->source == tenants::TenantSource::kConfig) {
    return SendError(response, RefuseConfigTenant(name));
  }
  if (patch && !existing) {
    return SendError(response, absl::NotFoundError(absl::StrCat(
                                   "no tenant '", name, "' to change; create it with PUT")));
  }
  absl::StatusOr<tenants::TenantPolicy> policy =
      patch ? ApplyTenantBody(*existing, request.body) : ParseTenantBody(name, request.body);
  if (!policy.ok()) return SendError(response, policy.status());
  if (absl::Status put = registry_.Put(*policy); !put.ok()) return SendError(response, put);
  if (store_ != nullptr) {
    if (absl::Status saved =
            store_->PutState(absl::StrCat("tenant/", name), DumpJson(TenantStateJson(*policy)));
        !saved.ok()) {
      // The tenant works now but would not survive a restart: say so.
      spdlog::error("tenant_state_write_failed tenant={} error={}", name,
                    std::string(saved.message()));
      return SendError(response, absl::InternalError(absl::StrCat(
                                     "tenant '", name, "' is active but was not persisted: ",
                                     std::string(saved.message()))));
    }
  }
  spdlog::info("tenant_{} tenant={} keys={} source=control_api", patch ? "patched" : "put", name,
               policy->api_keys_sha256.size());
  SendJson(response, DumpJson(TenantJson(*policy)));
}

void TenantsApi::Delete(const std::string& name, http::ResponseWriter& response) {
  std::optional<tenants::TenantPolicy> existing = registry_.Get(name);
  if (!existing) {
    return SendError(response, absl::NotFoundError(absl::StrCat("no tenant '", name, "'")));
  }
  if (existing->source == tenants::TenantSource::kConfig) {
    return SendError(response, RefuseConfigTenant(name));
  }
  if (absl::Status removed = registry_.Remove(name); !removed.ok()) {
    return SendError(response, removed);
  }
  if (store_ != nullptr) {
    if (absl::Status erased = store_->DeleteState(absl::StrCat("tenant/", name)); !erased.ok()) {
      spdlog::error("tenant_state_delete_failed tenant={} error={}", name,
                    std::string(erased.message()));
      return SendError(response, absl::InternalError(absl::StrCat(
                                     "tenant '", name, "' is removed but would return on restart: ",
                                     std::string(erased.message()))));
    }
  }
  spdlog::info("tenant_deleted tenant={} source=control_api", name);
  SendJson(response, DumpJson(json{{"name", name}, {"deleted", true}}));
}

}  // namespace tokenmill::daemon
