#include "daemon/models_api.h"

#include <chrono>
#include <limits>
#include <string>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "daemon/api_errors.h"
#include "spdlog/spdlog.h"

namespace tokenmill::daemon {
namespace {

using nlohmann::json;

constexpr std::string_view kCollection = "/control/v1/models";
constexpr std::string_view kItemPrefix = "/control/v1/models/";

absl::Status BadField(std::string_view field, std::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("field '", std::string(field), "' ", std::string(why)));
}

bool IsModelId(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == ':' || c == '-';
    if (!ok) return false;
  }
  return true;
}

absl::Status ReadLimit(const json& v, std::string_view field, std::optional<uint32_t>* out) {
  if (v.is_null()) return absl::OkStatus();
  if (!v.is_number_unsigned() || v.get<uint64_t>() == 0 ||
      v.get<uint64_t>() > std::numeric_limits<uint32_t>::max()) {
    return BadField(field, "must be an integer in [1, 4294967295]");
  }
  *out = static_cast<uint32_t>(v.get<uint64_t>());
  return absl::OkStatus();
}

json StatsJson(const runtime::InstanceStats& s) {
  return {{"running", s.running},
          {"waiting", s.waiting},
          {"kv_blocks_used", s.kv_blocks_used},
          {"kv_blocks_cached", s.kv_blocks_cached},
          {"kv_blocks_free", s.kv_blocks_free},
          {"kv_pages", s.kv_pages},
          {"steps", s.steps},
          {"prompt_tokens", s.prompt_tokens},
          {"cached_tokens", s.cached_tokens},
          {"generated_tokens", s.generated_tokens},
          {"preemptions", s.preemptions},
          {"prefix_query_tokens", s.prefix_query_tokens},
          {"prefix_hit_tokens", s.prefix_hit_tokens},
          {"device_seconds", std::chrono::duration<double>(s.device_time).count()}};
}

}  // namespace

absl::StatusOr<runtime::ModelLoadSpec> ParseModelBody(std::string_view body) {
  json parsed = json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded() || !parsed.is_object()) {
    return absl::InvalidArgumentError("the body must be a JSON object");
  }
  runtime::ModelLoadSpec spec;
  bool has_id = false, has_path = false;
  for (const auto& [key, v] : parsed.items()) {
    absl::Status status;
    if (key == "id" || key == "path" || key == "device") {
      if (!v.is_string() || v.get<std::string>().empty()) {
        status = BadField(key, "must be a non-empty string");
      } else if (key == "id") {
        spec.id = v.get<std::string>();
        has_id = true;
        if (!IsModelId(spec.id)) status = BadField(key, "must be 1-128 of [A-Za-z0-9_.:-]");
      } else if (key == "path") {
        spec.path = v.get<std::string>();
        has_path = true;
      } else {
        spec.device = v.get<std::string>();
      }
    } else if (key == "max_seqs") {
      status = ReadLimit(v, key, &spec.max_seqs);
    } else if (key == "max_batch_tokens") {
      status = ReadLimit(v, key, &spec.max_batch_tokens);
    } else if (key == "context") {
      status = ReadLimit(v, key, &spec.context);
    } else {
      status = BadField(key,
                        "is not a model field (id, path, device, max_seqs, "
                        "max_batch_tokens, context)");
    }
    if (!status.ok()) return status;
  }
  if (!has_id) return BadField("id", "is required");
  if (!has_path) return BadField("path", "is required");
  return spec;
}

json ModelStateJson(const runtime::ModelLoadSpec& spec) {
  json state = {{"id", spec.id}, {"path", spec.path.string()}, {"device", spec.device}};
  if (spec.max_seqs) state["max_seqs"] = *spec.max_seqs;
  if (spec.max_batch_tokens) state["max_batch_tokens"] = *spec.max_batch_tokens;
  if (spec.context) state["context"] = *spec.context;
  return state;
}

json ModelJson(const runtime::InstanceInfo& info) {
  json model = {{"id", info.spec.id},
                {"path", info.spec.path.string()},
                {"device", info.device},
                {"state", std::string(runtime::InstanceStateName(info.state))},
                {"load_progress", info.load_progress}};
  if (info.state == runtime::InstanceState::kFailed) model["error"] = info.error;
  model["architecture"] = info.architecture;
  model["weight_bytes"] = info.weight_bytes;
  model["kv_bytes_per_block"] = info.kv_bytes_per_block;
  model["context"] = info.context;
  model["max_seqs"] = info.max_seqs;
  model["max_batch_tokens"] = info.max_batch_tokens;
  if (info.loaded_at == std::chrono::system_clock::time_point{}) {
    model["loaded_at"] = nullptr;
  } else {
    model["loaded_at"] =
        absl::FormatTime(absl::RFC3339_sec, absl::FromChrono(info.loaded_at), absl::UTCTimeZone());
  }
  model["stats"] = StatsJson(info.stats);
  return model;
}

