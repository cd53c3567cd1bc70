// DeviceArbiter: grants one device's steps to the model instances on it, one
// at a time. Each step holds the device exclusively, so its device time is
// known exactly (for cost attribution), and grants follow weighted fair
// queuing on device time: a client's virtual time grows by the device time
// it used divided by its weight (the summed weights of its tenants with
// work), and the waiting client with the lowest virtual time goes next. A
// client that starts waiting after an idle spell is lifted to the lowest
// virtual time among the others, so idling banks no credit. A busy model
// therefore cannot starve a quiet one: the quiet one is at the front as soon
// as it has work.
//
// Thread-safe: every engine thread on the device calls it.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"

namespace tokenmill::runtime {

struct ArbiterClientStats {
  std::string name;
  uint64_t grants = 0;
  std::chrono::nanoseconds device_time{0};
  bool waiting = false;  // blocked in Acquire or Next right now
};

class DeviceArbiter {
 public:
  explicit DeviceArbiter(std::string device) : device_(std::move(device)) {}
  DeviceArbiter(const DeviceArbiter&) = delete;
  DeviceArbiter& operator=(const DeviceArbiter&) = delete;

  // A new client (one per model instance); its id for the calls below.
  uint32_t Register(std::string name);
  // Forgets a client that holds nothing and waits for nothing.
  void Unregister(uint32_t client);

  // Blocks until the device is the client's. weight > 0.
  void Acquire(uint32_t client, double weight);
  // Gives the device back, charging `used` device time to the client.
  void Release(uint32_t client, std::chrono::nanoseconds used);
  // Release followed by Acquire in one step, for a client with more work:
  // it competes for the next grant by virtual time instead of losing it to
  // whoever happened to be waiting at the moment of release.
  void Next(uint32_t client, std::chrono::nanoseconds used, double weight);
  // The client has no work: its next Acquire is lifted to the others'
  // lowest virtual time.
  void Idle(uint32_t client);

  // Device time granted since creation, all clients together (the rest of
  // the wall time is idle; issue 5 prices it).
  std::chrono::nanoseconds busy_time() const;
  std::vector<ArbiterClientStats> Stats() const;
  const std::string& device() const { return device_; }

 private:
  struct Client {
    std::string name;
    double vtime = 0.0;  // seconds of device time / weight
    double weight = 1.0;
    bool waiting = false;
    bool active = false;  // has had work since its last Idle()
    uint64_t wait_order = 0;
    uint64_t grants = 0;
    std::chrono::nanoseconds device_time{0};
  };

  // The waiting client that goes next; -1 if none.
  int64_t NextLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ChargeLocked(Client& client, std::chrono::nanoseconds used)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Marks the client waiting and blocks until it holds the device.
  void WaitTurnLocked(uint32_t id, Client& client) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string device_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<uint32_t, Client> clients_ ABSL_GUARDED_BY(mu_);
  uint32_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  int64_t holder_ ABSL_GUARDED_BY(mu_) = -1;
  uint64_t next_wait_order_ ABSL_GUARDED_BY(mu_) = 0;
  std::chrono::nanoseconds busy_ ABSL_GUARDED_BY(mu_){0};
};

}  // namespace tokenmill::runtime
