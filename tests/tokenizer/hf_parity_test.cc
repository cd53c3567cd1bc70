// Our tokenizer against the Hugging Face tokenizers library on real tokenizer
// files: hf_fixtures/<family>/ holds each family's files and the ids and
// decodes the library gave for every line of corpus/corpus.json (written by
// make_hf_fixtures.js, which records the versions). Each family must agree on
// every line; the test prints the agreement rates.
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/tokenizer/hf_tokenizer.h"
#include "runtime/tokenizer/tokenizer.h"
#include "tests/tokenizer/hf_fixture_files.h"

namespace tokenmill::tokenizer {
namespace {

using Json = nlohmann::json;
namespace fs = std::filesystem;

const fs::path kTokenizerTests = fs::path(TOKENMILL_SOURCE_DIR) / "tests" / "tokenizer";

// Printable form of a string for failure messages.
std::string Quoted(const std::string& text) { return Json(text).dump(); }

std::string IdList(const std::vector<int32_t>& ids) { return Json(ids).dump(); }

// A family's tokenizer as the safetensors loader builds it from these files.
// generation_config: whether to pass generation_config.json.
absl::StatusOr<TokenizerPtr> LoadFamily(const std::string& family, bool generation_config) {
  return testing::LoadHfFixtureTokenizer(kTokenizerTests / "hf_fixtures" / family,
                                         generation_config);
}

class HfParityTest : public ::testing::TestWithParam<std::string> {};

TEST_P(HfParityTest, EncodeAndDecodeMatchHuggingFace) {
  const fs::path dir = kTokenizerTests / "hf_fixtures" / GetParam();
  absl::StatusOr<TokenizerPtr> tokenizer = LoadFamily(GetParam(), /*generation_config=*/true);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  const Tokenizer& t = **tokenizer;

  // Every id generation_config.json names ends generation.
  const Json generation = Json::parse(testing::ReadFixtureFile(dir / "generation_config.json"));
  for (int32_t id : generation.at("eos_token_id").get<std::vector<int32_t>>()) {
    EXPECT_TRUE(t.IsEos(id)) << GetParam() << " " << t.TokenText(id);
  }

  const Json corpus =
      Json::parse(testing::ReadFixtureFile(kTokenizerTests / "corpus" / "corpus.json"));
  const Json expected = Json::parse(testing::ReadFixtureFile(dir / "expected.json"));
  const Json& lines = expected.at("lines");
  ASSERT_EQ(lines.size(), corpus.size()) << "fixtures are stale: rerun make_hf_fixtures.js";

  // Hugging Face matches special tokens in text and adds the family's
  // special tokens (add_special_tokens = true).
  const Tokenizer::EncodeOptions options{.add_bos = true, .add_eos = true, .parse_special = true};
  int encode_ok = 0, decode_ok = 0, decode_skip_ok = 0, stream_ok = 0;
  for (size_t k = 0; k < corpus.size(); ++k) {
    const std::string text = corpus[k].get<std::string>();
    const std::vector<int32_t> want = lines[k].at("ids").get<std::vector<int32_t>>();
    const std::vector<int32_t> got = t.Encode(text, options);
    if (got == want) {
      ++encode_ok;
    } else {
      ADD_FAILURE() << GetParam() << " line " << k << " " << Quoted(text) << ": encode gives "
                    << IdList(got) << ", Hugging Face " << IdList(want);
    }
    const std::string decode = lines[k].at("decode").get<std::string>();
    const std::string decode_skip = lines[k].at("decode_skip").get<std::string>();
    const std::string got_decode = t.Decode(want);
    if (got_decode == decode) {
      ++decode_ok;
    } else {
      ADD_FAILURE() << GetParam() << " line " << k << " " << IdList(want) << ": decode gives "
                    << Quoted(got_decode) << ", Hugging Face " << Quoted(decode);
    }
    const std::string got_skip = t.Decode(want, /*skip_special=*/true);
    if (got_skip == decode_skip) {
      ++decode_skip_ok;
    } else {
      ADD_FAILURE() << GetParam() << " line " << k << " " << IdList(want)
                    << ": decode skipping specials gives " << Quoted(got_skip) << ", Hugging Face "
                    << Quoted(decode_skip);
    }
    StreamDecoder stream(t);
    std::string streamed;
    for (int32_t id : want) streamed += stream.Push(id);
    streamed += stream.Flush();
    if (streamed == decode) {
      ++stream_ok;
    } else {
      ADD_FAILURE() << GetParam() << " line " << k << ": streamed decode gives " << Quoted(streamed)
                    << ", Hugging Face " << Quoted(decode);
    }
  }
  std::printf(
      "hf_parity family=%s lines=%zu encode=%d decode=%d decode_skip_special=%d "
      "stream=%d\n",
      GetParam().c_str(), corpus.size(), encode_ok, decode_ok, decode_skip_ok, stream_ok);
}

// Gemma 3 names <end_of_turn> as eos_token in tokenizer_config.json; its
// <eos> must stop generation too, even without generation_config.json (with
// it, the parity test checks every id it names).
TEST(HfEndTokensTest, GemmaStopsOnEosAndEndOfTurnWithoutGenerationConfig) {
  absl::StatusOr<TokenizerPtr> t = LoadFamily("gemma3", /*generation_config=*/false);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->TokenText(1), "<eos>");
  EXPECT_EQ((*t)->TokenText(106), "<end_of_turn>");
  EXPECT_TRUE((*t)->IsEos(1));
  EXPECT_TRUE((*t)->IsEos(106));
  EXPECT_FALSE((*t)->IsEos(2));  // <bos>
}

INSTANTIATE_TEST_SUITE_P(Families, HfParityTest,
                         ::testing::Values("qwen3", "gemma3", "llama3", "deepseek_v3", "llama2"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace tokenmill::tokenizer
