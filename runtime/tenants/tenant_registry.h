// TenantRegistry: the node's tenants (from the config and the tenants API),
// their API keys (SHA-256 only, never the key), and admission: a per-tenant
// token bucket, a cap on requests in flight and a bounded queue. Past them a
// request is refused with kResourceExhausted carrying a Retry-After.
//
// Thread-safe: the HTTP loop admits requests, engine threads release them,
// the supervisor replaces the config's tenants on SIGHUP.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tokenmill::tenants {

enum class TenantSource { kConfig, kApi };

// One tenant's settings; fields as in the config's [[tenant]].
struct TenantPolicy {
  std::string name;                          // [A-Za-z0-9_.-]{1,64}, not starting with '.' or '-'
  std::vector<std::string> api_keys_sha256;  // lowercase hex, 64 chars each
  double weight = 1.0;                       // fair-share weight, > 0
  uint64_t kv_reserved_blocks = 0;
  double kv_max_fraction = 1.0;          // (0, 1]
  double rate_limit_tokens_per_s = 0.0;  // 0 = unlimited
  // Encode-pool time a tenant may spend compiling response_format schemas
  // and forced tool calls not compiled before (cached ones are free), in
  // seconds per minute; 0 = unlimited. See AdmissionTicket.
  double schema_compile_s_per_min = 10.0;
  uint32_t max_concurrent = 0;      // sequences running at once; 0 = unlimited
  uint32_t max_queue = 256;         // sequences waiting beyond max_concurrent
  std::string cache_group;          // "" = private prefix cache
  std::vector<std::string> models;  // empty = every model
  double price_input_per_mtok = 0.0;
  double price_output_per_mtok = 0.0;
  TenantSource source = TenantSource::kConfig;

  // The prefix-cache salt: "tenant:" + name, or "group:" + cache_group.
  std::string CacheSalt() const;
  bool AllowsModel(std::string_view model_id) const;
  bool operator==(const TenantPolicy&) const = default;
};

// kInvalidArgument naming the first bad field.
absl::Status ValidateTenantPolicy(const TenantPolicy& policy);

// Lowercase hex SHA-256 of an API key.
std::string ApiKeySha256(std::string_view api_key);

// A refusal that tells the client when to retry: kResourceExhausted with the
// delay in a payload; RetryAfter() reads it back (nullopt when absent).
absl::Status RetryLaterError(std::string_view message, std::chrono::seconds after);
std::optional<std::chrono::seconds> RetryAfter(const absl::Status& status);

// An admitted request's place in its tenant's limits. Releasing (destroying)
// it frees the in-flight slot. Thread-safe.
class AdmissionTicket {
 public:
  virtual ~AdmissionTicket() = default;
  // Takes generated tokens out of the tenant's token bucket (it may go
  // negative; new requests then wait until it refills).
  virtual void ChargeTokens(int64_t tokens) = 0;
  // The schema compile budget (schema_compile_s_per_min > 0), a bucket of
  // one minute's allowance that starts full and, like the token bucket, may
  // go into debt: OK while it is not in debt, else kResourceExhausted with
  // RetryAfter (time to refill to zero, at least 1 s). Ask before compiling
  // a grammar the model's cache lacks; charge the compile's thread CPU time
  // after it.
  virtual absl::Status MayCompileGrammar() = 0;
  virtual void ChargeGrammarCompile(std::chrono::nanoseconds spent) = 0;
  virtual const std::string& tenant() const = 0;
};
using AdmissionTicketPtr = std::unique_ptr<AdmissionTicket>;

class TenantRegistry {
 public:
  using Clock = std::function<std::chrono::steady_clock::time_point()>;
  explicit TenantRegistry(Clock clock = [] { return std::chrono::steady_clock::now(); });
  ~TenantRegistry();
  TenantRegistry(const TenantRegistry&) = delete;
  TenantRegistry& operator=(const TenantRegistry&) = delete;

  // Adds or replaces a tenant (validated; an API key hash already used by
  // another tenant is kAlreadyExists). Admission state (bucket, in-flight)
  // carries over a replace.
  absl::Status Put(TenantPolicy policy);
  // kNotFound when unknown. Requests in flight keep running.
  absl::Status Remove(std::string_view name);
  // Replaces every kConfig tenant with `tenants` (SIGHUP); kApi tenants stay,
  // unless one of `tenants` has the same name (the config wins). All or
  // nothing: on error nothing changes.
  absl::Status ReplaceConfigTenants(std::vector<TenantPolicy> tenants);

  std::optional<TenantPolicy> Get(std::string_view name) const;
  std::vector<TenantPolicy> List() const;  // by name
  // The tenant whose keys include this key (hashed here); nullopt if none.
  std::optional<TenantPolicy> FindByApiKey(std::string_view api_key) const;

  // Admits one request of `prompt_tokens` for `tenant` that runs
  // `sequences` (>= 1) sequences at once (OpenAI `n`): it holds that many
  // in-flight places until its ticket is released. kNotFound for an unknown
  // tenant; kInvalidArgument when `sequences` alone exceeds the in-flight
  // cap (it could never be admitted); kResourceExhausted with RetryAfter
  // when the token bucket is empty (delay = time to refill to zero, at least
  // 1 s), or when the places would pass max_concurrent + max_queue (1 s).
  // The prompt tokens are taken from the bucket on admission.
  //
  // The bucket (rate_limit_tokens_per_s > 0) holds at most 2 s of the rate
  // (at least 1 token) and starts full. "Empty" means in debt (below zero):
  // a request is admitted while the level is >= 0 however large its prompt,
  // and the prompt and generated tokens may take the level below zero, so a
  // large request is never refused forever and its cost is paid by waiting
  // afterwards. The in-flight cap is max_concurrent + max_queue; with
  // max_concurrent == 0 (unlimited running) it is max_queue, and with both 0
  // there is no cap.
  absl::StatusOr<AdmissionTicketPtr> Admit(std::string_view tenant, int64_t prompt_tokens,
                                           uint32_t sequences = 1);

  // In-flight places held for a tenant (sequences of admitted requests not
  // released).
  uint32_t InFlight(std::string_view tenant) const;

  // Called (on the changing thread, after the change) whenever a tenant is
  // put, removed or replaced. Listeners must not call back into Put/Remove.
  void OnChange(std::function<void()> listener);
  // Called once per removed tenant (Remove, or a config tenant a reload
  // dropped) when its last admitted request has ended: at once when none is
  // in flight, else on the thread that releases the last ticket; skipped when
  // a tenant of that name exists again by then. So that what is kept per
  // tenant (metric series) can go without an in-flight request bringing it
  // back. Listeners must not call into the registry's Put/Remove.
  void OnRemoved(std::function<void(const std::string& name)> listener);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tokenmill::tenants
