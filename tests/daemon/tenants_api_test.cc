#include "daemon/tenants_api.h"

#include <memory>

#include "gtest/gtest.h"
#include "storage/meter_store.h"
#include "tests/daemon/fake_response.h"
#include "tests/support/store_reads.h"
#include "tests/support/temp_dir.h"

namespace tokenmill::daemon {
namespace {

using nlohmann::json;
using testing::FakeResponse;
using testing::Request;

class TenantsApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    storage::MeterStoreOptions options;
    options.dir = dir_.path() / "store";
    auto store = storage::MeterStore::Open(options);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    tenants::TenantPolicy config;
    config.name = "from-config";
    config.source = tenants::TenantSource::kConfig;
    ASSERT_TRUE(registry_.Put(config).ok());
    api_ = std::make_unique<TenantsApi>(registry_, store_.get(), "/etc/tokenmill/node.toml");
  }

  std::shared_ptr<FakeResponse> Call(std::string method, std::string path, std::string body = "") {
    auto response = std::make_shared<FakeResponse>();
    EXPECT_TRUE(
        api_->Handle(Request(std::move(method), std::move(path), std::move(body)), response));
    return response;
  }

  tokenmill::testing::TempDir dir_;
  tenants::TenantRegistry registry_;
  storage::MeterStorePtr store_;
  std::unique_ptr<TenantsApi> api_;
};

TEST_F(TenantsApiTest, PutGetListDelete) {
  json body = {{"weight", 2.5},
               {"kv_reserved_blocks", 10},
               {"kv_max_fraction", 0.5},
               {"rate_limit_tokens_per_s", 100},
               {"schema_compile_s_per_min", 3},
               {"max_concurrent", 4},
               {"max_queue", 8},
               {"cache_group", "g"},
               {"models", json::array({"llama"})},
               {"price_input_per_mtok", 0.1},
               {"price_output_per_mtok", 0.2},
               {"api_keys", json::array({"secret-1"})},
               {"api_keys_sha256", json::array({tenants::ApiKeySha256("secret-2")})}};
  auto put = Call("PUT", "/control/v1/tenants/acme", body.dump());
  ASSERT_EQ(put->status, 200) << put->body;
  json tenant = put->Json();
  EXPECT_EQ(tenant["name"], "acme");
  EXPECT_EQ(tenant["weight"], 2.5);
  EXPECT_EQ(tenant["kv_reserved_blocks"], 10);
  EXPECT_EQ(tenant["max_queue"], 8);
  EXPECT_EQ(tenant["models"], json::array({"llama"}));
  EXPECT_EQ(tenant["source"], "api");
  EXPECT_EQ(tenant["api_key_count"], 2);
  EXPECT_EQ(tenant["in_flight"], 0);
  EXPECT_FALSE(tenant.contains("api_keys"));
  EXPECT_FALSE(tenant.contains("api_keys_sha256"));
  EXPECT_EQ(put->body.find("secret-1"), std::string::npos);

  ASSERT_TRUE(registry_.FindByApiKey("secret-1").has_value());
  ASSERT_TRUE(registry_.FindByApiKey("secret-2").has_value());

  // Persisted with hashes only; the stored form reads back to the same policy.
  auto stored = ::tokenmill::testing::StateValue(*store_, "tenant/acme");
  ASSERT_TRUE(stored.ok() && stored->has_value());
  EXPECT_EQ((*stored)->find("secret-1"), std::string::npos);
  auto restored = ParseTenantBody("acme", **stored);
  ASSERT_TRUE(restored.ok()) << restored.status();
  EXPECT_EQ(*restored, *registry_.Get("acme"));

  auto one = Call("GET", "/control/v1/tenants/acme");
  EXPECT_EQ(one->status, 200);
  EXPECT_EQ(one->Json()["rate_limit_tokens_per_s"], 100);
  EXPECT_EQ(one->Json()["schema_compile_s_per_min"], 3);
  auto list = Call("GET", "/control/v1/tenants");
  ASSERT_EQ(list->Json()["tenants"].size(), 2u);
  EXPECT_EQ(list->Json()["tenants"][0]["name"], "acme");
  EXPECT_EQ(list->Json()["tenants"][1]["source"], "config");

  // A second PUT replaces the whole tenant: missing fields take defaults.
  auto replaced = Call("PUT", "/control/v1/tenants/acme", R"({"weight":1})");
  ASSERT_EQ(replaced->status, 200);
  EXPECT_EQ(replaced->Json()["api_key_count"], 0);
  EXPECT_EQ(replaced->Json()["max_queue"], 256);
  EXPECT_FALSE(registry_.FindByApiKey("secret-1").has_value());

  auto deleted = Call("DELETE", "/control/v1/tenants/acme");
  EXPECT_EQ(deleted->status, 200);
  EXPECT_FALSE(registry_.Get("acme").has_value());
  stored = ::tokenmill::testing::StateValue(*store_, "tenant/acme");
  ASSERT_TRUE(stored.ok());
  EXPECT_FALSE(stored->has_value());
  EXPECT_EQ(Call("GET", "/control/v1/tenants/acme")->status, 404);
  EXPECT_EQ(Call("DELETE", "/control/v1/tenants/acme")->status, 404);
}

