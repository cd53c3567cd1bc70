#include "runtime/tenants/tenant_registry.h"

#include <openssl/evp.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace tokenmill::tenants {
namespace {

// The payload URL under which RetryLaterError stores the delay in seconds.
constexpr char kRetryAfterPayload[] = "type.googleapis.com/tokenmill.RetryAfter";

// A full bucket holds this many seconds of the tenant's rate, so that a
// tenant idle for a while can send a short burst at twice its rate.
constexpr double kBurstSeconds = 2.0;

bool IsNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == '-';
}

bool IsName(std::string_view name, size_t max_length, bool allow_colon = false) {
  if (name.empty() || name.size() > max_length) return false;
  // Not ".", "..", a hidden-file name or something that reads as a flag: the
  // name travels in URL paths, store keys, file names and command lines.
  if (name.front() == '.' || name.front() == '-') return false;
  return std::all_of(name.begin(), name.end(),
                     [&](char c) { return IsNameChar(c) || (allow_colon && c == ':'); });
}

// A model id as the config and the models API take it: 1-64 characters.
bool IsModelName(std::string_view id) {
  return !id.empty() && id.size() <= 64 &&
         std::all_of(id.begin(), id.end(), [](char c) { return IsNameChar(c) || c == ':'; });
}

bool IsLowerHex64(std::string_view text) {
  return text.size() == 64 && std::all_of(text.begin(), text.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

using Clock = TenantRegistry::Clock;
using TimePoint = std::chrono::steady_clock::time_point;

// Tells the OnRemoved listeners that a removed tenant's last request ended.
// Shared with the admission states, which may outlive the registry.
struct RemovalHub {
  absl::Mutex mu;
  std::vector<std::function<void(const std::string&)>> listeners ABSL_GUARDED_BY(mu);
  // Whether a tenant of this name exists (again); unset once the registry is gone.
  std::function<bool(const std::string&)> exists ABSL_GUARDED_BY(mu);

  void Removed(const std::string& name) {
    absl::MutexLock lock(&mu);
    if (!exists || exists(name)) return;
    for (const auto& listener : listeners) listener(name);
  }
};

// A token bucket that may go into debt: what is taken is known only after
// the work (generated tokens, compile time), so work starts while the level
// is >= 0 and pays by waiting afterwards.
struct Bucket {
  double rate = 0.0;      // units per second, 0 = unlimited
  double capacity = 1.0;  // bucket size in units
  double level = 1.0;     // units in the bucket; < 0 = in debt
  TimePoint refilled_at{};

  // Applies a new rate and size; a full bucket stays full.
  void Configure(double new_rate, double new_capacity, TimePoint now) {
    Refill(now);
    const bool was_full = level >= capacity;
    rate = new_rate;
    capacity = new_capacity;
    if (was_full || level > capacity) level = capacity;
  }

  void Refill(TimePoint now) {
    if (now > refilled_at) {
      double seconds = std::chrono::duration<double>(now - refilled_at).count();
      level = std::min(capacity, level + seconds * rate);
      refilled_at = now;
    }
  }

  // Whole seconds (at least 1) until an in-debt bucket is back at zero.
  std::chrono::seconds UntilZero() const {
    const double seconds = std::ceil(-level / rate);
    return std::chrono::seconds(std::max<int64_t>(1, static_cast<int64_t>(seconds)));
  }
};

// One tenant's admission state. Shared by the registry entry and the tickets,
// so that a ticket releases its slot even after the tenant was removed.
struct AdmissionState {
  absl::Mutex mu;
  Bucket tokens ABSL_GUARDED_BY(mu);  // rate_limit_tokens_per_s, in tokens
  // schema_compile_s_per_min, in seconds of compile time; holds one minute's.
  Bucket compile ABSL_GUARDED_BY(mu);
  uint32_t in_flight ABSL_GUARDED_BY(mu) = 0;
  uint64_t in_flight_cap ABSL_GUARDED_BY(mu) = 0;  // 0 = unlimited
  // Set when the tenant is removed; the hub hears of it once nothing is in flight.
  std::shared_ptr<RemovalHub> removal ABSL_GUARDED_BY(mu);
  std::string removed_name ABSL_GUARDED_BY(mu);

  // Marks the tenant removed; true when the listeners are due now.
  bool MarkRemoved(std::shared_ptr<RemovalHub> hub, std::string name)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    removal = std::move(hub);
    removed_name = std::move(name);
    return in_flight == 0;
  }

  // Applies a (new) policy's limits; a full bucket stays full.
  void Configure(const TenantPolicy& policy, TimePoint now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    tokens.Configure(policy.rate_limit_tokens_per_s,
                     std::max(policy.rate_limit_tokens_per_s * kBurstSeconds, 1.0), now);
    compile.Configure(policy.schema_compile_s_per_min / 60.0, policy.schema_compile_s_per_min, now);
    if (policy.max_concurrent > 0) {
      in_flight_cap = uint64_t{policy.max_concurrent} + policy.max_queue;
    } else {
      in_flight_cap = policy.max_queue;  // 0 and 0: no cap at all
    }
  }
};

class Ticket final : public AdmissionTicket {
 public:
  Ticket(std::string tenant, std::shared_ptr<AdmissionState> state, Clock clock, uint32_t places)
      : tenant_(std::move(tenant)),
        state_(std::move(state)),
        clock_(std::move(clock)),
        places_(places) {}
  ~Ticket() override {
    std::shared_ptr<RemovalHub> hub;
    std::string name;
    {
      absl::MutexLock lock(&state_->mu);
      state_->in_flight -= places_;
      if (state_->removal != nullptr && state_->in_flight == 0) {
        hub = std::move(state_->removal);
        name = state_->removed_name;
      }
    }
    if (hub) hub->Removed(name);
  }

  void ChargeTokens(int64_t tokens) override {
    if (tokens <= 0) return;
    absl::MutexLock lock(&state_->mu);
    if (state_->tokens.rate <= 0.0) return;
    state_->tokens.Refill(clock_());
    state_->tokens.level -= static_cast<double>(tokens);
  }

  absl::Status MayCompileGrammar() override {
    absl::MutexLock lock(&state_->mu);
    Bucket& compile = state_->compile;
    if (compile.rate <= 0.0) return absl::OkStatus();
    compile.Refill(clock_());
    if (compile.level >= 0.0) return absl::OkStatus();
    return RetryLaterError(
        absl::StrCat("tenant '", tenant_, "' has spent its schema compile time (", compile.capacity,
                     " s per minute): a schema not compiled before must wait; "
                     "schemas compiled before are served"),
        compile.UntilZero());
  }

  void ChargeGrammarCompile(std::chrono::nanoseconds spent) override {
    if (spent <= std::chrono::nanoseconds::zero()) return;
    absl::MutexLock lock(&state_->mu);
    Bucket& compile = state_->compile;
    if (compile.rate <= 0.0) return;
    compile.Refill(clock_());
    compile.level -= std::chrono::duration<double>(spent).count();
  }

  const std::string& tenant() const override { return tenant_; }

 private:
  std::string tenant_;
  std::shared_ptr<AdmissionState> state_;
  Clock clock_;
  uint32_t places_;  // in-flight places held
};

struct Entry {
  TenantPolicy policy;
  std::shared_ptr<AdmissionState> admission;
};

}  // namespace

