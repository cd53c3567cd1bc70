// ControlApi: the operator/orchestrator endpoints on the unix socket.
//
//   GET    /healthz               200 while the process serves requests
//   GET    /readyz                200 when ready for work, 503 while starting or draining
//   GET    /control/v1/node       version, uptime, config source and digest, state, devices,
//                                 store (writable, error, accepted losses and the last one),
//                                 capacity (for a scheduler: draining, queue depth, running,
//                                 KV bytes total/used/cached/free per device and node, models
//                                 with their state)
//   GET    /control/v1/devices    every device with its static facts and latest sample
//   GET    /control/v1/drain      drain state
//   POST   /control/v1/drain      stop admitting new work (readyz turns 503)
//   DELETE /control/v1/drain      admit work again
//
// Runs on the HTTP loop thread; never blocks (device figures come from the
// sampler's last reading, not from the devices).
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <vector>

#include "daemon/http/http_server.h"
#include "daemon/node_state.h"
#include "devices/device.h"
#include "nlohmann/json.hpp"

namespace tokenmill::daemon {

// Latest samples, index-aligned with the device list.
using SampleSource = std::function<std::vector<devices::DeviceSample>()>;

class ControlApi {
 public:
  ControlApi(NodeState& state, std::vector<const devices::Device*> devices, SampleSource samples);

  // Handles the request if its path is one of the control endpoints and
  // returns true; returns false to let another API take it.
  bool Handle(const http::HttpRequest& request, const http::ResponseWriterPtr& response);

  // The "store" object of /control/v1/node (omitted when unset).
  void set_store_source(std::function<nlohmann::json()> source) { store_ = std::move(source); }
  // A device's vendor facts (its backend's DetailsJson), shown under the
  // device's kind ("cpu", "cuda", a plugin's kind); unset or null: omitted.
  void set_details_source(std::function<nlohmann::json(const devices::Device&)> source) {
    details_ = std::move(source);
  }
  // The "capacity" object of /control/v1/node (omitted when unset).
  void set_capacity_source(std::function<nlohmann::json()> source) {
    capacity_ = std::move(source);
  }
  // How many of the models the node started with are still loading: /readyz
  // is 503 until that is 0 once (a model that fails has settled too; models
  // loaded later through the API never make the node unready). Unset: none.
  void set_startup_loading_source(std::function<size_t()> source) {
    startup_loading_ = std::move(source);
  }

  nlohmann::json NodeJson() const;
  nlohmann::json DevicesJson() const;

 private:
  NodeState& state_;
  std::vector<const devices::Device*> devices_;
  SampleSource samples_;
  std::function<nlohmann::json()> store_;
  std::function<nlohmann::json(const devices::Device&)> details_;
  std::function<nlohmann::json()> capacity_;
  std::function<size_t()> startup_loading_;
  std::atomic<bool> startup_settled_{false};
};

// Answers a request no API took: 404 for unknown paths.
void SendNotFound(const http::HttpRequest& request, http::ResponseWriter& response);

}  // namespace tokenmill::daemon