TEST_F(TenantsApiTest, ConfigTenantsAreReadOnly) {
  auto put = Call("PUT", "/control/v1/tenants/from-config", "{}");
  EXPECT_EQ(put->status, 409);
  std::string message = put->Json()["error"]["message"];
  EXPECT_NE(message.find("/etc/tokenmill/node.toml"), std::string::npos) << message;
  EXPECT_EQ(Call("DELETE", "/control/v1/tenants/from-config")->status, 409);
  EXPECT_TRUE(registry_.Get("from-config").has_value());
}

TEST_F(TenantsApiTest, BadBodiesNameTheField) {
  std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"wieght":1})", "wieght"},
      {R"({"weight":"heavy"})", "weight"},
      {R"({"weight":0})", "weight"},
      {R"({"max_queue":-1})", "max_queue"},
      {R"({"max_concurrent":5000000000})", "max_concurrent"},
      {R"({"kv_max_fraction":2})", "kv_max_fraction"},
      {R"({"models":"llama"})", "models"},
      {R"({"api_keys":[""]})", "api_keys"},
      {R"({"api_keys_sha256":["abc"]})", "api_keys_sha256[0]"},
      {R"({"name":"other"})", "name"},
      {R"({"cache_group":5})", "cache_group"},
      {R"([1,2])", "JSON object"},
      {R"(not json)", "JSON object"},
  };
  for (const auto& [body, field] : cases) {
    auto response = Call("PUT", "/control/v1/tenants/t", body);
    EXPECT_EQ(response->status, 400) << body;
    std::string message = response->Json()["error"]["message"];
    EXPECT_NE(message.find(field), std::string::npos) << body << ": " << message;
  }
  EXPECT_FALSE(registry_.Get("t").has_value());
  auto bad_name = Call("PUT", "/control/v1/tenants/bad%20name", "{}");
  EXPECT_EQ(bad_name->status, 400);
}

TEST_F(TenantsApiTest, DuplicateKeyIsConflict) {
  ASSERT_EQ(Call("PUT", "/control/v1/tenants/a", R"({"api_keys":["k"]})")->status, 200);
  auto dup = Call("PUT", "/control/v1/tenants/b", R"({"api_keys":["k"]})");
  EXPECT_EQ(dup->status, 409);
  auto stored = ::tokenmill::testing::StateValue(*store_, "tenant/b");
  ASSERT_TRUE(stored.ok());
  EXPECT_FALSE(stored->has_value());
}

