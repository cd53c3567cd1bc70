#include "daemon/control_api.h"

#include <chrono>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "daemon/api_errors.h"
#include "devices/backend.h"
#include "spdlog/spdlog.h"
#include "tokenmill/version.h"

namespace tokenmill::daemon {
namespace {

using nlohmann::json;

std::string Rfc3339(std::chrono::system_clock::time_point t) {
  return absl::FormatTime(absl::RFC3339_sec, absl::FromChrono(t), absl::UTCTimeZone());
}

json DeviceJson(const devices::DeviceInfo& info, const json& details,
                const devices::DeviceSample* sample) {
  const std::string kind(devices::BackendKindOf(info));
  json d = {{"id", info.id},
            {"kind", kind},
            {"name", info.name},
            {"memory_total_bytes", info.memory_total_bytes}};
  if (!details.is_null()) d[kind] = details;
  if (sample != nullptr) {
    json s = {{"memory_total_bytes", sample->memory_total_bytes},
              {"memory_used_bytes", sample->memory_used_bytes}};
    // Figures a device cannot read are null, never a made-up 0.
    auto opt = [](const std::optional<double>& v) { return v ? json(*v) : json(nullptr); };
    s["power_watts"] = opt(sample->power_watts);
    s["energy_joules"] = opt(sample->energy_joules);
    s["utilization_ratio"] = opt(sample->utilization_ratio);
    s["temperature_celsius"] = opt(sample->temperature_celsius);
    d["sample"] = std::move(s);
  } else {
    d["sample"] = nullptr;
  }
  return d;
}

void SendMethodNotAllowed(http::ResponseWriter& response, std::vector<std::string> allowed) {
  std::string allow = absl::StrJoin(allowed, ", ");
  response.Send(405, "application/json",
                ErrorBody("method_not_allowed", absl::StrCat("allowed methods: ", allow)),
                {{"Allow", allow}});
}

}  // namespace

ControlApi::ControlApi(NodeState& state, std::vector<const devices::Device*> devices,
                       SampleSource samples)
    : state_(state), devices_(std::move(devices)), samples_(std::move(samples)) {}

json ControlApi::DevicesJson() const {
  std::vector<devices::DeviceSample> samples;
  if (samples_) samples = samples_();
  json list = json::array();
  for (size_t i = 0; i < devices_.size(); ++i) {
    const json details = details_ ? details_(*devices_[i]) : json(nullptr);
    list.push_back(
        DeviceJson(devices_[i]->Info(), details, i < samples.size() ? &samples[i] : nullptr));
  }
  return list;
}

json ControlApi::NodeJson() const {
  auto config = state_.config();
  NodeState::Addresses addresses = state_.addresses();
  auto now = std::chrono::system_clock::now();
  double uptime = std::chrono::duration<double>(now - state_.started_at()).count();
  std::string node_state = state_.draining() ? "draining" : state_.ready() ? "serving" : "starting";
  return json{{"name", config->node.name},
              {"version", kVersion},
              {"revision", kRevision},
              {"state", node_state},
              {"started_at", Rfc3339(state_.started_at())},
              {"uptime_seconds", uptime},
              {"config",
               {{"source", config->source},
                {"digest", config->digest},
                {"loaded_at", Rfc3339(state_.config_loaded_at())},
                {"restart_pending", state_.restart_pending()}}},
              {"data_dir", config->node.data_dir.string()},
              {"api",
               {{"socket", addresses.socket},
                {"tcp", addresses.tcp},
                {"control_tcp", addresses.control_tcp}}},
              {"metrics", {{"listen", addresses.metrics}}},
              {"devices", DevicesJson()}};
}

bool ControlApi::Handle(const http::HttpRequest& request, const http::ResponseWriterPtr& response) {
  const std::string& path = request.path;
  const std::string& method = request.method;
  bool get = method == "GET" || method == "HEAD";
  if (path == "/healthz") {
    if (!get) return SendMethodNotAllowed(*response, {"GET", "HEAD"}), true;
    SendJson(*response, json{{"status", "ok"}}.dump());
    return true;
  }
  if (path == "/readyz") {
    if (!get) return SendMethodNotAllowed(*response, {"GET", "HEAD"}), true;
    size_t loading = 0;
    if (state_.ready() && !startup_settled_.load() && startup_loading_) {
      loading = startup_loading_();
      if (loading == 0) startup_settled_.store(true);
    }
    if (state_.ready() && loading > 0) {
      SendError(*response, absl::UnavailableError(absl::StrCat("node is loading ", loading,
                                                               " of the models it starts with")));
    } else if (state_.ready()) {
      SendJson(*response, json{{"status", "ready"}}.dump());
    } else {
      SendError(*response, absl::UnavailableError(state_.draining() ? "node is draining"
                                                                    : "node is starting"));
    }
    return true;
  }
  if (path == "/control/v1/node") {
    if (!get) return SendMethodNotAllowed(*response, {"GET", "HEAD"}), true;
    json node = NodeJson();
    if (store_) node["store"] = store_();
    if (capacity_) node["capacity"] = capacity_();
    SendJson(*response, node.dump());
    return true;
  }
  if (path == "/control/v1/devices") {
    if (!get) return SendMethodNotAllowed(*response, {"GET", "HEAD"}), true;
    SendJson(*response, json{{"devices", DevicesJson()}}.dump());
    return true;
  }
  if (path == "/control/v1/drain") {
    if (method == "POST" || method == "DELETE") {
      bool drain = method == "POST";
      if (state_.draining() != drain) {
        state_.set_draining(drain);
        spdlog::info("{} source=control_api", drain ? "drain_started" : "drain_cancelled");
      }
    } else if (!get) {
      return SendMethodNotAllowed(*response, {"GET", "POST", "DELETE"}), true;
    }
    SendJson(*response, json{{"draining", state_.draining()}}.dump(), method == "POST" ? 202 : 200);
    return true;
  }
  return false;
}

void SendNotFound(const http::HttpRequest& request, http::ResponseWriter& response) {
  SendError(response,
            absl::NotFoundError(absl::StrCat("no endpoint ", request.method, " ", request.path)));
}

}  // namespace tokenmill::daemon
