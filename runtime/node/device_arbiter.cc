#include "runtime/node/device_arbiter.h"

#include <algorithm>
#include <limits>

namespace tokenmill::runtime {

uint32_t DeviceArbiter::Register(std::string name) {
  absl::MutexLock lock(&mu_);
  const uint32_t id = next_id_++;
  clients_[id].name = std::move(name);
  return id;
}

void DeviceArbiter::Unregister(uint32_t client) {
  absl::MutexLock lock(&mu_);
  if (holder_ == static_cast<int64_t>(client)) holder_ = -1;
  clients_.erase(client);
}

int64_t DeviceArbiter::NextLocked() const {
  int64_t best = -1;
  const Client* best_client = nullptr;
  for (const auto& [id, c] : clients_) {
    if (!c.waiting) continue;
    if (best_client == nullptr || c.vtime < best_client->vtime ||
        (c.vtime == best_client->vtime && c.wait_order < best_client->wait_order)) {
      best = id;
      best_client = &c;
    }
  }
  return best;
}

void DeviceArbiter::WaitTurnLocked(uint32_t id, Client& me) {
  me.waiting = true;
  me.wait_order = next_wait_order_++;
  const int64_t self = id;
  auto granted = [this, self]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return holder_ < 0 && NextLocked() == self;
  };
  mu_.Await(absl::Condition(&granted));
  me.waiting = false;
  holder_ = self;
  ++me.grants;
}

void DeviceArbiter::ChargeLocked(Client& me, std::chrono::nanoseconds used) {
  const auto charged = std::max(used, std::chrono::nanoseconds(0));
  me.vtime += std::chrono::duration<double>(charged).count() / me.weight;
  me.device_time += charged;
  busy_ += charged;
}

void DeviceArbiter::Acquire(uint32_t client, double weight) {
  absl::MutexLock lock(&mu_);
  auto it = clients_.find(client);
  if (it == clients_.end()) return;  // unknown client: nothing to arbitrate
  Client& me = it->second;
  me.weight = weight > 0.0 ? weight : 1.0;
  if (!me.active) {
    // Coming back from idle: no credit for the time it did not use.
    double lowest = std::numeric_limits<double>::infinity();
    for (const auto& [id, c] : clients_) {
      if (id != client && c.active) lowest = std::min(lowest, c.vtime);
    }
    if (lowest != std::numeric_limits<double>::infinity()) me.vtime = std::max(me.vtime, lowest);
    me.active = true;
  }
  WaitTurnLocked(client, me);
}

void DeviceArbiter::Release(uint32_t client, std::chrono::nanoseconds used) {
  absl::MutexLock lock(&mu_);
  if (holder_ == static_cast<int64_t>(client)) holder_ = -1;
  auto it = clients_.find(client);
  if (it != clients_.end()) ChargeLocked(it->second, used);
}

void DeviceArbiter::Next(uint32_t client, std::chrono::nanoseconds used, double weight) {
  absl::MutexLock lock(&mu_);
  if (holder_ == static_cast<int64_t>(client)) holder_ = -1;
  auto it = clients_.find(client);
  if (it == clients_.end()) return;
  Client& me = it->second;
  ChargeLocked(me, used);
  me.weight = weight > 0.0 ? weight : 1.0;
  me.active = true;
  WaitTurnLocked(client, me);
}

void DeviceArbiter::Idle(uint32_t client) {
  absl::MutexLock lock(&mu_);
  auto it = clients_.find(client);
  if (it != clients_.end()) it->second.active = false;
}

std::chrono::nanoseconds DeviceArbiter::busy_time() const {
  absl::MutexLock lock(&mu_);
  return busy_;
}

std::vector<ArbiterClientStats> DeviceArbiter::Stats() const {
  absl::MutexLock lock(&mu_);
  std::vector<ArbiterClientStats> out;
  out.reserve(clients_.size());
  for (const auto& [id, c] : clients_) out.push_back({c.name, c.grants, c.device_time, c.waiting});
  return out;
}

}  // namespace tokenmill::runtime
