// packaging/tokenmill.toml, the config the package ships: it must parse, show
// the defaults, document every key the parser accepts, and its commented
// examples must be valid once un-commented.
#include <fstream>
#include <regex>
#include <sstream>
#include <string>

#include "config/node_config.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/config/test_util.h"

namespace tokenmill::config {
namespace {

const std::filesystem::path kExample = TOKENMILL_SOURCE_DIR "/packaging/tokenmill.toml";

std::string ReadExample() {
  std::ifstream in(kExample);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

TEST(ExampleConfigTest, ParsesToTheDefaults) {
  absl::StatusOr<NodeConfig> config = LoadConfigFile(kExample);
  ASSERT_TRUE(config.ok()) << config.status();
  NodeConfig defaults = *ParseConfig("", "defaults");
  defaults.source = config->source;
  defaults.digest = config->digest;
  EXPECT_EQ(*config, defaults);
  EXPECT_EQ(config->source, kExample.string());
  EXPECT_THAT(config->devices, ::testing::IsEmpty());
  EXPECT_THAT(config->tenants, ::testing::IsEmpty());
}

// The part of the file from `heading` to the next section heading, commented
// or not.
std::string SectionText(const std::string& text, const std::string& heading) {
  const std::regex heading_line("^(# )?\\[\\[?[a-z]+\\]\\]?$", std::regex::multiline);
  const std::regex this_heading(
      "^(# )?" + std::regex_replace(heading, std::regex("[\\[\\]]"), "\\$&") + "$",
      std::regex::multiline);
  std::smatch start;
  if (!std::regex_search(text, start, this_heading)) return "";
  const std::string rest = text.substr(start.position(0) + start.length(0));
  std::smatch next;
  return std::regex_search(rest, next, heading_line) ? rest.substr(0, next.position(0)) : rest;
}

TEST(ExampleConfigTest, DocumentsEveryKnownKeyInItsSection) {
  const std::string text = ReadExample();
  ASSERT_FALSE(text.empty());
  const std::vector<std::string> keys = KnownKeys();
  ASSERT_GT(keys.size(), 40u);
  for (const std::string& key : keys) {
    const std::string section = key.substr(0, key.find('.'));
    const std::string name = key.substr(key.find('.') + 1);
    const bool array = section == "device" || section == "model" || section == "tenant";
    const std::string body = SectionText(text, array ? "[[" + section + "]]" : "[" + section + "]");
    ASSERT_FALSE(body.empty()) << "no section for " << key;
    const std::regex setting("^(# )?" + name + " = ", std::regex::multiline);
    EXPECT_TRUE(std::regex_search(body, setting)) << key << " is not documented";
  }
}

TEST(ExampleConfigTest, CommentedExamplesAreValid) {
  // Un-comment "# key = value" and "# [[section]]" lines; prose stays comments.
  const std::string text = std::regex_replace(
      ReadExample(),
      std::regex("^# ((\\[\\[[a-z]+\\]\\])|([a-z_0-9]+ = .*))$", std::regex::multiline), "$1");
  absl::StatusOr<NodeConfig> config = ParseConfig(text, "uncommented.toml");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->node.name, "gpu-node-01");
  ASSERT_EQ(config->devices.size(), 1u);
  EXPECT_EQ(config->devices[0].match, "cuda:*");
  EXPECT_EQ(config->devices[0].watts, 700.0);
  ASSERT_EQ(config->models.size(), 1u);
  EXPECT_EQ(config->models[0].id, "llama3:8b");
  EXPECT_EQ(config->models[0].context, 8192u);
  EXPECT_EQ(config->models[0].price_output_per_mtok, 0.40);
  ASSERT_EQ(config->tenants.size(), 1u);
  EXPECT_EQ(config->tenants[0].name, "acme");
  EXPECT_THAT(config->tenants[0].models, ::testing::ElementsAre("llama3:8b"));
  EXPECT_EQ(config->tenants[0].price_output_per_mtok, 0.60);
}

}  // namespace
}  // namespace tokenmill::config