TEST_F(TenantsApiTest, RoutingAndMethods) {
  auto response = std::make_shared<FakeResponse>();
  EXPECT_FALSE(api_->Handle(Request("GET", "/control/v1/models"), response));
  EXPECT_EQ(Call("POST", "/control/v1/tenants")->status, 405);
  auto post = Call("POST", "/control/v1/tenants/a");
  EXPECT_EQ(post->status, 405);
  EXPECT_EQ(post->Header("Allow"), "GET, HEAD, PUT, PATCH, DELETE");
}

TEST_F(TenantsApiTest, PatchChangesOnlyTheGivenFieldsPutReplacesAll) {
  json body = {{"api_keys", json::array({"acme-secret"})},
               {"price_input_per_mtok", 0.5},
               {"price_output_per_mtok", 1.5},
               {"max_queue", 9}};
  ASSERT_EQ(Call("PUT", "/control/v1/tenants/acme", body.dump())->status, 200);
  auto patch = Call("PATCH", "/control/v1/tenants/acme", R"({"weight":3})");
  ASSERT_EQ(patch->status, 200) << patch->body;
  json tenant = patch->Json();
  EXPECT_EQ(tenant["weight"], 3.0);
  EXPECT_EQ(tenant["api_key_count"], 1);
  EXPECT_EQ(tenant["price_input_per_mtok"], 0.5);
  EXPECT_EQ(tenant["price_output_per_mtok"], 1.5);
  EXPECT_EQ(tenant["max_queue"], 9);
  EXPECT_TRUE(registry_.FindByApiKey("acme-secret").has_value());
  // Persisted as patched: a restart restores the same tenant.
  auto stored = ::tokenmill::testing::StateValue(*store_, "tenant/acme");
  ASSERT_TRUE(stored.ok() && stored->has_value());
  auto restored = ParseTenantBody("acme", **stored);
  ASSERT_TRUE(restored.ok()) << restored.status();
  EXPECT_EQ(restored->weight, 3.0);
  EXPECT_EQ(restored->price_input_per_mtok, 0.5);
  EXPECT_EQ(restored->api_keys_sha256.size(), 1u);

  // Keys given replace the key set.
  ASSERT_EQ(Call("PATCH", "/control/v1/tenants/acme", R"({"api_keys":["new-secret"]})")->status,
            200);
  EXPECT_FALSE(registry_.FindByApiKey("acme-secret").has_value());
  EXPECT_TRUE(registry_.FindByApiKey("new-secret").has_value());

  // PUT is a full replace: what it leaves out takes the defaults.
  auto put = Call("PUT", "/control/v1/tenants/acme", R"({"weight":2})");
  ASSERT_EQ(put->status, 200) << put->body;
  EXPECT_EQ(put->Json()["api_key_count"], 0);
  EXPECT_EQ(put->Json()["price_input_per_mtok"], 0.0);

  EXPECT_EQ(Call("PATCH", "/control/v1/tenants/nobody", R"({"weight":2})")->status, 404);
  EXPECT_FALSE(registry_.Get("nobody").has_value());
  EXPECT_EQ(Call("PATCH", "/control/v1/tenants/from-config", R"({"weight":2})")->status, 409);
  EXPECT_EQ(Call("PATCH", "/control/v1/tenants/acme", R"({"weight":-1})")->status, 400);
  EXPECT_EQ(Call("PATCH", "/control/v1/tenants/acme", R"({"colour":1})")->status, 400);
  EXPECT_EQ(Call("PUT", "/control/v1/tenants/..", "{}")->status, 400);
}

TEST_F(TenantsApiTest, WorksWithoutStore) {
  TenantsApi api(registry_, nullptr, "cfg");
  auto response = std::make_shared<FakeResponse>();
  ASSERT_TRUE(api.Handle(Request("PUT", "/control/v1/tenants/x", "{}"), response));
  EXPECT_EQ(response->status, 200);
  EXPECT_TRUE(registry_.Get("x").has_value());
}

}  // namespace
}  // namespace tokenmill::daemon
