// DeviceSampler: device gauges and the energy counter, sampled on a thread.
#include <cmath>
#include <optional>
#include <string>
#include <utility>

#include "absl/time/time.h"
#include "telemetry/metrics.h"

namespace tokenmill::telemetry {

struct DeviceSampler::Families {
  explicit Families(prometheus::Registry& registry)
      : memory(prometheus::BuildGauge()
                   .Name("tokenmill_device_memory_bytes")
                   .Help("Device memory in bytes, by state: used or total.")
                   .Register(registry)),
        power(prometheus::BuildGauge()
                  .Name("tokenmill_device_power_watts")
                  .Help("Device power draw in watts, as last sampled.")
                  .Register(registry)),
        utilization(prometheus::BuildGauge()
                        .Name("tokenmill_device_utilization_ratio")
                        .Help("Device busy fraction (0..1), as last sampled.")
                        .Register(registry)),
        temperature(prometheus::BuildGauge()
                        .Name("tokenmill_device_temperature_celsius")
                        .Help("Device temperature in degrees Celsius, as last sampled.")
                        .Register(registry)),
        energy(prometheus::BuildCounter()
                   .Name("tokenmill_energy_joules_total")
                   .Help("Energy used by the device in joules since the daemon started.")
                   .Register(registry)) {}

  prometheus::Family<prometheus::Gauge>& memory;
  prometheus::Family<prometheus::Gauge>& power;
  prometheus::Family<prometheus::Gauge>& utilization;
  prometheus::Family<prometheus::Gauge>& temperature;
  prometheus::Family<prometheus::Counter>& energy;
};

struct DeviceSampler::PerDevice {
  devices::Device* device = nullptr;
  std::string id;
  devices::DeviceSample latest;
  // Series owned by the families; null until the device reports the figure.
  prometheus::Gauge* memory_used = nullptr;
  prometheus::Gauge* memory_total = nullptr;
  prometheus::Gauge* power = nullptr;
  prometheus::Gauge* utilization = nullptr;
  prometheus::Gauge* temperature = nullptr;
  prometheus::Counter* energy = nullptr;
  // Last energy reading; deltas from it feed the counter.
  std::optional<double> energy_baseline;
};

namespace {

// Adds the series on the first value and removes it when the figure goes
// away, so an unreadable figure is absent rather than a stale or fake value.
void SetOrRemove(prometheus::Family<prometheus::Gauge>& family, prometheus::Gauge*& gauge,
                 const prometheus::Labels& labels, std::optional<double> value) {
  if (value && std::isfinite(*value)) {
    if (gauge == nullptr) gauge = &family.Add(labels);
    gauge->Set(*value);
  } else if (gauge != nullptr) {
    family.Remove(gauge);
    gauge = nullptr;
  }
}

}  // namespace

DeviceSampler::DeviceSampler(prometheus::Registry& registry, std::vector<devices::Device*> devices,
                             std::chrono::milliseconds interval)
    : families_(std::make_unique<Families>(registry)), registry_(registry), interval_(interval) {
  for (devices::Device* device : devices) {
    auto per = std::make_unique<PerDevice>();
    per->device = device;
    per->id = device->Info().id;
    per_device_.push_back(std::move(per));
  }
  SampleOnce();
  if (interval_.count() > 0) thread_ = std::thread([this] { Run(); });
}

DeviceSampler::~DeviceSampler() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
  // The registry outlives the sampler; frozen values would be misleading.
  absl::MutexLock lock(&mu_);
  for (const auto& per : per_device_) {
    for (auto [family, gauge] : {std::pair{&families_->memory, per->memory_used},
                                 std::pair{&families_->memory, per->memory_total},
                                 std::pair{&families_->power, per->power},
                                 std::pair{&families_->utilization, per->utilization},
                                 std::pair{&families_->temperature, per->temperature}}) {
      if (gauge != nullptr) family->Remove(gauge);
    }
    if (per->energy != nullptr) families_->energy.Remove(per->energy);
  }
}

void DeviceSampler::SampleOnce() {
  absl::MutexLock lock(&mu_);
  SampleLocked();
}

void DeviceSampler::SampleLocked() {
  for (const auto& per : per_device_) {
    const devices::DeviceSample sample = per->device->Sample();
    per->latest = sample;
    const prometheus::Labels device_label{{"device", per->id}};

    // Memory totals are plain integers; a zero total means "not readable".
    const bool has_memory = sample.memory_total_bytes > 0;
    SetOrRemove(families_->memory, per->memory_total, {{"device", per->id}, {"state", "total"}},
                has_memory ? std::optional<double>(sample.memory_total_bytes) : std::nullopt);
    SetOrRemove(families_->memory, per->memory_used, {{"device", per->id}, {"state", "used"}},
                has_memory ? std::optional<double>(sample.memory_used_bytes) : std::nullopt);
    SetOrRemove(families_->power, per->power, device_label, sample.power_watts);
    SetOrRemove(families_->utilization, per->utilization, device_label, sample.utilization_ratio);
    SetOrRemove(families_->temperature, per->temperature, device_label, sample.temperature_celsius);

    // A counter never goes away once it exists: a device that briefly cannot
    // read its energy keeps its baseline, and the next reading adds the
    // energy used meanwhile.
    if (sample.energy_joules && std::isfinite(*sample.energy_joules)) {
      const double joules = *sample.energy_joules;
      if (per->energy == nullptr) per->energy = &families_->energy.Add(device_label);
      if (per->energy_baseline && joules > *per->energy_baseline) {
        per->energy->Increment(joules - *per->energy_baseline);
      }
      // Also after a reset (joules below the baseline): count from here.
      per->energy_baseline = joules;
    }
  }
}

std::vector<devices::DeviceSample> DeviceSampler::Latest() const {
  absl::MutexLock lock(&mu_);
  std::vector<devices::DeviceSample> samples;
  samples.reserve(per_device_.size());
  for (const auto& per : per_device_) samples.push_back(per->latest);
  return samples;
}

void DeviceSampler::Run() {
  absl::MutexLock lock(&mu_);
  // Waking on stop_ makes destruction prompt whatever the interval.
  while (!mu_.AwaitWithTimeout(absl::Condition(&stop_), absl::FromChrono(interval_))) {
    SampleLocked();
  }
}

}  // namespace tokenmill::telemetry