std::string TenantPolicy::CacheSalt() const {
  return cache_group.empty() ? absl::StrCat("tenant:", name) : absl::StrCat("group:", cache_group);
}

bool TenantPolicy::AllowsModel(std::string_view model_id) const {
  if (models.empty()) return true;
  return std::find(models.begin(), models.end(), model_id) != models.end();
}

absl::Status ValidateTenantPolicy(const TenantPolicy& policy) {
  auto bad = [&](std::string_view field, std::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("tenant '", policy.name, "': ", std::string(field), " ", std::string(why)));
  };
  if (!IsName(policy.name, 64)) {
    return bad("name", "must be 1-64 of [A-Za-z0-9_.-], not starting with '.' or '-'");
  }
  std::set<std::string_view> seen;
  for (size_t i = 0; i < policy.api_keys_sha256.size(); ++i) {
    const std::string& hash = policy.api_keys_sha256[i];
    std::string field = absl::StrCat("api_keys_sha256[", i, "]");
    if (!IsLowerHex64(hash)) return bad(field, "must be 64 lowercase hex digits");
    if (!seen.insert(hash).second) return bad(field, "repeats an earlier key");
  }
  if (!std::isfinite(policy.weight) || policy.weight <= 0.0) return bad("weight", "must be > 0");
  if (!std::isfinite(policy.kv_max_fraction) || policy.kv_max_fraction <= 0.0 ||
      policy.kv_max_fraction > 1.0) {
    return bad("kv_max_fraction", "must be in (0, 1]");
  }
  if (!std::isfinite(policy.rate_limit_tokens_per_s) || policy.rate_limit_tokens_per_s < 0.0) {
    return bad("rate_limit_tokens_per_s", "must be >= 0 (0 = unlimited)");
  }
  if (!std::isfinite(policy.schema_compile_s_per_min) || policy.schema_compile_s_per_min < 0.0) {
    return bad("schema_compile_s_per_min", "must be >= 0 (0 = unlimited)");
  }
  if (!policy.cache_group.empty() && !IsName(policy.cache_group, 64)) {
    return bad("cache_group",
               "must be empty or 1-64 of [A-Za-z0-9_.-], not starting with '.' or '-'");
  }
  for (size_t i = 0; i < policy.models.size(); ++i) {
    if (!IsModelName(policy.models[i])) {
      return bad(absl::StrCat("models[", i, "]"), "must be a model id: 1-64 of [A-Za-z0-9_.:-]");
    }
  }
  if (!std::isfinite(policy.price_input_per_mtok) || policy.price_input_per_mtok < 0.0) {
    return bad("price_input_per_mtok", "must be >= 0");
  }
  if (!std::isfinite(policy.price_output_per_mtok) || policy.price_output_per_mtok < 0.0) {
    return bad("price_output_per_mtok", "must be >= 0");
  }
  return absl::OkStatus();
}

