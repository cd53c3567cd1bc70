// ModelsApi: model instances on the control socket.
//
//   POST   /control/v1/models        {"id","path","device"?,"max_seqs"?,"max_batch_tokens"?,
//                                     "context"?} -> 202 MODEL (state "loading")
//   GET    /control/v1/models        {"models":[MODEL...]}
//   GET    /control/v1/models/{id}   MODEL, or 404
//   DELETE /control/v1/models/{id}   202 MODEL (state "draining"); 404
//
// Load errors: 409 id in use (a failed model is replaced instead), 404 device,
// or a path that does not exist or resolves outside [node] model_roots (one
// message for both, so the answer tells nothing about files outside the
// roots), 400 bad body (unknown fields named; an id over 64 characters; a
// path with a NUL byte, relative, or not a regular file or directory: a
// device, FIFO or socket), 507 Insufficient Storage when the model does not
// fit (the message has the numbers; not 429: retrying will not help).
//
// MODEL: {"id","path" (canonical),"source" ("config" | "api"),"device",
// "state","load_progress","error" (failed only),"architecture",
// "weight_bytes","kv_bytes_per_block","context","max_seqs",
// "max_batch_tokens","loaded_at" (RFC 3339 UTC, null until ready),
// "stats":{...InstanceStats, "device_seconds"}}.
//
// With a store, an API model's body (with its canonical path) is kept under
// state key "model/ID", and "load_error" is added when its load fails;
// DELETE removes it. At start (Restore), config models load; stored models
// load unless their last load failed: those are listed as failed with the
// stored reason and not retried until an operator loads (POST) or deletes
// them. Every load start, success, failure and unload is logged
// (Observe). Loop thread, except Observe; InstanceManager::Load returns at
// once, so nothing here waits for a load.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "daemon/http/http_server.h"
#include "nlohmann/json.hpp"
#include "runtime/node/instance_manager.h"
#include "storage/meter_store.h"

namespace tokenmill::daemon {

// A POST body. kInvalidArgument naming the field.
absl::StatusOr<runtime::ModelLoadSpec> ParseModelBody(std::string_view body);

// A stored "model/ID" value: the spec, and why its last load failed ("" if
// it did not).
struct StoredModel {
  runtime::ModelLoadSpec spec;
  std::string load_error;
};
absl::StatusOr<StoredModel> ParseModelState(std::string_view value);

// The stored form of a spec (the POST body's fields, plus "load_error" when
// not empty).
nlohmann::json ModelStateJson(const runtime::ModelLoadSpec& spec,
                              const std::string& load_error = "");

// MODEL for one instance.
nlohmann::json ModelJson(const runtime::InstanceInfo& info);

class ModelsApi {
 public:
  // `instances` (and `store` when not null) outlive the API.
  ModelsApi(runtime::InstanceManager& instances, storage::MeterStore* store);

  // Handles /control/v1/models[/ID] and returns true; false for other paths.
  bool Handle(const http::HttpRequest& request, const http::ResponseWriterPtr& response);

  // Start-up: loads the config's models, then the stored API models (a
  // config id wins), as described above. A model that cannot load is logged
  // and listed as failed; the node still starts.
  void Restore(const std::vector<runtime::ModelLoadSpec>& config_models);

  // Logs an instance event (`model_load_started`, `model_loaded`,
  // `model_load_failed` with the error, `model_unloaded`) and, for a failed
  // API model, stores the reason so that the next start does not retry it.
  // Any thread (give it to InstanceManagerOptions::observer).
  void Observe(const runtime::InstanceEvent& event);

 private:
  void Load(const http::HttpRequest& request, http::ResponseWriter& response);
  void Unload(const std::string& id, http::ResponseWriter& response);

  runtime::InstanceManager& instances_;
  storage::MeterStore* store_;
  // Orders the writes of "model/ID" (POST, DELETE, a loader's failure) with
  // the instance changes they follow, so that a failure recorded late never
  // brings back a model that was deleted.
  absl::Mutex state_mu_;
};

}  // namespace tokenmill::daemon
