// TenantsApi: tenants on the control socket.
//
//   GET    /control/v1/tenants          {"tenants":[TENANT...]}
//   GET    /control/v1/tenants/{name}   TENANT, or 404
//   PUT    /control/v1/tenants/{name}   creates or replaces an API tenant; 200 TENANT
//   PATCH  /control/v1/tenants/{name}   changes the given fields of an API tenant; 200 TENANT
//   DELETE /control/v1/tenants/{name}   removes an API tenant; 200 {"name","deleted":true}
//
// A PUT body holds every TenantPolicy field by its config name plus
// "api_keys" (plaintext, hashed at once, never stored or logged) and/or
// "api_keys_sha256". PUT is a full replace: fields left out take their
// defaults (no keys, prices 0). PATCH (404 for an unknown tenant) takes the
// same fields and changes only those given; "api_keys" / "api_keys_sha256",
// when given, replace the tenant's key set (together), else the keys stay.
// Unknown fields are 400. Names: 1-64 of [A-Za-z0-9_.-], not starting with
// '.' or '-'. Tenants of the config file are read-only here (409): the
// config is the source of truth for them and a reload would undo an edit.
//
// TENANT: every policy field except the keys, plus "source" ("config" |
// "api"), "api_key_count" and "in_flight".
//
// With a store, an API tenant's policy (key hashes only) is kept under
// state key "tenant/NAME" so that the node restores it on restart
// (ParseTenantBody reads it back). Loop thread only.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "daemon/http/http_server.h"
#include "nlohmann/json.hpp"
#include "runtime/tenants/tenant_registry.h"
#include "storage/meter_store.h"

namespace tokenmill::daemon {

// A PUT body (or a stored "tenant/NAME" value) as an API tenant named
// `name`. kInvalidArgument naming the field.
absl::StatusOr<tenants::TenantPolicy> ParseTenantBody(std::string_view name, std::string_view body);

// A PATCH body applied to `policy` (fields not in the body stay; keys given
// replace the key set) as an API tenant. kInvalidArgument naming the field.
absl::StatusOr<tenants::TenantPolicy> ApplyTenantBody(tenants::TenantPolicy policy,
                                                      std::string_view body);

// The stored form: every policy field plus "api_keys_sha256".
nlohmann::json TenantStateJson(const tenants::TenantPolicy& policy);

class TenantsApi {
 public:
  // `registry` (and `store` when not null) outlive the API. `config_source`
  // names the config file in the 409 for config tenants.
  TenantsApi(tenants::TenantRegistry& registry, storage::MeterStore* store,
             std::string config_source);

  // Handles /control/v1/tenants[/NAME] and returns true; false for other paths.
  bool Handle(const http::HttpRequest& request, const http::ResponseWriterPtr& response);

  nlohmann::json TenantJson(const tenants::TenantPolicy& policy) const;

 private:
  // PUT (full replace) or PATCH (the given fields).
  void Put(const std::string& name, bool patch, const http::HttpRequest& request,
           http::ResponseWriter& response);
  void Delete(const std::string& name, http::ResponseWriter& response);
  absl::Status RefuseConfigTenant(const std::string& name) const;

  tenants::TenantRegistry& registry_;
  storage::MeterStore* store_;
  std::string config_source_;
};

}  // namespace tokenmill::daemon