std::string ApiKeySha256(std::string_view api_key) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  if (EVP_Digest(api_key.data(), api_key.size(), digest, &size, EVP_sha256(), nullptr) != 1) {
    return "";  // only when OpenSSL itself is broken; matches no key
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(size * 2);
  for (unsigned int i = 0; i < size; ++i) {
    hex.push_back(kHex[digest[i] >> 4]);
    hex.push_back(kHex[digest[i] & 0xf]);
  }
  return hex;
}

absl::Status RetryLaterError(std::string_view message, std::chrono::seconds after) {
  absl::Status status = absl::ResourceExhaustedError(std::string(message));
  status.SetPayload(kRetryAfterPayload, absl::Cord(absl::StrCat(after.count())));
  return status;
}

std::optional<std::chrono::seconds> RetryAfter(const absl::Status& status) {
  auto payload = status.GetPayload(kRetryAfterPayload);
  if (!payload) return std::nullopt;
  int64_t seconds = 0;
  if (!absl::SimpleAtoi(std::string(*payload), &seconds) || seconds < 0) return std::nullopt;
  return std::chrono::seconds(seconds);
}

struct TenantRegistry::Impl {
  Clock clock;
  mutable absl::Mutex mu;
  std::map<std::string, Entry, std::less<>> tenants ABSL_GUARDED_BY(mu);
  absl::flat_hash_map<std::string, std::string> key_owner ABSL_GUARDED_BY(mu);  // hash -> name
  absl::Mutex listeners_mu;
  std::vector<std::function<void()>> listeners ABSL_GUARDED_BY(listeners_mu);
  std::shared_ptr<RemovalHub> removal = std::make_shared<RemovalHub>();

  // Tells the removal listeners about `states` (taken off the map) now, or
  // when their last request ends. Call with `mu` not held.
  void Removed(std::vector<std::pair<std::string, std::shared_ptr<AdmissionState>>> states) {
    for (auto& [name, state] : states) {
      bool now = false;
      {
        absl::MutexLock lock(&state->mu);
        now = state->MarkRemoved(removal, name);
        if (now) state->removal = nullptr;
      }
      if (now) removal->Removed(name);
    }
  }

  void Notify() {
    std::vector<std::function<void()>> copy;
    {
      absl::MutexLock lock(&listeners_mu);
      copy = listeners;
    }
    for (const auto& listener : copy) listener();
  }