ModelsApi::ModelsApi(runtime::InstanceManager& instances, storage::MeterStore* store)
    : instances_(instances), store_(store) {}

bool ModelsApi::Handle(const http::HttpRequest& request, const http::ResponseWriterPtr& response) {
  const std::string& path = request.path;
  const std::string& method = request.method;
  bool get = method == "GET" || method == "HEAD";
  if (path == kCollection) {
    if (method == "POST") {
      Load(request, *response);
    } else if (get) {
      json list = json::array();
      for (const runtime::InstanceInfo& info : instances_.List()) list.push_back(ModelJson(info));
      SendJson(*response, DumpJson(json{{"models", std::move(list)}}));
    } else {
      SendMethodNotAllowedError(*response, {"GET", "HEAD", "POST"});
    }
    return true;
  }
  if (!path.starts_with(kItemPrefix)) return false;
  std::string id = path.substr(kItemPrefix.size());
  if (get) {
    absl::StatusOr<runtime::InstanceInfo> info = instances_.Get(id);
    if (!info.ok()) return SendError(*response, info.status()), true;
    SendJson(*response, DumpJson(ModelJson(*info)));
  } else if (method == "DELETE") {
    Unload(id, *response);
  } else {
    SendMethodNotAllowedError(*response, {"GET", "HEAD", "DELETE"});
  }
  return true;
}

void ModelsApi::Load(const http::HttpRequest& request, http::ResponseWriter& response) {
  absl::StatusOr<runtime::ModelLoadSpec> spec = ParseModelBody(request.body);
  if (!spec.ok()) return SendError(response, spec.status());
  if (instances_.Get(spec->id).ok()) {
    // Checked before the state write, which would otherwise replace the
    // stored spec of the model already loaded.
    return SendError(response,
                     absl::AlreadyExistsError(absl::StrCat("model '", spec->id, "' exists")));
  }
  std::string key = absl::StrCat("model/", spec->id);
  if (store_ != nullptr) {
    if (absl::Status saved = store_->PutState(key, DumpJson(ModelStateJson(*spec))); !saved.ok()) {
      spdlog::error("model_state_write_failed model={} error={}", spec->id,
                    std::string(saved.message()));
      return SendError(response, absl::InternalError(absl::StrCat(
                                     "cannot persist model '", spec->id,
                                     "', not loading it: ", std::string(saved.message()))));
    }
  }
  absl::StatusOr<runtime::InstanceInfo> info = instances_.Load(*spec);
  if (!info.ok()) {
    if (store_ != nullptr) (void)store_->DeleteState(key);
    spdlog::warn("model_load_refused model={} error={}", spec->id,
                 std::string(info.status().message()));
    if (info.status().code() == absl::StatusCode::kResourceExhausted) {
      // Does not fit: the same request will not succeed later, so not 429.
      response.Send(
          507, "application/json",
          ErrorBody(ErrorType(info.status().code()), std::string(info.status().message())));
      return;
    }
    return SendError(response, info.status());
  }
  spdlog::info("model_load_started model={} path={} device={}", spec->id, spec->path.string(),
               info->device);
  SendJson(response, DumpJson(ModelJson(*info)), 202);
}

void ModelsApi::Unload(const std::string& id, http::ResponseWriter& response) {
  absl::StatusOr<runtime::InstanceInfo> before = instances_.Get(id);
  if (!before.ok()) return SendError(response, before.status());
  if (absl::Status unloaded = instances_.Unload(id); !unloaded.ok()) {
    return SendError(response, unloaded);
  }
  if (store_ != nullptr) {
    if (absl::Status erased = store_->DeleteState(absl::StrCat("model/", id)); !erased.ok()) {
      spdlog::error("model_state_delete_failed model={} error={}", id,
                    std::string(erased.message()));
    }
  }
  absl::StatusOr<runtime::InstanceInfo> after = instances_.Get(id);
  json model = ModelJson(after.ok() ? *after : *before);
  model["state"] = "draining";
  spdlog::info("model_unload_started model={}", id);
  SendJson(response, DumpJson(model), 202);
}

}  // namespace tokenmill::daemon
