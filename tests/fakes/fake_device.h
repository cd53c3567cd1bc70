// FakeDevice: a devices::Device whose facts and readings a test sets.
//
// Header-only so that any test suite can use it without a library. Every
// member is thread-safe, so a test may change the next sample while a sampler
// thread reads it.
#pragma once

#include <cstdint>
#include <string>
#include <utility>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "devices/device.h"

namespace tokenmill::fakes {

class FakeDevice : public devices::Device {
 public:
  // A device with only an id: kind cpu, no memory, and a sample with no
  // figures (every optional empty, memory 0).
  explicit FakeDevice(std::string id) { info_.id = std::move(id); }
  explicit FakeDevice(devices::DeviceInfo info) : info_(std::move(info)) {}

  // The reference stays valid for the device's lifetime; its content changes
  // only through SetInfo(), which a test calls before sharing the device.
  const devices::DeviceInfo& Info() const override {
    absl::MutexLock lock(&mu_);
    return info_;
  }

  // Returns the sample last given to SetNextSample() (the same one on every
  // call until it is changed) and counts the call.
  devices::DeviceSample Sample() override {
    absl::MutexLock lock(&mu_);
    ++sample_calls_;
    return next_sample_;
  }

  void SetInfo(devices::DeviceInfo info) {
    absl::MutexLock lock(&mu_);
    info_ = std::move(info);
  }

  void SetNextSample(devices::DeviceSample sample) {
    absl::MutexLock lock(&mu_);
    next_sample_ = std::move(sample);
  }

  // How many times Sample() ran.
  uint64_t sample_calls() const {
    absl::MutexLock lock(&mu_);
    return sample_calls_;
  }

  // Until Sample() has run n times; false when `timeout` passed first.
  bool AwaitSampleCalls(uint64_t n, absl::Duration timeout) const {
    absl::MutexLock lock(&mu_);
    auto reached = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return sample_calls_ >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&reached), timeout);
  }

 private:
  mutable absl::Mutex mu_;
  devices::DeviceInfo info_ ABSL_GUARDED_BY(mu_);
  devices::DeviceSample next_sample_ ABSL_GUARDED_BY(mu_);
  uint64_t sample_calls_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace tokenmill::fakes
