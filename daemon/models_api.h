// ModelsApi: model instances on the control socket.
//
//   POST   /control/v1/models        {"id","path","device"?,"max_seqs"?,"max_batch_tokens"?,
//                                     "context"?} -> 202 MODEL (state "loading")
//   GET    /control/v1/models        {"models":[MODEL...]}
//   GET    /control/v1/models/{id}   MODEL, or 404
//   DELETE /control/v1/models/{id}   202 MODEL (state "draining"); 404
//
// Load errors: 409 id in use, 404 file or device, 400 bad body (unknown
// fields named), 507 Insufficient Storage when the model does not fit (the
// message has the numbers; not 429: retrying will not help).
//
// MODEL: {"id","path","device","state","load_progress","error" (failed
// only),"architecture","weight_bytes","kv_bytes_per_block","context",
// "max_seqs","max_batch_tokens","loaded_at" (RFC 3339 UTC, null until
// ready),"stats":{...InstanceStats, "device_seconds"}}.
//
// With a store, a loaded model's body is kept under state key "model/ID"
// (ParseModelBody reads it back on restart); DELETE removes it. Loop thread
// only; InstanceManager::Load returns at once, so nothing here blocks.
#pragma once

#include <string_view>

#include "absl/status/statusor.h"
#include "daemon/http/http_server.h"
#include "nlohmann/json.hpp"
#include "runtime/node/instance_manager.h"
#include "storage/meter_store.h"

namespace tokenmill::daemon {

// A POST body (or a stored "model/ID" value). kInvalidArgument naming the field.
absl::StatusOr<runtime::ModelLoadSpec> ParseModelBody(std::string_view body);

// The stored form of a spec (the POST body's fields).
nlohmann::json ModelStateJson(const runtime::ModelLoadSpec& spec);

// MODEL for one instance.
nlohmann::json ModelJson(const runtime::InstanceInfo& info);

class ModelsApi {
 public:
  // `instances` (and `store` when not null) outlive the API.
  ModelsApi(runtime::InstanceManager& instances, storage::MeterStore* store);

  // Handles /control/v1/models[/ID] and returns true; false for other paths.
  bool Handle(const http::HttpRequest& request, const http::ResponseWriterPtr& response);

 private:
  void Load(const http::HttpRequest& request, http::ResponseWriter& response);
  void Unload(const std::string& id, http::ResponseWriter& response);

  runtime::InstanceManager& instances_;
  storage::MeterStore* store_;
};

}  // namespace tokenmill::daemon
