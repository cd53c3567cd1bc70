#include "daemon/models_api.h"

#include <chrono>
#include <limits>
#include <set>
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

constexpr std::string_view kModelsPath = "/control/v1/models";
constexpr std::string_view kModelPrefix = "/control/v1/models/";

bool IsModelId(std::string_view id) {
  if (id.empty() || id.size() > runtime::kMaxModelIdLength) return false;
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
        if (!IsModelId(spec.id)) {
          status = BadField(
              key, absl::StrCat("must be 1-", runtime::kMaxModelIdLength, " of [A-Za-z0-9_.:-]"));
        }
      } else if (key == "path") {
        const std::string path = v.get<std::string>();
        // A NUL would cut the path where the kernel reads it.
        if (path.find('\0') != std::string::npos) {
          status = BadField(key, "must not contain NUL bytes");
        }
        spec.path = path;
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

absl::StatusOr<StoredModel> ParseModelState(std::string_view value) {
  json parsed = json::parse(value.begin(), value.end(), nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded() || !parsed.is_object()) {
    return absl::InvalidArgumentError("the stored model must be a JSON object");
  }
  StoredModel stored;
  if (auto it = parsed.find("load_error"); it != parsed.end()) {
    if (!it->is_string()) return BadField("load_error", "must be a string");
    stored.load_error = it->get<std::string>();
    parsed.erase(it);
  }
  absl::StatusOr<runtime::ModelLoadSpec> spec = ParseModelBody(parsed.dump());
  if (!spec.ok()) return spec.status();
  stored.spec = std::move(*spec);
  return stored;
}

json ModelStateJson(const runtime::ModelLoadSpec& spec, const std::string& load_error) {
  json state = {{"id", spec.id}, {"path", spec.path.string()}, {"device", spec.device}};
  if (spec.max_seqs) state["max_seqs"] = *spec.max_seqs;
  if (spec.max_batch_tokens) state["max_batch_tokens"] = *spec.max_batch_tokens;
  if (spec.context) state["context"] = *spec.context;
  if (!load_error.empty()) state["load_error"] = load_error;
  return state;
}

json ModelJson(const runtime::InstanceInfo& info) {
  json model = {{"id", info.spec.id},
                {"path", info.spec.path.string()},
                {"source", std::string(runtime::ModelSourceName(info.spec.source))},
                {"device", info.device},
                {"state", std::string(runtime::InstanceStateName(info.state))},
                {"load_progress", info.load_progress}};
  if (info.state == runtime::InstanceState::kFailed) model["error"] = info.error;
  model["architecture"] = info.architecture;
  model["chat_template"] = info.chat_template;  // "model", "plain"; "" until ready
  model["tool_calls"] = info.tool_calls;        // the format parsed, "none"; "" until ready
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
  if (path == kModelsPath) {
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
  if (!path.starts_with(kModelPrefix)) return false;
  std::string id = path.substr(kModelPrefix.size());
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
  absl::StatusOr<runtime::ModelLoadSpec> parsed = ParseModelBody(request.body);
  if (!parsed.ok()) return SendError(response, parsed.status());
  parsed->source = runtime::ModelSource::kApi;
  // The canonical path, inside the model roots, is what is loaded and kept.
  absl::StatusOr<runtime::ModelLoadSpec> spec = instances_.Resolve(*std::move(parsed));
  auto refuse = [&](const absl::Status& status) {
    spdlog::warn("model_load_refused model={} error=\"{}\"", spec.ok() ? spec->id : "",
                 std::string(status.message()));
    if (status.code() == absl::StatusCode::kResourceExhausted) {
      // Does not fit: the same request will not succeed later, so not 429.
      response.Send(507, "application/json",
                    ErrorBody(ErrorType(status.code()), std::string(status.message())));
      return;
    }
    SendError(response, status);
  };
  if (!spec.ok()) return refuse(spec.status());
  if (absl::StatusOr<runtime::InstanceInfo> existing = instances_.Get(spec->id);
      existing.ok() && existing->state != runtime::InstanceState::kFailed) {
    return SendError(response,
                     absl::AlreadyExistsError(absl::StrCat("model '", spec->id, "' exists")));
  }
  absl::MutexLock lock(&state_mu_);
  absl::StatusOr<runtime::InstanceInfo> info = instances_.Load(*spec);
  if (!info.ok()) return refuse(info.status());
  if (store_ != nullptr) {
    std::string key = absl::StrCat("model/", spec->id);
    if (absl::Status saved = store_->PutState(key, DumpJson(ModelStateJson(info->spec)));
        !saved.ok()) {
      spdlog::error("model_state_write_failed model={} error=\"{}\"", spec->id,
                    std::string(saved.message()));
      (void)instances_.Unload(spec->id);
      return SendError(response, absl::InternalError(absl::StrCat(
                                     "cannot persist model '", spec->id,
                                     "', not loading it: ", std::string(saved.message()))));
    }
  }
  SendJson(response, DumpJson(ModelJson(*info)), 202);
}

void ModelsApi::Unload(const std::string& id, http::ResponseWriter& response) {
  absl::MutexLock lock(&state_mu_);
  absl::StatusOr<runtime::InstanceInfo> before = instances_.Get(id);
  if (!before.ok()) return SendError(response, before.status());
  if (absl::Status unloaded = instances_.Unload(id); !unloaded.ok()) {
    return SendError(response, unloaded);
  }
  if (store_ != nullptr) {
    if (absl::Status erased = store_->DeleteState(absl::StrCat("model/", id)); !erased.ok()) {
      spdlog::error("model_state_delete_failed model={} error=\"{}\"", id,
                    std::string(erased.message()));
    }
  }
  absl::StatusOr<runtime::InstanceInfo> after = instances_.Get(id);
  json model = ModelJson(after.ok() ? *after : *before);
  model["state"] = "draining";
  spdlog::info("model_unload_started model={} state={}", id,
               std::string(runtime::InstanceStateName(before->state)));
  SendJson(response, DumpJson(model), 202);
}

void ModelsApi::Restore(const std::vector<runtime::ModelLoadSpec>& config_models) {
  std::set<std::string> ids;
  // A model that cannot start loading is listed as failed, with the reason.
  auto load = [this](runtime::ModelLoadSpec spec) -> absl::Status {
    absl::StatusOr<runtime::InstanceInfo> info = instances_.Load(spec);
    if (info.ok()) return absl::OkStatus();
    const std::string error(info.status().message());
    spdlog::error("model_load_failed model={} path=\"{}\" source={} error=\"{}\"", spec.id,
                  spec.path.string(), std::string(runtime::ModelSourceName(spec.source)), error);
    (void)instances_.AddFailed(std::move(spec), error);
    return info.status();
  };
  for (runtime::ModelLoadSpec spec : config_models) {
    spec.source = runtime::ModelSource::kConfig;
    ids.insert(spec.id);
    (void)load(std::move(spec));
  }
  if (store_ == nullptr) return;
  auto stored = store_->ListState("model/");
  if (!stored.ok()) {
    spdlog::error("model_state_unreadable error=\"{}\"", stored.status().ToString());
    return;
  }
  for (const auto& [key, value] : *stored) {
    absl::StatusOr<StoredModel> model = ParseModelState(value);
    if (!model.ok()) {
      spdlog::error("model_state_bad key={} error=\"{}\"", key, model.status().ToString());
      continue;
    }
    runtime::ModelLoadSpec& spec = model->spec;
    spec.source = runtime::ModelSource::kApi;
    if (ids.contains(spec.id)) continue;  // the config's entry wins
    if (!model->load_error.empty()) {
      // Not retried at every start: an operator loads it again or deletes it.
      spdlog::warn("model_not_retried model={} path=\"{}\" last_error=\"{}\"", spec.id,
                   spec.path.string(), model->load_error);
      (void)instances_.AddFailed(
          spec, absl::StrCat("not loaded at start, its last load failed: ", model->load_error,
                             " (load it again or delete it)"));
      continue;
    }
    if (absl::Status s = load(spec); !s.ok()) {
      (void)store_->PutState(key, DumpJson(ModelStateJson(spec, std::string(s.message()))));
    }
  }
}

void ModelsApi::Observe(const runtime::InstanceEvent& event) {
  const runtime::InstanceInfo& info = event.info;
  const runtime::ModelLoadSpec& spec = info.spec;
  const double seconds = std::chrono::duration<double>(event.elapsed).count();
  const std::string source(runtime::ModelSourceName(spec.source));
  switch (event.kind) {
    case runtime::InstanceEventKind::kLoadStarted:
      spdlog::info("model_load_started model={} path=\"{}\" device={} source={}", spec.id,
                   spec.path.string(), info.device, source);
      return;
    case runtime::InstanceEventKind::kLoaded:
      spdlog::info(
          "model_loaded model={} device={} architecture={} weight_bytes={} context={} "
          "chat_template={} tool_calls={} seconds={:.3f}",
          spec.id, info.device, info.architecture, info.weight_bytes, info.context,
          info.chat_template, info.tool_calls, seconds);
      return;
    case runtime::InstanceEventKind::kUnloaded:
      spdlog::info("model_unloaded model={} device={}", spec.id, info.device);
      return;
    case runtime::InstanceEventKind::kLoadFailed:
      break;
  }
  spdlog::error(
      "model_load_failed model={} path=\"{}\" device={} source={} seconds={:.3f} "
      "error=\"{}\"",
      spec.id, spec.path.string(), info.device, source, seconds, info.error);
  if (store_ == nullptr || spec.source != runtime::ModelSource::kApi) return;
  absl::MutexLock lock(&state_mu_);
  // Only while the failed instance is still the one listed: a DELETE (or a
  // new POST) since then owns the stored state.
  absl::StatusOr<runtime::InstanceInfo> now = instances_.Get(spec.id);
  if (!now.ok() || now->state != runtime::InstanceState::kFailed || now->error != info.error ||
      now->spec != spec) {
    return;
  }
  if (absl::Status saved = store_->PutState(absl::StrCat("model/", spec.id),
                                            DumpJson(ModelStateJson(spec, info.error)));
      !saved.ok()) {
    spdlog::error("model_state_write_failed model={} error=\"{}\"", spec.id,
                  std::string(saved.message()));
  }
}

}  // namespace tokenmill::daemon