  void RebuildKeyIndex() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    key_owner.clear();
    for (const auto& [name, entry] : tenants) {
      for (const auto& hash : entry.policy.api_keys_sha256) key_owner[hash] = name;
    }
  }

  // Installs `policy` under its name, keeping the admission state of a
  // tenant of that name.
  void Install(TenantPolicy policy, TimePoint now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    Entry& entry = tenants[policy.name];
    bool fresh = entry.admission == nullptr;
    if (fresh) entry.admission = std::make_shared<AdmissionState>();
    {
      absl::MutexLock lock(&entry.admission->mu);
      if (fresh) entry.admission->tokens.refilled_at = now;
      if (fresh) entry.admission->compile.refilled_at = now;
      entry.admission->Configure(policy, now);
      if (fresh) entry.admission->tokens.level = entry.admission->tokens.capacity;
      if (fresh) entry.admission->compile.level = entry.admission->compile.capacity;
    }
    entry.policy = std::move(policy);
  }
};

TenantRegistry::TenantRegistry(Clock clock) : impl_(std::make_unique<Impl>()) {
  impl_->clock = std::move(clock);
  Impl* impl = impl_.get();
  absl::MutexLock lock(&impl_->removal->mu);
  impl_->removal->exists = [impl](const std::string& name) {
    absl::MutexLock lock(&impl->mu);
    return impl->tenants.contains(name);
  };
}

TenantRegistry::~TenantRegistry() {
  absl::MutexLock lock(&impl_->removal->mu);
  impl_->removal->exists = nullptr;
}

absl::Status TenantRegistry::Put(TenantPolicy policy) {
  if (auto status = ValidateTenantPolicy(policy); !status.ok()) return status;
  {
    absl::MutexLock lock(&impl_->mu);
    for (const auto& hash : policy.api_keys_sha256) {
      auto it = impl_->key_owner.find(hash);
      if (it != impl_->key_owner.end() && it->second != policy.name) {
        return absl::AlreadyExistsError(absl::StrCat(
            "tenant '", policy.name, "': an API key is already used by tenant '", it->second, "'"));
      }
    }
    impl_->Install(std::move(policy), impl_->clock());
    impl_->RebuildKeyIndex();
  }
  impl_->Notify();
  return absl::OkStatus();
}

absl::Status TenantRegistry::Remove(std::string_view name) {
  std::vector<std::pair<std::string, std::shared_ptr<AdmissionState>>> removed;
  {
    absl::MutexLock lock(&impl_->mu);
    auto it = impl_->tenants.find(name);
    if (it == impl_->tenants.end()) {
      return absl::NotFoundError(absl::StrCat("no tenant '", std::string(name), "'"));
    }
    removed.emplace_back(it->first, it->second.admission);
    impl_->tenants.erase(it);
    impl_->RebuildKeyIndex();
  }
  impl_->Notify();
  impl_->Removed(std::move(removed));
  return absl::OkStatus();
}

absl::Status TenantRegistry::ReplaceConfigTenants(std::vector<TenantPolicy> tenants) {
  std::set<std::string, std::less<>> names;
  for (auto& policy : tenants) {
    policy.source = TenantSource::kConfig;
    if (auto status = ValidateTenantPolicy(policy); !status.ok()) return status;
    if (!names.insert(policy.name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("tenant '", policy.name, "' is defined twice"));
    }
  }
  std::vector<std::pair<std::string, std::shared_ptr<AdmissionState>>> removed;
  {
    absl::MutexLock lock(&impl_->mu);
    // Check the key hashes of the new set together with the API tenants that stay.
    std::map<std::string, std::string, std::less<>> owner;  // hash -> name
    auto claim = [&](const TenantPolicy& policy) -> absl::Status {
      for (const auto& hash : policy.api_keys_sha256) {
        auto [it, inserted] = owner.emplace(hash, policy.name);
        if (!inserted) {
          return absl::AlreadyExistsError(absl::StrCat("tenant '", policy.name,
                                                       "': an API key is already used by tenant '",
                                                       it->second, "'"));
        }
      }
      return absl::OkStatus();
    };
    for (const auto& [name, entry] : impl_->tenants) {
      if (entry.policy.source == TenantSource::kApi && !names.contains(name)) {
        if (auto status = claim(entry.policy); !status.ok()) return status;
      }
    }
    for (const auto& policy : tenants) {
      if (auto status = claim(policy); !status.ok()) return status;
    }
    // Valid: drop the config tenants that are gone, install the new set.
    for (auto it = impl_->tenants.begin(); it != impl_->tenants.end();) {
      if (it->second.policy.source == TenantSource::kConfig && !names.contains(it->first)) {
        removed.emplace_back(it->first, it->second.admission);
        it = impl_->tenants.erase(it);
      } else {
        ++it;
      }
    }
    TimePoint now = impl_->clock();
    for (auto& policy : tenants) impl_->Install(std::move(policy), now);
    impl_->RebuildKeyIndex();
  }
  impl_->Notify();
  impl_->Removed(std::move(removed));
  return absl::OkStatus();
}

