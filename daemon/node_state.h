// NodeState: what the control API reports about the node and what SIGHUP and
// drain change. Thread-safe: read on the loop thread, written by the
// supervisor (signals) and the loop (drain requests).
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "config/node_config.h"

namespace tokenmill::daemon {

class NodeState {
 public:
  NodeState(config::NodeConfig config, std::chrono::system_clock::time_point started_at)
      : config_(std::make_shared<const config::NodeConfig>(std::move(config))),
        started_at_(started_at),
        config_loaded_at_(started_at) {}

  std::shared_ptr<const config::NodeConfig> config() const {
    absl::MutexLock lock(&mu_);
    return config_;
  }
  std::chrono::system_clock::time_point config_loaded_at() const {
    absl::MutexLock lock(&mu_);
    return config_loaded_at_;
  }
  void SetConfig(config::NodeConfig config, std::chrono::system_clock::time_point at) {
    auto next = std::make_shared<const config::NodeConfig>(std::move(config));
    absl::MutexLock lock(&mu_);
    config_ = std::move(next);
    config_loaded_at_ = at;
  }

  // Settings changed on disk that only a restart applies (from the last reload).
  void set_restart_pending(std::vector<std::string> names) {
    absl::MutexLock lock(&mu_);
    restart_pending_ = std::move(names);
  }
  std::vector<std::string> restart_pending() const {
    absl::MutexLock lock(&mu_);
    return restart_pending_;
  }

  std::chrono::system_clock::time_point started_at() const { return started_at_; }

  // Ready: started and not draining. Draining: admits no new work.
  bool ready() const { return ready_.load() && !draining_.load(); }
  void set_ready(bool ready) { ready_.store(ready); }
  bool draining() const { return draining_.load(); }
  void set_draining(bool draining) { draining_.store(draining); }

  // Where the node listens, as bound at start (port 0 resolved). A reload
  // that edits these changes nothing until a restart, so they are kept apart
  // from config().
  struct Addresses {
    std::string socket;
    std::string tcp;          // "" when off
    std::string control_tcp;  // "" when off
    std::string metrics;      // "" when off
  };
  void set_addresses(Addresses addresses) {
    absl::MutexLock lock(&mu_);
    addresses_ = std::move(addresses);
  }
  Addresses addresses() const {
    absl::MutexLock lock(&mu_);
    return addresses_;
  }

 private:
  mutable absl::Mutex mu_;
  std::shared_ptr<const config::NodeConfig> config_ ABSL_GUARDED_BY(mu_);
  const std::chrono::system_clock::time_point started_at_;
  std::chrono::system_clock::time_point config_loaded_at_ ABSL_GUARDED_BY(mu_);
  Addresses addresses_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> restart_pending_ ABSL_GUARDED_BY(mu_);
  std::atomic<bool> ready_{false};
  std::atomic<bool> draining_{false};
};

}  // namespace tokenmill::daemon
