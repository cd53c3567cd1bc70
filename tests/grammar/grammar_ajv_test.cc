// Property test: outputs sampled through the grammar from random logits with
// Llama 3's real 128K vocabulary validate against their schemas in ajv (an
// independent JSON Schema validator, run by tests/grammar/ajv_validate.sh).
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/grammar/constrained_sampling.h"
#include "tests/tokenizer/hf_fixture_files.h"

namespace tokenmill::grammar {
namespace {

struct NamedSchema {
  std::string name;
  std::string schema;  // "" = response_format json_object
};

const std::vector<NamedSchema>& AjvSchemas() {
  static const std::vector<NamedSchema>
      kSchemas =
          {
              {"flat",
               R"({"type":"object","properties":{"name":{"type":"string","maxLength":16},"age":{"type":"integer","minimum":0,"maximum":130},"active":{"type":"boolean"},"nick":{"type":["string","null"],"maxLength":8}},"required":["name","age","active","nick"],"additionalProperties":false})"},
              {"enums",
               R"({"type":"object","properties":{"status":{"enum":["open","closed","pending review"]},"priority":{"enum":[1,2,3,5,8]},"version":{"const":"v1"},"mixed":{"enum":[null,true,"x",{"a":[1,2]}]}},"required":["status","priority","version","mixed"]})"},
              {"arrays",
               R"({"type":"object","properties":{"tags":{"type":"array","items":{"type":"string","minLength":1,"maxLength":8},"minItems":1,"maxItems":4},"scores":{"type":"array","items":{"type":"number","minimum":0,"maximum":1},"maxItems":5},"grid":{"type":"array","items":{"type":"array","items":{"type":"integer","minimum":-9,"maximum":9},"minItems":2,"maxItems":2},"minItems":2,"maxItems":3}},"required":["tags","scores","grid"]})"},
              {"nested",
               R"({"type":"object","properties":{"user":{"type":"object","properties":{"id":{"type":"integer","exclusiveMinimum":0},"address":{"type":"object","properties":{"street":{"type":"string","maxLength":20},"city":{"type":"string","minLength":2,"maxLength":12},"zip":{"type":"string","pattern":"^[0-9]{5}$"}},"required":["street","city","zip"]}},"required":["id","address"]}},"required":["user"]})"},
              {"anyof",
               R"({"type":"object","properties":{"value":{"anyOf":[{"type":"string","maxLength":10},{"type":"integer","minimum":100,"maximum":999},{"type":"null"},{"type":"object","properties":{"kind":{"const":"special"},"n":{"type":"number","exclusiveMinimum":-1,"exclusiveMaximum":1}},"required":["kind","n"]}]}},"required":["value"]})"},
              {"defs",
               R"({"$defs":{"item":{"type":"object","properties":{"sku":{"type":"string","pattern":"^[A-Z]{3}-[0-9]{4}$"},"qty":{"type":"integer","minimum":1,"maximum":99}},"required":["sku","qty"]}},"type":"object","properties":{"items":{"type":"array","items":{"$ref":"#/$defs/item"},"minItems":1,"maxItems":6}},"required":["items"]})"},
              {"recursive",
               R"({"$defs":{"node":{"type":"object","properties":{"label":{"type":"string","maxLength":6},"children":{"type":"array","items":{"$ref":"#/$defs/node"},"maxItems":3}},"required":["label"]}},"$ref":"#/$defs/node"})"},
              {"dates",
               R"({"type":"object","properties":{"at":{"type":"string","format":"date-time"},"day":{"type":"string","format":"date"},"time":{"type":"string","format":"time"}},"required":["at","day","time"]})"},
              {"ids",
               R"({"type":"object","properties":{"email":{"type":"string","format":"email"},"uuid":{"type":"string","format":"uuid"},"ip":{"type":"string","format":"ipv4"},"link":{"type":"string","format":"uri"}},"required":["email","uuid","ip","link"]})"},
              {"patterns",
               R"({"type":"object","properties":{"color":{"type":"string","pattern":"^#[0-9a-f]{6}$"},"phone":{"type":"string","pattern":"^\\+?[0-9]{2,3}( [0-9]{3}){2}$"},"word":{"type":"string","pattern":"^(?:alpha|beta|gamma)-\\w{1,4}$"},"free":{"type":"string","pattern":"ok"}},"required":["color","phone","word","free"]})"},
              {"numbers",
               R"({"type":"object","properties":{"t":{"type":"number","minimum":-40.5,"maximum":60.25},"p":{"type":"integer","exclusiveMinimum":-1000,"exclusiveMaximum":-10},"big":{"type":"integer","minimum":1000000},"any":{"type":"number"},"frac":{"type":"number","exclusiveMinimum":0,"maximum":2}},"required":["t","p","big","any","frac"]})"},
              {"nullable",
               R"({"type":"object","properties":{"a":{"type":["integer","null"]},"b":{"type":["string","null"],"maxLength":5},"c":{"type":["boolean","array"],"items":{"type":"null"},"maxItems":2}},"required":["a","b","c"]})"},
              {"map",
               R"({"type":"object","properties":{"counts":{"type":"object","additionalProperties":{"type":"integer","minimum":0,"maximum":9}},"meta":{"type":"object"}},"required":["counts","meta"]})"},
              {"json_object", ""},
              {"optional",
               R"({"type":"object","title":"All optional","description":"every member may be left out","properties":{"a":{"type":"string","minLength":3,"maxLength":6},"b":{"type":"integer"},"c":{},"d":{"allOf":[{"type":"boolean"}]}}})"},
              {"root_array",
               R"({"type":"array","items":{"type":"object","properties":{"k":{"enum":["x","y"]},"v":{"type":"number"}},"required":["k","v"],"additionalProperties":false},"minItems":2,"maxItems":4})"},
              {"strings", R"({"type":"object","properties":{"s":{"type":"string"},"short":{"type":"string","maxLength":1},"exact":{"type":"string","minLength":4,"maxLength":4}},"required":["s","short","exact"]})"},
              {"pattern_lengths",
               R"({"type":"object","properties":{"slug":{"type":"string","pattern":"^[a-z0-9-]+$","minLength":3,"maxLength":9},"word":{"type":"string","pattern":"ab","maxLength":5},"at_least":{"type":"string","pattern":"^[^x]*$","minLength":4},"day":{"type":"string","format":"date","maxLength":10}},"required":["slug","word","at_least","day"]})"},
          };
  return kSchemas;
}

TEST(GrammarAjvTest, SampledOutputsValidate) {
  absl::StatusOr<tokenizer::TokenizerPtr> tok = tokenizer::testing::LoadHfFixtureTokenizer(
      std::filesystem::path(TOKENMILL_SOURCE_DIR) / "tests/tokenizer/hf_fixtures/llama3");
  ASSERT_TRUE(tok.ok()) << tok.status();
  const auto vocab = TokenVocabulary::FromTokenizer(**tok);
  constexpr int kOutputsPerSchema = 50;
  nlohmann::json cases = nlohmann::json::array();
  std::mt19937_64 rng(20261207);
  for (const NamedSchema& s : AjvSchemas()) {
    JsonSchemaOptions options;
    options.strict = true;
    absl::StatusOr<CompiledGrammarPtr> g = s.schema.empty()
                                               ? CompileJsonObjectGrammar(options, vocab)
                                               : CompileJsonSchemaGrammar(s.schema, options, vocab);
    ASSERT_TRUE(g.ok()) << s.name << ": " << g.status();
    nlohmann::json outputs = nlohmann::json::array();
    for (int i = 0; i < kOutputsPerSchema; ++i) {
      // Budgets vary so that short and long outputs both occur.
      const int32_t budget = 40 + static_cast<int32_t>(rng() % 400);
      absl::StatusOr<testing::Sampled> sample = testing::SampleConstrained(
          *g, &rng, {.soft_byte_budget = budget, .through_logits = false});
      ASSERT_TRUE(sample.ok()) << s.name << ": " << sample.status();
      std::string bytes;
      for (const int32_t id : sample->ids) bytes += vocab->bytes(id);
      const std::string text = (*tok)->Decode(sample->ids, /*skip_special=*/true);
      ASSERT_EQ(text, bytes);
      outputs.push_back(text);
    }
    nlohmann::json schema =
        s.schema.empty() ? nlohmann::json{{"type", "object"}} : nlohmann::json::parse(s.schema);
    cases.push_back({{"name", s.name}, {"schema", schema}, {"outputs", outputs}});
  }
  const std::filesystem::path dir = std::filesystem::path(TOKENMILL_BINARY_DIR) / "grammar_ajv";
  std::filesystem::create_directories(dir);
  const std::filesystem::path file = dir / "outputs.json";
  std::ofstream(file) << nlohmann::json{{"cases", cases}}.dump(1);
  const std::string command = "bash '" + std::string(TOKENMILL_SOURCE_DIR) +
                              "/tests/grammar/ajv_validate.sh' '" + (dir / "npm").string() + "' '" +
                              file.string() + "'";
  EXPECT_EQ(std::system(command.c_str()), 0) << "ajv rejected outputs; see above and " << file;
}

}  // namespace
}  // namespace tokenmill::grammar