std::optional<TenantPolicy> TenantRegistry::Get(std::string_view name) const {
  absl::MutexLock lock(&impl_->mu);
  auto it = impl_->tenants.find(name);
  if (it == impl_->tenants.end()) return std::nullopt;
  return it->second.policy;
}

std::vector<TenantPolicy> TenantRegistry::List() const {
  absl::MutexLock lock(&impl_->mu);
  std::vector<TenantPolicy> list;
  list.reserve(impl_->tenants.size());
  for (const auto& [name, entry] : impl_->tenants) list.push_back(entry.policy);
  return list;
}

std::optional<TenantPolicy> TenantRegistry::FindByApiKey(std::string_view api_key) const {
  std::string hash = ApiKeySha256(api_key);
  absl::MutexLock lock(&impl_->mu);
  auto owner = impl_->key_owner.find(hash);
  if (owner == impl_->key_owner.end()) return std::nullopt;
  auto it = impl_->tenants.find(owner->second);
  if (it == impl_->tenants.end()) return std::nullopt;
  return it->second.policy;
}

absl::StatusOr<AdmissionTicketPtr> TenantRegistry::Admit(std::string_view tenant,
                                                         int64_t prompt_tokens,
                                                         uint32_t sequences) {
  sequences = std::max<uint32_t>(sequences, 1);
  std::shared_ptr<AdmissionState> state;
  {
    absl::MutexLock lock(&impl_->mu);
    auto it = impl_->tenants.find(tenant);
    if (it == impl_->tenants.end()) {
      return absl::NotFoundError(absl::StrCat("no tenant '", std::string(tenant), "'"));
    }
    state = it->second.admission;
  }
  TimePoint now = impl_->clock();
  {
    absl::MutexLock lock(&state->mu);
    if (state->in_flight_cap > 0 && sequences > state->in_flight_cap) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the request runs ", sequences, " sequences at once, more than tenant '",
          std::string(tenant),
          "' may have in flight (max_concurrent + max_queue = ", state->in_flight_cap, ")"));
    }
    if (state->in_flight_cap > 0 && uint64_t{state->in_flight} + sequences > state->in_flight_cap) {
      return RetryLaterError(absl::StrCat("tenant '", std::string(tenant), "' has ",
                                          state->in_flight, " sequences in flight; ", sequences,
                                          " more would pass its limit "
                                          "(max_concurrent + max_queue = ",
                                          state->in_flight_cap, ")"),
                             std::chrono::seconds(1));
    }
    if (Bucket& bucket = state->tokens; bucket.rate > 0.0) {
      bucket.Refill(now);
      if (bucket.level < 0.0) {
        return RetryLaterError(
            absl::StrCat("tenant '", std::string(tenant), "' is over its rate limit of ",
                         bucket.rate, " tokens/s"),
            bucket.UntilZero());
      }
      bucket.level -= static_cast<double>(std::max<int64_t>(prompt_tokens, 0));
    }
    state->in_flight += sequences;
  }
  return std::make_unique<Ticket>(std::string(tenant), std::move(state), impl_->clock, sequences);
}

uint32_t TenantRegistry::InFlight(std::string_view tenant) const {
  std::shared_ptr<AdmissionState> state;
  {
    absl::MutexLock lock(&impl_->mu);
    auto it = impl_->tenants.find(tenant);
    if (it == impl_->tenants.end()) return 0;
    state = it->second.admission;
  }
  absl::MutexLock lock(&state->mu);
  return state->in_flight;
}

void TenantRegistry::OnChange(std::function<void()> listener) {
  absl::MutexLock lock(&impl_->listeners_mu);
  impl_->listeners.push_back(std::move(listener));
}

void TenantRegistry::OnRemoved(std::function<void(const std::string& name)> listener) {
  absl::MutexLock lock(&impl_->removal->mu);
  impl_->removal->listeners.push_back(std::move(listener));
}

}  // namespace tokenmill::tenants
