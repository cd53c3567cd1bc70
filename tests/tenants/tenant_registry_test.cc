#include "runtime/tenants/tenant_registry.h"

#include <chrono>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace tokenmill::tenants {
namespace {

using std::chrono::seconds;

// A clock the test moves by hand.
struct FakeClock {
  std::chrono::steady_clock::time_point now{std::chrono::hours(1)};
  TenantRegistry::Clock AsClock() {
    return [this] { return now; };
  }
  void Advance(std::chrono::milliseconds d) { now += d; }
};

TenantPolicy Policy(std::string name, TenantSource source = TenantSource::kApi) {
  TenantPolicy p;
  p.name = std::move(name);
  p.source = source;
  return p;
}

TEST(TenantPolicyTest, ValidationNamesTheField) {
  TenantPolicy p = Policy("acme");
  EXPECT_TRUE(ValidateTenantPolicy(p).ok());
  auto expect_bad = [](TenantPolicy q, const std::string& field) {
    absl::Status s = ValidateTenantPolicy(q);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << field;
    EXPECT_NE(std::string(s.message()).find(field), std::string::npos) << s.message();
  };
  TenantPolicy q = p;
  q.name = "bad name";
  expect_bad(q, "name");
  q = p;
  q.name = std::string(65, 'a');
  expect_bad(q, "name");
  q = p;
  q.weight = 0;
  expect_bad(q, "weight");
  q = p;
  q.kv_max_fraction = 1.5;
  expect_bad(q, "kv_max_fraction");
  q = p;
  q.rate_limit_tokens_per_s = -1;
  expect_bad(q, "rate_limit_tokens_per_s");
  q = p;
  q.schema_compile_s_per_min = -0.1;
  expect_bad(q, "schema_compile_s_per_min");
  q = p;
  q.api_keys_sha256 = {"ABC"};
  expect_bad(q, "api_keys_sha256[0]");
  q = p;
  q.api_keys_sha256 = {ApiKeySha256("k"), ApiKeySha256("k")};
  expect_bad(q, "api_keys_sha256[1]");
  q = p;
  q.cache_group = "a b";
  expect_bad(q, "cache_group");
  q = p;
  q.models = {"ok:1", ""};
  expect_bad(q, "models[1]");
  q = p;
  q.price_output_per_mtok = -0.5;
  expect_bad(q, "price_output_per_mtok");
}

TEST(TenantPolicyTest, SaltAndModels) {
  TenantPolicy p = Policy("acme");
  EXPECT_EQ(p.CacheSalt(), "tenant:acme");
  p.cache_group = "shared";
  EXPECT_EQ(p.CacheSalt(), "group:shared");
  EXPECT_TRUE(p.AllowsModel("any"));
  p.models = {"llama"};
  EXPECT_TRUE(p.AllowsModel("llama"));
  EXPECT_FALSE(p.AllowsModel("qwen"));
}

TEST(ApiKeyTest, Sha256Hex) {
  EXPECT_EQ(ApiKeySha256("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(ApiKeySha256("").size(), 64u);
}

TEST(RetryAfterTest, RoundTrip) {
  absl::Status s = RetryLaterError("slow down", seconds(7));
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE(RetryAfter(s).has_value());
  EXPECT_EQ(*RetryAfter(s), seconds(7));
  EXPECT_FALSE(RetryAfter(absl::ResourceExhaustedError("x")).has_value());
}

TEST(TenantRegistryTest, PutGetListFindByKey) {
  FakeClock clock;
  TenantRegistry registry(clock.AsClock());
  TenantPolicy b = Policy("bravo");
  b.api_keys_sha256 = {ApiKeySha256("key-b")};
  ASSERT_TRUE(registry.Put(b).ok());
  ASSERT_TRUE(registry.Put(Policy("alpha")).ok());
  std::vector<TenantPolicy> list = registry.List();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].name, "alpha");
  EXPECT_EQ(list[1].name, "bravo");
  ASSERT_TRUE(registry.FindByApiKey("key-b").has_value());
  EXPECT_EQ(registry.FindByApiKey("key-b")->name, "bravo");
  EXPECT_FALSE(registry.FindByApiKey("key-x").has_value());
  EXPECT_EQ(registry.Get("bravo"), b);
  EXPECT_FALSE(registry.Get("nobody").has_value());
  EXPECT_EQ(registry.Remove("nobody").code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(registry.Remove("bravo").ok());
  EXPECT_FALSE(registry.FindByApiKey("key-b").has_value());
  // Replacing a tenant drops its old keys from the index.
  TenantPolicy a = Policy("alpha");
  a.api_keys_sha256 = {ApiKeySha256("a1")};
  ASSERT_TRUE(registry.Put(a).ok());
  a.api_keys_sha256 = {ApiKeySha256("a2")};
  ASSERT_TRUE(registry.Put(a).ok());
  EXPECT_FALSE(registry.FindByApiKey("a1").has_value());
  EXPECT_TRUE(registry.FindByApiKey("a2").has_value());
}

TEST(TenantRegistryTest, DuplicateKeyHashRefused) {
  TenantRegistry registry;
  TenantPolicy a = Policy("a");
  a.api_keys_sha256 = {ApiKeySha256("shared")};
  ASSERT_TRUE(registry.Put(a).ok());
  TenantPolicy b = Policy("b");
  b.api_keys_sha256 = {ApiKeySha256("shared")};
  absl::Status s = registry.Put(b);
  EXPECT_EQ(s.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_FALSE(registry.Get("b").has_value());
  // The same tenant may re-put its own key.
  EXPECT_TRUE(registry.Put(a).ok());
}

TEST(TenantRegistryTest, InvalidPolicyRefused) {
  TenantRegistry registry;
  TenantPolicy p = Policy("x");
  p.weight = -1;
  EXPECT_EQ(registry.Put(p).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(registry.List().empty());
}

TEST(TenantRegistryTest, TokenBucketRefillAndRetryAfter) {
  FakeClock clock;
  TenantRegistry registry(clock.AsClock());
  TenantPolicy p = Policy("t");
  p.rate_limit_tokens_per_s = 100;  // bucket: 200 tokens (2 s)
  ASSERT_TRUE(registry.Put(p).ok());

  // A full bucket admits even a prompt bigger than it; the bucket goes into debt.
  auto first = registry.Admit("t", 500);
  ASSERT_TRUE(first.ok());
  // Debt of 300 tokens at 100/s: retry in 3 s.
  auto refused = registry.Admit("t", 1);
  ASSERT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(RetryAfter(refused.status()), seconds(3));
  clock.Advance(std::chrono::milliseconds(1500));
  refused = registry.Admit("t", 1);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(RetryAfter(refused.status()), seconds(2));  // 150 left: ceil(1.5)
  clock.Advance(std::chrono::milliseconds(1450));
  refused = registry.Admit("t", 1);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(RetryAfter(refused.status()), seconds(1));  // 5 tokens left: at least 1 s
  clock.Advance(std::chrono::milliseconds(50));
  auto second = registry.Admit("t", 10);
  ASSERT_TRUE(second.ok()) << second.status();

  // Generated tokens charged to a ticket put the bucket into debt again.
  (*second)->ChargeTokens(390);  // level 0 - 10 - 390 = -400
  refused = registry.Admit("t", 1);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(RetryAfter(refused.status()), seconds(4));

  // Refill stops at the burst capacity: after a long idle time only 200 tokens.
  clock.Advance(std::chrono::hours(1));
  auto third = registry.Admit("t", 201);
  ASSERT_TRUE(third.ok());
  refused = registry.Admit("t", 1);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(RetryAfter(refused.status()), seconds(1));
}

// The schema compile budget: a minute's allowance that starts full, may go
// into debt by what a compile cost, and refills at the allowance per minute;
// 0 never refuses. A replaced policy keeps the debt.
TEST(TenantRegistryTest, SchemaCompileBudget) {
  FakeClock clock;
  TenantRegistry registry(clock.AsClock());
  TenantPolicy p = Policy("t");
  p.schema_compile_s_per_min = 6;  // 0.1 s of compile per second
  ASSERT_TRUE(registry.Put(p).ok());
  auto ticket = registry.Admit("t", 1);
  ASSERT_TRUE(ticket.ok());
  EXPECT_TRUE((*ticket)->MayCompileGrammar().ok());
  (*ticket)->ChargeGrammarCompile(std::chrono::seconds(7));  // 6 - 7 = -1 s
  absl::Status refused = (*ticket)->MayCompileGrammar();
  ASSERT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(RetryAfter(refused), seconds(10));  // 1 s of debt at 0.1 s/s
  EXPECT_NE(std::string(refused.message()).find("schema compile"), std::string::npos) << refused;
  // Another request of the tenant sees the same budget; the token bucket is
  // unlimited, so it is admitted and refused only compiling.
  auto other = registry.Admit("t", 1);
  ASSERT_TRUE(other.ok());
  EXPECT_FALSE((*other)->MayCompileGrammar().ok());
  clock.Advance(std::chrono::seconds(9));
  refused = (*ticket)->MayCompileGrammar();
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(RetryAfter(refused), seconds(1));  // 0.1 s left: at least 1 s
  p.weight = 2;                                // a replace keeps the level
  ASSERT_TRUE(registry.Put(p).ok());
  EXPECT_FALSE((*ticket)->MayCompileGrammar().ok());
  clock.Advance(std::chrono::seconds(1));
  EXPECT_TRUE((*other)->MayCompileGrammar().ok());
  // Refill stops at one minute's allowance.
  clock.Advance(std::chrono::hours(1));
  (*ticket)->ChargeGrammarCompile(std::chrono::milliseconds(6100));
  EXPECT_FALSE((*ticket)->MayCompileGrammar().ok());

  // 0: unlimited.
  TenantPolicy free = Policy("free");
  free.schema_compile_s_per_min = 0;
  ASSERT_TRUE(registry.Put(free).ok());
  auto unlimited = registry.Admit("free", 1);
  ASSERT_TRUE(unlimited.ok());
  (*unlimited)->ChargeGrammarCompile(std::chrono::hours(1));
  EXPECT_TRUE((*unlimited)->MayCompileGrammar().ok());
}

TEST(TenantRegistryTest, UnlimitedRateNeverRefusesOnTokens) {
  FakeClock clock;
  TenantRegistry registry(clock.AsClock());
  TenantPolicy p = Policy("t");
  p.max_queue = 0;
  ASSERT_TRUE(registry.Put(p).ok());
  std::vector<AdmissionTicketPtr> tickets;
  for (int i = 0; i < 1000; ++i) {
    auto t = registry.Admit("t", 1'000'000);
    ASSERT_TRUE(t.ok());
    (*t)->ChargeTokens(1'000'000);
    tickets.push_back(std::move(*t));
  }
  EXPECT_EQ(registry.InFlight("t"), 1000u);
}

TEST(TenantRegistryTest, InFlightCap) {
  TenantRegistry registry;
  TenantPolicy p = Policy("t");
  p.max_concurrent = 2;
  p.max_queue = 1;
  ASSERT_TRUE(registry.Put(p).ok());
  std::vector<AdmissionTicketPtr> tickets;
  for (int i = 0; i < 3; ++i) {
    auto t = registry.Admit("t", 1);
    ASSERT_TRUE(t.ok());
    EXPECT_EQ((*t)->tenant(), "t");
    tickets.push_back(std::move(*t));
  }
  EXPECT_EQ(registry.InFlight("t"), 3u);
  auto refused = registry.Admit("t", 1);
  ASSERT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(RetryAfter(refused.status()), seconds(1));
  tickets.pop_back();
  EXPECT_EQ(registry.InFlight("t"), 2u);
  EXPECT_TRUE(registry.Admit("t", 1).ok());  // admitted and released at once
  EXPECT_EQ(registry.InFlight("t"), 2u);
}

// A request of n sequences holds n places until its ticket goes.
TEST(TenantRegistryTest, RequestsHoldOnePlacePerSequence) {
  TenantRegistry registry;
  TenantPolicy p = Policy("t");
  p.max_concurrent = 2;
  p.max_queue = 1;
  ASSERT_TRUE(registry.Put(p).ok());
  auto two = registry.Admit("t", 1, 2);
  ASSERT_TRUE(two.ok()) << two.status();
  EXPECT_EQ(registry.InFlight("t"), 2u);
  auto refused = registry.Admit("t", 1, 2);
  ASSERT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(RetryAfter(refused.status()), seconds(1));
  auto one = registry.Admit("t", 1, 1);
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(registry.InFlight("t"), 3u);
  two->reset();
  EXPECT_EQ(registry.InFlight("t"), 1u);
  // More sequences than the cap could ever hold: a client error, not a retry.
  auto never = registry.Admit("t", 1, 4);
  EXPECT_EQ(never.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(RetryAfter(never.status()).has_value());
  EXPECT_EQ(registry.InFlight("t"), 1u);
}

TEST(TenantRegistryTest, UnlimitedConcurrencyCapsAtMaxQueue) {
  TenantRegistry registry;
  TenantPolicy p = Policy("t");
  p.max_concurrent = 0;
  p.max_queue = 2;
  ASSERT_TRUE(registry.Put(p).ok());
  auto a = registry.Admit("t", 1);
  auto b = registry.Admit("t", 1);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_FALSE(registry.Admit("t", 1).ok());
}

TEST(TenantRegistryTest, AdmitUnknownTenant) {
  TenantRegistry registry;
  EXPECT_EQ(registry.Admit("ghost", 1).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(registry.InFlight("ghost"), 0u);
}

TEST(TenantRegistryTest, AdmissionStateCarriesOverReplace) {
  FakeClock clock;
  TenantRegistry registry(clock.AsClock());
  TenantPolicy p = Policy("t");
  p.rate_limit_tokens_per_s = 10;
  p.max_concurrent = 1;
  p.max_queue = 0;
  ASSERT_TRUE(registry.Put(p).ok());
  auto held = registry.Admit("t", 100);  // debt: 100 - 20 = 80 tokens
  ASSERT_TRUE(held.ok());
  p.weight = 3;
  ASSERT_TRUE(registry.Put(p).ok());
  EXPECT_EQ(registry.InFlight("t"), 1u);
  auto refused = registry.Admit("t", 1);
  ASSERT_FALSE(refused.ok());
  held->reset();
  refused = registry.Admit("t", 1);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(RetryAfter(refused.status()), seconds(8));  // still in debt
}

TEST(TenantRegistryTest, TicketsOutliveRemovedTenant) {
  TenantRegistry registry;
  ASSERT_TRUE(registry.Put(Policy("t")).ok());
  auto ticket = registry.Admit("t", 5);
  ASSERT_TRUE(ticket.ok());
  ASSERT_TRUE(registry.Remove("t").ok());
  (*ticket)->ChargeTokens(3);
  ticket->reset();  // must not touch freed state (ASan checks)
  // A new tenant of the same name starts fresh.
  ASSERT_TRUE(registry.Put(Policy("t")).ok());
  EXPECT_EQ(registry.InFlight("t"), 0u);
  auto again = registry.Admit("t", 5);
  ASSERT_TRUE(again.ok());
  ASSERT_TRUE(registry.Put(Policy("t")).ok());  // replaced while in flight
  EXPECT_EQ(registry.InFlight("t"), 1u);
  again->reset();
  EXPECT_EQ(registry.InFlight("t"), 0u);
}

TEST(TenantRegistryTest, ReplaceConfigTenantsKeepsApiTenants) {
  TenantRegistry registry;
  int changes = 0;
  registry.OnChange([&] { ++changes; });
  ASSERT_TRUE(registry.Put(Policy("api-only", TenantSource::kApi)).ok());
  ASSERT_TRUE(registry.Put(Policy("shadowed", TenantSource::kApi)).ok());
  ASSERT_TRUE(registry.ReplaceConfigTenants({Policy("c1"), Policy("c2")}).ok());
  EXPECT_EQ(registry.List().size(), 4u);
  EXPECT_EQ(registry.Get("c1")->source, TenantSource::kConfig);

  // c2 goes away; the config now defines "shadowed", which wins over the API tenant.
  TenantPolicy shadowed = Policy("shadowed", TenantSource::kConfig);
  shadowed.weight = 5;
  ASSERT_TRUE(registry.ReplaceConfigTenants({Policy("c1"), shadowed}).ok());
  std::vector<TenantPolicy> list = registry.List();
  ASSERT_EQ(list.size(), 3u);
  EXPECT_EQ(list[0].name, "api-only");
  EXPECT_EQ(list[0].source, TenantSource::kApi);
  EXPECT_EQ(list[1].name, "c1");
  EXPECT_EQ(list[2].name, "shadowed");
  EXPECT_EQ(list[2].source, TenantSource::kConfig);
  EXPECT_EQ(list[2].weight, 5);
  EXPECT_EQ(changes, 4);
}

TEST(TenantRegistryTest, ReplaceConfigTenantsIsAllOrNothing) {
  TenantRegistry registry;
  TenantPolicy api = Policy("api", TenantSource::kApi);
  api.api_keys_sha256 = {ApiKeySha256("api-key")};
  ASSERT_TRUE(registry.Put(api).ok());
  ASSERT_TRUE(registry.ReplaceConfigTenants({Policy("old")}).ok());
  std::vector<TenantPolicy> before = registry.List();

  TenantPolicy bad = Policy("bad");
  bad.kv_max_fraction = 0;
  EXPECT_EQ(registry.ReplaceConfigTenants({Policy("new"), bad}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.List(), before);

  EXPECT_EQ(registry.ReplaceConfigTenants({Policy("dup"), Policy("dup")}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.List(), before);

  // A config tenant reusing the API tenant's key hash.
  TenantPolicy thief = Policy("thief");
  thief.api_keys_sha256 = {ApiKeySha256("api-key")};
  EXPECT_EQ(registry.ReplaceConfigTenants({Policy("new"), thief}).code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(registry.List(), before);
  EXPECT_EQ(registry.FindByApiKey("api-key")->name, "api");

  // But a config tenant that replaces the API tenant of the same name may take its key.
  TenantPolicy takeover = Policy("api");
  takeover.api_keys_sha256 = {ApiKeySha256("api-key")};
  ASSERT_TRUE(registry.ReplaceConfigTenants({takeover}).ok());
  EXPECT_EQ(registry.FindByApiKey("api-key")->source, TenantSource::kConfig);
  EXPECT_FALSE(registry.Get("old").has_value());
}

}  // namespace
}  // namespace tokenmill::tenants

namespace tokenmill::tenants {
namespace {

TEST(TenantPolicyTest, NamesAreSafeInPathsAndCommandLines) {
  for (const char* bad : {".", "..", ".hidden", "-rf", "a/b", "a:b", ""}) {
    absl::Status s = ValidateTenantPolicy(Policy(bad));
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << "'" << bad << "'";
  }
  EXPECT_FALSE(ValidateTenantPolicy(Policy(std::string(65, 'a'))).ok());
  for (const char* good : {"a", "a.b", "a..b", "_x", "0", "acme-corp_2.eu"}) {
    EXPECT_TRUE(ValidateTenantPolicy(Policy(good)).ok()) << good;
  }
  EXPECT_TRUE(ValidateTenantPolicy(Policy(std::string(64, 'a'))).ok());
  TenantRegistry registry;
  EXPECT_EQ(registry.Put(Policy("..")).code(), absl::StatusCode::kInvalidArgument);
  // Model names in a tenant's list follow the model id limit: 64.
  TenantPolicy p = Policy("acme");
  p.models = {std::string(64, 'm')};
  EXPECT_TRUE(ValidateTenantPolicy(p).ok());
  p.models = {std::string(65, 'm')};
  EXPECT_FALSE(ValidateTenantPolicy(p).ok());
}

TEST(TenantRegistryTest, RemovalListenersHearOnceTheLastRequestEnded) {
  TenantRegistry registry;
  std::vector<std::string> removed;
  registry.OnRemoved([&](const std::string& name) { removed.push_back(name); });
  ASSERT_TRUE(registry.Put(Policy("idle")).ok());
  ASSERT_TRUE(registry.Put(Policy("busy")).ok());
  auto ticket = registry.Admit("busy", 1);
  ASSERT_TRUE(ticket.ok());

  ASSERT_TRUE(registry.Remove("idle").ok());
  EXPECT_EQ(removed, std::vector<std::string>{"idle"});
  ASSERT_TRUE(registry.Remove("busy").ok());
  EXPECT_EQ(removed, std::vector<std::string>{"idle"});  // a request still runs
  ticket->reset();
  EXPECT_EQ(removed, (std::vector<std::string>{"idle", "busy"}));

  // Back under the same name before its last request ended: not removed.
  ASSERT_TRUE(registry.Put(Policy("again")).ok());
  auto held = registry.Admit("again", 1);
  ASSERT_TRUE(held.ok());
  ASSERT_TRUE(registry.Remove("again").ok());
  ASSERT_TRUE(registry.Put(Policy("again")).ok());
  held->reset();
  EXPECT_EQ(removed.size(), 2u);

  // A config tenant a reload drops is removed too.
  ASSERT_TRUE(registry.ReplaceConfigTenants({Policy("cfg", TenantSource::kConfig)}).ok());
  ASSERT_TRUE(registry.ReplaceConfigTenants({}).ok());
  EXPECT_EQ(removed.back(), "cfg");
}

}  // namespace
}  // namespace tokenmill::tenants
