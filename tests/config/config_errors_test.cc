// NodeConfig refusals: every class of problem, its exact position and words.
#include <algorithm>
#include <cctype>
#include <ostream>
#include <string>
#include <vector>

#include "config/node_config.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/config/test_util.h"

namespace tokenmill::config {
namespace {

using testing::ErrorsOf;
using ::testing::HasSubstr;
using ::testing::StartsWith;

const std::string kKeyA(64, 'a');
const std::string kKeyB(64, 'b');

TEST(ConfigErrorsTest, StatusIsInvalidArgument) {
  absl::StatusOr<NodeConfig> config = ParseConfig("[api]\nsocket = 1\n", "t.toml");
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ConfigErrorsTest, UnknownKeySuggestsTheNearestKnownOne) {
  EXPECT_EQ(ErrorsOf("[api]\nsockett = \"/x\"\n"),
            "t.toml:2:1: unknown key 'sockett' in [api] (did you mean 'socket'?)");
  // Too far from every key for a hint.
  EXPECT_EQ(ErrorsOf("[api]\ncolour = 1\n"), "t.toml:2:1: unknown key 'colour' in [api]");
  // A nested table is an unknown key of its parent; "tls" is too short for
  // "tcp" to count as a misspelling.
  EXPECT_EQ(ErrorsOf("[api.tls]\ncert = \"x\"\n"), "t.toml:1:6: unknown key 'tls' in [api]");
}

TEST(ConfigErrorsTest, UnknownKeyInAnArrayOfTablesEntry) {
  EXPECT_EQ(ErrorsOf("[[tenant]]\nname = \"a\"\n\n[[tenant]]\nname = \"b\"\nwieght = 2\n"),
            "t.toml:6:1: unknown key 'wieght' in [[tenant]] (did you mean 'weight'?)");
  EXPECT_EQ(ErrorsOf("[[model]]\nid = \"m\"\npath = \"/m\"\ndevices = \"cpu\"\n"),
            "t.toml:4:1: unknown key 'devices' in [[model]] (did you mean 'device'?)");
  EXPECT_EQ(ErrorsOf("[[tenant]]\nname = \"a\"\n[tenant.limits]\nx = 1\n"),
            "t.toml:3:9: unknown key 'limits' in [[tenant]]");
}

TEST(ConfigErrorsTest, UnknownTablesAndTopLevelKeys) {
  EXPECT_EQ(ErrorsOf("[apii]\nsocket = \"/x\"\n"),
            "t.toml:1:1: unknown table [apii] (did you mean [api]?)");
  EXPECT_EQ(ErrorsOf("[[tenants]]\nname = \"a\"\n"),
            "t.toml:1:1: unknown table [[tenants]] (did you mean [[tenant]]?)");
  EXPECT_EQ(ErrorsOf("[http]\n"), "t.toml:1:1: unknown table [http]");
  EXPECT_EQ(ErrorsOf("durability = \"power\"\n"),
            "t.toml:1:1: unknown key 'durability' at the top level (it belongs in [storage])");
  // "name" is a key of [node] and of [[tenant]]: no single home to point to.
  EXPECT_EQ(ErrorsOf("name = \"x\"\n"), "t.toml:1:1: unknown key 'name' at the top level");
}

TEST(ConfigErrorsTest, SectionsOfTheWrongShape) {
  EXPECT_EQ(ErrorsOf("api = 3\n"), "t.toml:1:7: [api] must be a table, got integer 3");
  EXPECT_EQ(ErrorsOf("[device]\nmatch = \"cpu\"\n"),
            "t.toml:1:1: device must be an array of tables written as [[device]] sections, got "
            "table");
  EXPECT_EQ(ErrorsOf("model = [1]\n"),
            "t.toml:1:9: model must be an array of tables written as [[model]] sections, got "
            "array");
}

TEST(ConfigErrorsTest, MissingRequiredKeysPointAtTheEntry) {
  EXPECT_EQ(ErrorsOf("[[model]]\nid = \"m\"\n"),
            "t.toml:1:1: [[model]] is missing required key 'path'");
  EXPECT_EQ(ErrorsOf("[[device]]\ncost_weight = 1\n"),
            "t.toml:1:1: [[device]] is missing required key 'match'");
  EXPECT_EQ(ErrorsOf("[[tenant]]\nname = \"a\"\n[[tenant]]\nweight = 2\n"),
            "t.toml:3:1: [[tenant]] is missing required key 'name'");
}

TEST(ConfigErrorsTest, DuplicateNamesAndKeys) {
  const std::string text = "[[tenant]]\nname = \"a\"\napi_keys_sha256 = [\"" + kKeyA +
                           "\"]\n"
                           "[[tenant]]\nname = \"a\"\napi_keys_sha256 = [\"" +
                           kKeyB + "\", \"" + kKeyA + "\"]\n";
  EXPECT_EQ(ErrorsOf(text),
            "t.toml:5:8: [[tenant]].name \"a\" is already used at line 2\n"
            "t.toml:6:88: [[tenant]].api_keys_sha256 entry \"" +
                kKeyA + "\" is already used at line 3");
  // The same key twice in one tenant is a duplicate too.
  EXPECT_EQ(
      ErrorsOf("[[tenant]]\nname = \"a\"\napi_keys_sha256 = [\"" + kKeyA + "\", \"" + kKeyA +
               "\"]\n"),
      "t.toml:3:88: [[tenant]].api_keys_sha256 entry \"" + kKeyA + "\" is already used at line 3");
  EXPECT_EQ(
      ErrorsOf("[[model]]\nid = \"m\"\npath = \"/a\"\n[[model]]\nid = \"m\"\npath = \"/b\"\n"),
      "t.toml:5:6: [[model]].id \"m\" is already used at line 2");
  EXPECT_EQ(ErrorsOf("[[device]]\nmatch = \"cpu\"\n[[device]]\nmatch = \"cpu\"\n"),
            "t.toml:4:9: [[device]].match \"cpu\" is already used at line 2");
}

TEST(ConfigErrorsTest, BadArrayElementsAreReportedOneByOne) {
  const std::string upper(64, 'A');
  EXPECT_EQ(ErrorsOf("[[tenant]]\nname = \"a\"\napi_keys_sha256 = [\"" + upper + "\", 3]\n"),
            "t.toml:3:20: [[tenant]].api_keys_sha256[0] must be 64 lowercase hex characters, the "
            "SHA-256 of the API key (printf %s KEY | sha256sum), got \"" +
                upper +
                "\"\n"
                "t.toml:3:88: [[tenant]].api_keys_sha256[1] must be a string, got integer 3");
  EXPECT_EQ(ErrorsOf("[[tenant]]\nname = \"a\"\nmodels = [\"ok\", \"bad model\"]\n"),
            "t.toml:3:17: [[tenant]].models[1] may only contain letters, digits and '.', '_', "
            "':', '-', got \"bad model\"");
}

TEST(ConfigErrorsTest, AllProblemsAreReportedInFileOrder) {
  EXPECT_EQ(ErrorsOf("[api]\n"
                     "sockett = \"/x\"\n"
                     "socket_mode = 660\n"
                     "[cost]\n"
                     "pue = 0.8\n"
                     "[[tenant]]\n"
                     "name = \"a\"\n"
                     "wieght = 2\n"
                     "[bogus]\n"
                     "x = 1\n"),
            "t.toml:2:1: unknown key 'sockett' in [api] (did you mean 'socket'?)\n"
            "t.toml:3:15: [api].socket_mode must be an octal string like \"0660\", got integer "
            "660\n"
            "t.toml:5:7: [cost].pue must be >= 1, got 0.8\n"
            "t.toml:8:1: unknown key 'wieght' in [[tenant]] (did you mean 'weight'?)\n"
            "t.toml:9:1: unknown table [bogus]");
}

TEST(ConfigErrorsTest, SyntaxErrorIsOneMessageAtItsPosition) {
  const std::string errors = ErrorsOf("[api]\nsocket = \n[cost]\npue = 0.5\n");
  EXPECT_THAT(errors, StartsWith("t.toml:2:10: "));
  EXPECT_THAT(errors, HasSubstr("expected value"));
  EXPECT_EQ(errors.find('\n'), std::string::npos) << errors;
  EXPECT_THAT(ErrorsOf("[cost]\npue = 1\npue = 2\n"), StartsWith("t.toml:3:"));
}

TEST(ConfigErrorsTest, LongValuesAreShortenedInMessages) {
  const std::string long_socket = "/" + std::string(107, 's');
  EXPECT_EQ(ErrorsOf("[api]\nsocket = \"" + long_socket + "\"\n"),
            "t.toml:2:10: [api].socket must be at most 107 bytes long (the unix socket address "
            "limit), got \"" +
                long_socket.substr(0, 80) + "...\"");
  EXPECT_EQ(ErrorsOf("[api]\nsocket = \"" + long_socket.substr(0, 107) + "\"\n"), "OK");
}

// One value in one section: the message must be exactly
// "t.toml:LINE:COL: <message>" with the column of the value.
struct ValueCase {
  std::string section;  // section header, plus lines that make the entry valid
  std::string line;     // "key = value"
  std::string message;
};

// Names the case by its line, letters and digits only ("kv_memory_0_8"):
// ctest lists each case under this name, so it must be unique and stable.
void PrintTo(const ValueCase& c, std::ostream* os) {
  std::string name;
  for (char ch : c.line.substr(0, 40)) {
    const bool plain = std::isalnum(static_cast<unsigned char>(ch)) || ch == '_';
    if (plain) {
      name += ch;
    } else if (name.empty() || name.back() != '_') {
      name += '_';
    }
  }
  *os << name;
}

class ValueErrorTest : public ::testing::TestWithParam<ValueCase> {};

TEST_P(ValueErrorTest, NamesFieldRuleAndValue) {
  const ValueCase& c = GetParam();
  const int line = static_cast<int>(std::count(c.section.begin(), c.section.end(), '\n')) + 2;
  const size_t column = c.line.find(" = ") + 4;
  EXPECT_EQ(ErrorsOf(c.section + "\n" + c.line + "\n"),
            "t.toml:" + std::to_string(line) + ":" + std::to_string(column) + ": " + c.message);
}

const std::string kNotAName = "may only contain letters, digits and '.', '_', '-'";
const std::string kNotAnId = "may only contain letters, digits and '.', '_', ':', '-'";
const std::string kBadListen =
    "must be \"host:port\" with an IPv4 address, \"localhost\" or a bracketed IPv6 address "
    "(\"[::1]:8080\") as host";
const std::string kBadDuration =
    "must be a duration like \"30s\", \"500ms\" or \"2m\" (units ms, s, m, h)";
const std::string kBadPattern =
    "must be \"cpu\", \"KIND:N\" or \"KIND:*\" (\"cuda:0\", \"cuda:*\", a plugin's \"acme:1\")";
const std::string kBadChoice =
    "must be \"auto\", \"cpu\" or \"KIND:N\" (\"cuda:0\", a plugin's \"acme:1\")";
const std::string kBadKv =
    "must be a percentage like \"80%\", a size like \"8GiB\" or a byte count";
const std::string kDevice = "[[device]]\nmatch = \"cpu\"";
const std::string kModel = "[[model]]\nid = \"m\"\npath = \"/m\"";
const std::string kTenant = "[[tenant]]\nname = \"t\"";

TEST(ConfigErrorsTest, ModelRootsMustBeAbsolute) {
  EXPECT_EQ(ErrorsOf("[node]\nmodel_roots = [\"/srv/models\", \"models\"]\n"),
            "t.toml:2:31: [node].model_roots[1] must be an absolute path, got \"models\"");
}

INSTANTIATE_TEST_SUITE_P(
    Node, ValueErrorTest,
    ::testing::Values(
        ValueCase{"[node]", "name = \"gpu node\"",
                  "[node].name " + kNotAName + ", got \"gpu node\""},
        ValueCase{"[node]", "name = \"a:b\"", "[node].name " + kNotAName + ", got \"a:b\""},
        ValueCase{"[node]", "name = \"\"", "[node].name must not be empty, got \"\""},
        ValueCase{
            "[node]", "name = \"" + std::string(65, 'n') + "\"",
            "[node].name must be at most 64 characters long, got \"" + std::string(65, 'n') + "\""},
        ValueCase{"[node]", "name = 7", "[node].name must be a string, got integer 7"},
        ValueCase{"[node]", "data_dir = \"var/lib\"",
                  "[node].data_dir must be an absolute path, got \"var/lib\""},
        ValueCase{"[node]", "model_roots = \"/srv/models\"",
                  "[node].model_roots must be an array of strings, got string \"/srv/models\""}));

INSTANTIATE_TEST_SUITE_P(
    Api, ValueErrorTest,
    ::testing::Values(
        ValueCase{"[api]", "socket = \"tm.sock\"",
                  "[api].socket must be an absolute path, got \"tm.sock\""},
        ValueCase{"[api]", "socket_mode = \"0500\"",
                  "[api].socket_mode must be between \"0600\" and \"0777\" (the daemon's user "
                  "needs read and write), got \"0500\""},
        ValueCase{"[api]", "socket_mode = \"0668\"",
                  "[api].socket_mode must be an octal string like \"0660\", got \"0668\""},
        ValueCase{"[api]", "socket_mode = 0o1777",
                  "[api].socket_mode must be an octal string like \"0660\", got 0o1777"},
        ValueCase{"[api]", "tcp = \"127.0.0.1\"",
                  "[api].tcp " + kBadListen + ", got \"127.0.0.1\""},
        ValueCase{"[api]", "tcp = \"example.com:80\"",
                  "[api].tcp " + kBadListen + ", got \"example.com:80\""},
        ValueCase{"[api]", "tcp = \"127.0.0.1:65536\"",
                  "[api].tcp must end in a port from 0 to 65535 (\"host:port\"), got "
                  "\"127.0.0.1:65536\""},
        ValueCase{"[api]", "max_body_bytes = 1023",
                  "[api].max_body_bytes must be at least 1024 bytes, got 1023"},
        ValueCase{"[api]", "max_body_bytes = true",
                  "[api].max_body_bytes must be a byte count or a size like \"4MiB\", got boolean "
                  "true"},
        ValueCase{"[api]", "max_header_bytes = \"2MiB\"",
                  "[api].max_header_bytes must be between 1024 and 1048576 bytes, got \"2MiB\""},
        ValueCase{"[api]", "max_header_bytes = \"0.5KiB\"",
                  "[api].max_header_bytes must be between 1024 and 1048576 bytes, got "
                  "\"0.5KiB\""},
        ValueCase{"[api]", "idle_timeout = \"0s\"",
                  "[api].idle_timeout must be longer than zero, got \"0s\""},
        ValueCase{"[api]", "idle_timeout = -5",
                  "[api].idle_timeout must be longer than zero, got -5"},
        ValueCase{"[api]", "idle_timeout = \"5 parsecs\"",
                  "[api].idle_timeout " + kBadDuration + ", got \"5 parsecs\""},
        ValueCase{"[api]", "idle_timeout = 1.5",
                  "[api].idle_timeout must be a duration like \"30s\", \"500ms\" or \"2m\", or an "
                  "integer of milliseconds, got float 1.5"},
        ValueCase{"[api]", "max_connections = 0", "[api].max_connections must be >= 1, got 0"},
        ValueCase{"[api]", "socket_max_connections = 0",
                  "[api].socket_max_connections must be >= 1, got 0"},
        ValueCase{"[api]", "control_tcp_max_connections = -1",
                  "[api].control_tcp_max_connections must be >= 1, got -1"},
        ValueCase{"[api]", "max_buffered_output_bytes = \"32KiB\"",
                  "[api].max_buffered_output_bytes must be at least 65536 bytes, got \"32KiB\""},
        ValueCase{"[api]", "control_tcp = \"9090\"",
                  "[api].control_tcp " + kBadListen + ", got \"9090\""},
        // A control port needs the admin token's hash, well-formed.
        ValueCase{"[api]", "control_tcp = \"127.0.0.1:9090\"",
                  "[api].control_tcp needs [api].control_token_sha256, the SHA-256 of the admin "
                  "token its clients must send as \"Authorization: Bearer TOKEN\""},
        ValueCase{"[api]\ncontrol_token_sha256 = \"\"", "control_tcp = \"127.0.0.1:9090\"",
                  "[api].control_tcp needs [api].control_token_sha256, the SHA-256 of the admin "
                  "token its clients must send as \"Authorization: Bearer TOKEN\""},
        ValueCase{"[api]\ncontrol_token_sha256 = \"" + std::string(64, 'a') +
                      "\"\ntcp = \"127.0.0.1:8080\"",
                  "control_tcp = \"127.0.0.1:8080\"",
                  "[api].control_tcp must differ from [api].tcp: clients and operators get "
                  "separate listeners"},
        ValueCase{"[api]", "control_token_sha256 = \"secret\"",
                  "[api].control_token_sha256 must be 64 lowercase hex characters, the SHA-256 of "
                  "the admin token (printf %s TOKEN | sha256sum), got \"secret\""},
        ValueCase{"[api]", "control_token_sha256 = \"" + std::string(64, 'A') + "\"",
                  "[api].control_token_sha256 must be 64 lowercase hex characters, the SHA-256 of "
                  "the admin token (printf %s TOKEN | sha256sum), got \"" +
                      std::string(64, 'A') + "\""},
        ValueCase{
            "[api]",
            "control_token_sha256 = "
            "\"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\"",
            "[api].control_token_sha256 is the SHA-256 of an empty token; choose a real "
            "token, got \"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\""}));

INSTANTIATE_TEST_SUITE_P(
    MetricsStorageScheduler, ValueErrorTest,
    ::testing::Values(
        ValueCase{"[metrics]", "listen = \"localhost\"",
                  "[metrics].listen " + kBadListen + ", got \"localhost\""},
        ValueCase{"[metrics]", "listen = \"[::1]8080\"",
                  "[metrics].listen " + kBadListen + ", got \"[::1]8080\""},
        ValueCase{"[metrics]", "compat = \"prometheus\"",
                  "[metrics].compat must be \"\" (tokenmill names only) or \"vllm\" (also "
                  "vLLM's metric names), got \"prometheus\""},
        ValueCase{"[metrics]", "device_sample_interval = \"0.5ms\"",
                  "[metrics].device_sample_interval must be a whole number of milliseconds, got "
                  "\"0.5ms\""},
        ValueCase{"[storage]", "durability = \"fsync\"",
                  "[storage].durability must be \"process\" or \"power\", got \"fsync\""},
        ValueCase{"[scheduler]", "block_tokens = 12",
                  "[scheduler].block_tokens must be a power of two from 1 to 256, got 12"},
        ValueCase{"[scheduler]", "block_tokens = 512",
                  "[scheduler].block_tokens must be a power of two from 1 to 256, got 512"},
        ValueCase{"[scheduler]", "max_seqs = -1", "[scheduler].max_seqs must be >= 1, got -1"},
        ValueCase{"[scheduler]", "max_seqs = \"64\"",
                  "[scheduler].max_seqs must be an integer, got string \"64\""},
        ValueCase{"[scheduler]", "max_batch_tokens = 4294967296",
                  "[scheduler].max_batch_tokens must be at most 4294967295, got 4294967296"},
        ValueCase{"[scheduler]", "vtc_output_weight = 0",
                  "[scheduler].vtc_output_weight must be > 0, got 0"}));

INSTANTIATE_TEST_SUITE_P(
    Cost, ValueErrorTest,
    ::testing::Values(
        ValueCase{"[cost]", "currency = \"usd\"",
                  "[cost].currency must be a 3-letter upper-case currency code like \"USD\", got "
                  "\"usd\""},
        ValueCase{"[cost]", "capex = -1", "[cost].capex must be >= 0, got -1"},
        ValueCase{"[cost]", "depreciation_years = 0",
                  "[cost].depreciation_years must be > 0, got 0"},
        ValueCase{"[cost]", "power_usd_per_kwh = nan",
                  "[cost].power_usd_per_kwh must be a finite number, got nan"},
        ValueCase{"[cost]", "network_usd_per_hour = inf",
                  "[cost].network_usd_per_hour must be a finite number, got inf"},
        ValueCase{"[cost]", "pue = \"1.3\"", "[cost].pue must be a number, got string \"1.3\""},
        ValueCase{"[cost]", "prefill_token_weight = 0.0",
                  "[cost].prefill_token_weight must be > 0, got 0"}));

INSTANTIATE_TEST_SUITE_P(
    Device, ValueErrorTest,
    ::testing::Values(
        ValueCase{"[[device]]", "match = \"gpu0\"",
                  "[[device]].match " + kBadPattern + ", got \"gpu0\""},
        ValueCase{"[[device]]", "match = \"cuda:\"",
                  "[[device]].match " + kBadPattern + ", got \"cuda:\""},
        ValueCase{"[[device]]", "match = \"plugin:\"",
                  "[[device]].match " + kBadPattern + ", got \"plugin:\""},
        ValueCase{
            kDevice, "kv_memory = \"0%\"",
            "[[device]].kv_memory must be a percentage above 0% and at most 100%, got \"0%\""},
        ValueCase{kDevice, "kv_memory = \"150%\"",
                  "[[device]].kv_memory must be a percentage above 0% and at most 100%, got "
                  "\"150%\""},
        ValueCase{kDevice, "kv_memory = \"lots\"",
                  "[[device]].kv_memory " + kBadKv + ", got \"lots\""},
        ValueCase{kDevice, "kv_memory = \"0GiB\"",
                  "[[device]].kv_memory must be > 0 bytes, got \"0GiB\""},
        ValueCase{kDevice, "kv_memory = 0", "[[device]].kv_memory must be > 0 bytes, got 0"},
        ValueCase{kDevice, "kv_memory = 0.8", "[[device]].kv_memory " + kBadKv + ", got float 0.8"},
        ValueCase{kDevice, "watts = 0", "[[device]].watts must be > 0, got 0"},
        ValueCase{"[[device]]\nmatch = \"cuda:*\"", "threads = 2",
                  "[[device]].threads applies to match = \"cpu\" only, got 2"},
        ValueCase{kDevice, "threads = 5000", "[[device]].threads must be at most 4096, got 5000"},
        ValueCase{kDevice, "cost_weight = -0.5", "[[device]].cost_weight must be >= 0, got -0.5"}));

INSTANTIATE_TEST_SUITE_P(
    Model, ValueErrorTest,
    ::testing::Values(
        ValueCase{"[[model]]\npath = \"/m\"", "id = \"llama 3\"",
                  "[[model]].id " + kNotAnId + ", got \"llama 3\""},
        ValueCase{"[[model]]\nid = \"m\"", "path = \"\"",
                  "[[model]].path must not be empty, got \"\""},
        ValueCase{"[[model]]\nid = \"m\"", "path = \"models/m.gguf\"",
                  "[[model]].path must be an absolute path, got \"models/m.gguf\""},
        ValueCase{"[[model]]\npath = \"/m\"", "id = \"" + std::string(65, 'm') + "\"",
                  "[[model]].id must be at most 64 characters long, got \"" + std::string(65, 'm') +
                      "\""},
        ValueCase{kModel, "device = \"gpu0\"", "[[model]].device " + kBadChoice + ", got \"gpu0\""},
        ValueCase{kModel, "device = \"cuda:*\"",
                  "[[model]].device " + kBadChoice + ", got \"cuda:*\""},
        ValueCase{kModel, "context = 0", "[[model]].context must be >= 1, got 0"},
        ValueCase{kModel, "max_seqs = 1.0", "[[model]].max_seqs must be an integer, got float 1"},
        ValueCase{kModel, "price_input_per_mtok = -2",
                  "[[model]].price_input_per_mtok must be >= 0, got -2"},
        ValueCase{kModel, "price_output_per_mtok = -0.5",
                  "[[model]].price_output_per_mtok must be >= 0, got -0.5"}));

INSTANTIATE_TEST_SUITE_P(
    Tenant, ValueErrorTest,
    ::testing::Values(
        ValueCase{"[[tenant]]", "name = \"\"", "[[tenant]].name must not be empty, got \"\""},
        ValueCase{"[[tenant]]", "name = \"..\"",
                  "[[tenant]].name must not start with '.' or '-', got \"..\""},
        ValueCase{"[[tenant]]", "name = \"-x\"",
                  "[[tenant]].name must not start with '.' or '-', got \"-x\""},
        ValueCase{"[[tenant]]", "name = \"a:b\"", "[[tenant]].name " + kNotAName + ", got \"a:b\""},
        ValueCase{kTenant, "api_keys_sha256 = \"abc\"",
                  "[[tenant]].api_keys_sha256 must be an array of strings, got string \"abc\""},
        ValueCase{kTenant, "weight = 0", "[[tenant]].weight must be > 0, got 0"},
        ValueCase{kTenant, "kv_max_fraction = 1.5",
                  "[[tenant]].kv_max_fraction must be above 0 and at most 1, got 1.5"},
        ValueCase{kTenant, "kv_max_fraction = 0",
                  "[[tenant]].kv_max_fraction must be above 0 and at most 1, got 0"},
        ValueCase{kTenant, "kv_reserved_blocks = -1",
                  "[[tenant]].kv_reserved_blocks must be >= 0, got -1"},
        ValueCase{kTenant, "max_queue = -3", "[[tenant]].max_queue must be >= 0, got -3"},
        ValueCase{kTenant, "rate_limit_tokens_per_s = -1",
                  "[[tenant]].rate_limit_tokens_per_s must be >= 0, got -1"},
        ValueCase{kTenant, "schema_compile_s_per_min = -1",
                  "[[tenant]].schema_compile_s_per_min must be >= 0, got -1"},
        ValueCase{kTenant, "cache_group = \"a b\"",
                  "[[tenant]].cache_group " + kNotAName + ", got \"a b\""},
        ValueCase{kTenant, "models = \"m\"",
                  "[[tenant]].models must be an array of strings, got string \"m\""},
        ValueCase{kTenant, "price_output_per_mtok = -0.1",
                  "[[tenant]].price_output_per_mtok must be >= 0, got -0.1"}));

}  // namespace
}  // namespace tokenmill::config
