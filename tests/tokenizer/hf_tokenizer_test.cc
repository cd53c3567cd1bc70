// ParseHfTokenizer on small tokenizer.json / tokenizer_config.json documents
// written here.
#include "runtime/tokenizer/hf_tokenizer.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/tokenizer/tokenizer.h"
#include "tests/tokenizer/test_vocab.h"

namespace tokenmill::tokenizer {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Json = nlohmann::json;
using testing::ByteLevelSpelling;

constexpr char kLlama3Pattern[] =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr char kQwen2Pattern[] =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr char kSpace[] = "\xE2\x96\x81";

const std::vector<std::pair<std::string, std::string>> kMerges = {
    {"h", "e"}, {"l", "l"},   {"he", "ll"}, {"hell", "o"}, {" ", "w"},
    {"o", "r"}, {" w", "or"}, {"l", "d"},   {" wor", "ld"}};

// A Llama 3 style tokenizer.json. pattern "" = a plain GPT-2 ByteLevel
// pre-tokenizer; merge_pairs: merges as [a, b] instead of "a b".
Json ByteLevelDocument(const std::string& pattern, bool merge_pairs = false) {
  Json vocab = Json::object();
  for (int b = 0; b < 256; ++b) vocab[ByteLevelSpelling(std::string(1, static_cast<char>(b)))] = b;
  Json merges = Json::array();
  for (const auto& [left, right] : kMerges) {
    const std::string l = ByteLevelSpelling(left);
    const std::string r = ByteLevelSpelling(right);
    if (!vocab.contains(l + r)) vocab[l + r] = vocab.size();
    merges.push_back(merge_pairs ? Json::array({l, r}) : Json(l + " " + r));
  }
  const int next = static_cast<int>(vocab.size());
  Json added = Json::array();
  int id = next;
  for (const char* special : {"<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"}) {
    added.push_back({{"id", id++}, {"content", special}, {"special", true}});
  }
  added.push_back({{"id", id++}, {"content", "<tool>"}, {"special", false}});
  Json byte_level = {
      {"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", pattern.empty()}};
  Json pre = pattern.empty()
                 ? byte_level
                 : Json{{"type", "Sequence"},
                        {"pretokenizers", Json::array({Json{{"type", "Split"},
                                                            {"pattern", {{"Regex", pattern}}},
                                                            {"behavior", "Isolated"}},
                                                       byte_level})}};
  return {{"version", "1.0"},
          {"added_tokens", added},
          {"normalizer", nullptr},
          {"pre_tokenizer", pre},
          {"post_processor",
           {{"type", "TemplateProcessing"},
            {"single", Json::array({{{"SpecialToken", {{"id", "<|begin_of_text|>"}}}},
                                    {{"Sequence", {{"id", "A"}}}}})}}},
          {"decoder", {{"type", "ByteLevel"}}},
          {"model",
           {{"type", "BPE"},
            {"unk_token", nullptr},
            {"byte_fallback", false},
            {"ignore_merges", true},
            {"vocab", vocab},
            {"merges", merges}}}};
}

// A Llama 2 style tokenizer.json.
Json SentencePieceDocument() {
  Json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
  static const char kHex[] = "0123456789ABCDEF";
  for (int b = 0; b < 256; ++b) {
    vocab[std::string("<0x") + kHex[b >> 4] + kHex[b & 15] + ">"] = 3 + b;
  }
  auto sp = [](std::string text) {
    for (size_t pos; (pos = text.find(' ')) != std::string::npos;) text.replace(pos, 1, kSpace);
    return text;
  };
  for (const char* piece : {" ", "h", "e", "l", "o", "w", "r", "d"})
    vocab[sp(piece)] = vocab.size();
  Json merges = Json::array();
  for (const auto& [left, right] :
       std::vector<std::pair<std::string, std::string>>{{"h", "e"},
                                                        {"l", "l"},
                                                        {"he", "ll"},
                                                        {"hell", "o"},
                                                        {" ", "hello"},
                                                        {" ", "w"},
                                                        {"o", "r"},
                                                        {" w", "or"},
                                                        {"l", "d"},
                                                        {" wor", "ld"}}) {
    if (!vocab.contains(sp(left + right))) vocab[sp(left + right)] = vocab.size();
    merges.push_back(sp(left) + " " + sp(right));
  }
  Json added = Json::array();
  for (int id = 0; id < 3; ++id) {
    added.push_back({{"id", id},
                     {"content", id == 0   ? "<unk>"
                                 : id == 1 ? "<s>"
                                           : "</s>"},
                     {"special", true}});
  }
  return {
      {"added_tokens", added},
      {"normalizer",
       {{"type", "Sequence"},
        {"normalizers",
         Json::array(
             {Json{{"type", "Prepend"}, {"prepend", kSpace}},
              Json{{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", kSpace}}})}}},
      {"pre_tokenizer", nullptr},
      {"decoder",
       {{"type", "Sequence"},
        {"decoders", Json::array({Json{{"type", "ByteFallback"}}, Json{{"type", "Fuse"}}})}}},
      {"model",
       {{"type", "BPE"},
        {"unk_token", "<unk>"},
        {"byte_fallback", true},
        {"vocab", vocab},
        {"merges", merges}}}};
}

const Json kLlama3Config = {
    {"bos_token", "<|begin_of_text|>"},
    {"eos_token", {{"content", "<|end_of_text|>"}, {"lstrip", false}}},
    {"chat_template", "{{ bos_token }}{% for m in messages %}{% endfor %}"}};

TEST(HfTokenizerTest, ByteLevelLlama3) {
  absl::StatusOr<TokenizerSpec> spec =
      ParseHfTokenizer(ByteLevelDocument(kLlama3Pattern).dump(), kLlama3Config.dump());
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->kind, TokenizerKind::kByteLevelBpe);
  EXPECT_EQ(spec->pre, PreTokenizer::kLlama3);
  ASSERT_EQ(spec->tokens.size(), 256u + 9 + 4);
  EXPECT_EQ(spec->merges.front(), "h e");
  EXPECT_EQ(spec->merges[4], "Ġ w");
  EXPECT_EQ(spec->token_types[265], TokenType::kControl);
  EXPECT_EQ(spec->token_types[268], TokenType::kUserDefined);
  EXPECT_EQ(spec->token_types[100], TokenType::kNormal);
  EXPECT_EQ(spec->bos_id, 265);
  EXPECT_EQ(spec->eos_id, 266);
  EXPECT_THAT(spec->extra_eos_ids, ElementsAre(267));
  EXPECT_TRUE(spec->add_bos);  // from the post-processor
  EXPECT_FALSE(spec->add_eos);
  EXPECT_THAT(spec->chat_template, HasSubstr("bos_token"));

  absl::StatusOr<TokenizerPtr> t = Tokenizer::Create(*spec);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->Encode("hello world"),
            (std::vector<int32_t>{265, *(*t)->TokenId("hello"), *(*t)->TokenId("Ġworld")}));
}

TEST(HfTokenizerTest, PreTokenizerKindFromThePattern) {
  absl::StatusOr<TokenizerSpec> qwen =
      ParseHfTokenizer(ByteLevelDocument(kQwen2Pattern).dump(), "");
  ASSERT_TRUE(qwen.ok()) << qwen.status();
  EXPECT_EQ(qwen->pre, PreTokenizer::kQwen2);
  absl::StatusOr<TokenizerSpec> gpt2 = ParseHfTokenizer(ByteLevelDocument("").dump(), "");
  ASSERT_TRUE(gpt2.ok()) << gpt2.status();
  EXPECT_EQ(gpt2->pre, PreTokenizer::kGpt2);
  // Without a config there is no BOS to add and no template.
  EXPECT_FALSE(gpt2->bos_id.has_value());
  EXPECT_FALSE(gpt2->add_bos);
  EXPECT_EQ(gpt2->chat_template, "");
}

TEST(HfTokenizerTest, DeepSeekV3PreTokenizerFromItsThreeSplits) {
  Json doc = ByteLevelDocument(kLlama3Pattern);
  Json& pretokenizers = doc["pre_tokenizer"]["pretokenizers"];
  const Json byte_level = pretokenizers.back();
  pretokenizers = Json::array();
  for (const char* pattern : {R"(\p{N}{1,3})", "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+",
                              R"([!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^
\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[
]*|\s*[
]+|\s+(?!\S)|\s+)"}) {
    pretokenizers.push_back(
        {{"type", "Split"}, {"pattern", {{"Regex", pattern}}}, {"behavior", "Isolated"}});
  }
  pretokenizers.push_back(byte_level);
  doc["model"].erase("ignore_merges");
  absl::StatusOr<TokenizerSpec> spec = ParseHfTokenizer(doc.dump(), "");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->pre, PreTokenizer::kDeepSeekV3);
  // DeepSeek-V3 does not set ignore_merges; Llama 3's file does.
  EXPECT_EQ(spec->ignore_merges, false);
  absl::StatusOr<TokenizerSpec> llama3 =
      ParseHfTokenizer(ByteLevelDocument(kLlama3Pattern).dump(), "");
  ASSERT_TRUE(llama3.ok()) << llama3.status();
  EXPECT_EQ(llama3->ignore_merges, true);
}

// Qwen2 / Qwen3 normalise to NFC: decomposed input encodes as composed.
TEST(HfTokenizerTest, NfcNormalizer) {
  Json doc = ByteLevelDocument(kQwen2Pattern);
  doc["normalizer"] = {{"type", "NFC"}};
  absl::StatusOr<TokenizerSpec> spec = ParseHfTokenizer(doc.dump(), "");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->normalizer, Normalizer::kNfc);
  absl::StatusOr<TokenizerPtr> t = Tokenizer::Create(*spec);
  ASSERT_TRUE(t.ok()) << t.status();
  const Tokenizer::EncodeOptions parse{.add_bos = false, .add_eos = false, .parse_special = true};
  EXPECT_EQ((*t)->Encode("cafe\u0301", parse), (*t)->Encode("caf\u00e9", parse));
  EXPECT_EQ((*t)->Encode("\u212b<tool>e\u0301", parse), (*t)->Encode("\u00c5<tool>\u00e9", parse));
  // Invalid bytes stay as they are around the normalised text.
  EXPECT_EQ((*t)->Decode((*t)->Encode("\xFF"
                                      "e\u0301\xC3",
                                      parse)),
            "\xFF\u00e9\xC3");

  doc["normalizer"] = nullptr;
  spec = ParseHfTokenizer(doc.dump(), "");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->normalizer, Normalizer::kNone);
}

TEST(HfTokenizerTest, GenerationConfigEosIdsEndGeneration) {
  const std::string doc = ByteLevelDocument(kLlama3Pattern).dump();
  absl::StatusOr<TokenizerSpec> list =
      ParseHfTokenizer(doc, kLlama3Config.dump(), R"({"eos_token_id": [266, 268, 100]})");
  ASSERT_TRUE(list.ok()) << list.status();
  absl::StatusOr<TokenizerPtr> t = Tokenizer::Create(*list);
  ASSERT_TRUE(t.ok()) << t.status();
  for (int32_t id : {266, 267, 268, 100}) EXPECT_TRUE((*t)->IsEos(id)) << id;
  EXPECT_FALSE((*t)->IsEos(101));

  absl::StatusOr<TokenizerSpec> one =
      ParseHfTokenizer(doc, kLlama3Config.dump(), R"({"eos_token_id": 100, "top_k": 20})");
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_THAT(one->extra_eos_ids, ElementsAre(100, 267));
  EXPECT_TRUE(ParseHfTokenizer(doc, "", R"({"eos_token_id": null})").ok());

  for (const char* bad : {R"({"eos_token_id": 100000})", R"({"eos_token_id": ["x"]})",
                          R"({"eos_token_id": -1})", "[1]", "{"}) {
    absl::StatusOr<TokenizerSpec> spec = ParseHfTokenizer(doc, "", bad);
    EXPECT_FALSE(spec.ok()) << bad;
    if (!spec.ok()) {
      EXPECT_THAT(std::string(spec.status().message()), HasSubstr("generation_config"));
    }
  }
}

TEST(HfTokenizerTest, MergesAsPairs) {
  absl::StatusOr<TokenizerSpec> strings =
      ParseHfTokenizer(ByteLevelDocument(kLlama3Pattern).dump(), "");
  absl::StatusOr<TokenizerSpec> pairs =
      ParseHfTokenizer(ByteLevelDocument(kLlama3Pattern, /*merge_pairs=*/true).dump(), "");
  ASSERT_TRUE(strings.ok() && pairs.ok());
  EXPECT_EQ(strings->merges, pairs->merges);
}

TEST(HfTokenizerTest, SentencePieceStyle) {
  const Json config = {{"add_bos_token", true},
                       {"add_eos_token", false},
                       {"bos_token", {{"__type", "AddedToken"}, {"content", "<s>"}}},
                       {"eos_token", "</s>"},
                       {"chat_template", Json::array({{{"name", "default"}, {"template", "T"}},
                                                      {{"name", "tool_use"}, {"template", "U"}}})}};
  absl::StatusOr<TokenizerSpec> spec =
      ParseHfTokenizer(SentencePieceDocument().dump(), config.dump());
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->kind, TokenizerKind::kSentencePieceBpe);
  EXPECT_TRUE(spec->add_space_prefix);
  EXPECT_TRUE(spec->merges.empty());
  EXPECT_EQ(spec->unk_id, 0);
  EXPECT_EQ(spec->token_types[0], TokenType::kUnknown);
  EXPECT_EQ(spec->token_types[1], TokenType::kControl);
  EXPECT_EQ(spec->token_types[3 + 0x41], TokenType::kByte);
  EXPECT_EQ(spec->bos_id, 1);
  EXPECT_EQ(spec->eos_id, 2);
  EXPECT_TRUE(spec->add_bos);
  EXPECT_EQ(spec->chat_template, "T");
  ASSERT_EQ(spec->scores.size(), spec->tokens.size());

  absl::StatusOr<TokenizerPtr> t = Tokenizer::Create(*spec);
  ASSERT_TRUE(t.ok()) << t.status();
  const int32_t hello = *(*t)->TokenId("\xE2\x96\x81hello");
  const int32_t world = *(*t)->TokenId("\xE2\x96\x81world");
  EXPECT_GT(spec->scores[hello], spec->scores[world]);  // earlier merge, higher score
  EXPECT_EQ((*t)->Encode("hello world"), (std::vector<int32_t>{1, hello, world}));
  EXPECT_EQ((*t)->Decode((*t)->Encode("hello wé"), /*skip_special=*/true), "hello wé");
}

TEST(HfTokenizerTest, ChatTemplateListWithoutDefault) {
  const Json config = {{"chat_template", Json::array({{{"name", "rag"}, {"template", "R"}}})}};
  absl::StatusOr<TokenizerSpec> spec =
      ParseHfTokenizer(SentencePieceDocument().dump(), config.dump());
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->chat_template, "");
}

void ExpectError(const std::string& json, const std::string& config, absl::StatusCode code,
                 const std::string& words) {
  absl::StatusOr<TokenizerSpec> spec = ParseHfTokenizer(json, config);
  ASSERT_FALSE(spec.ok()) << words;
  EXPECT_EQ(spec.status().code(), code) << spec.status();
  EXPECT_THAT(std::string(spec.status().message()), HasSubstr(words));
}

TEST(HfTokenizerTest, BadDocuments) {
  const auto invalid = absl::StatusCode::kInvalidArgument;
  ExpectError("{not json", "", invalid, "not valid JSON");
  ExpectError("[1, 2]", "", invalid, "not a JSON object");
  ExpectError("{}", "", invalid, "has no model");
  ExpectError(R"({"model": {"type": "WordPiece", "vocab": {}}})", "",
              absl::StatusCode::kUnimplemented, "'WordPiece'");
  ExpectError(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}})", "",
              absl::StatusCode::kUnimplemented, "neither byte-level");

  Json doc = ByteLevelDocument(kLlama3Pattern);
  doc["model"]["merges"].push_back("h zz");
  ExpectError(doc.dump(), "", invalid, "unknown token 'zz'");

  doc = ByteLevelDocument(kLlama3Pattern);
  doc["model"]["merges"].push_back(Json::array({"h"}));
  ExpectError(doc.dump(), "", invalid, "neither \"a b\" nor [a, b]");

  doc = ByteLevelDocument(kLlama3Pattern);
  doc["model"]["vocab"]["extra"] = 5;
  ExpectError(doc.dump(), "", invalid, "token id 5 is used by both");

  doc = ByteLevelDocument(kLlama3Pattern);
  doc["model"]["vocab"]["extra"] = 99999;
  ExpectError(doc.dump(), "", invalid, "token id 99999 ('extra') is out of range");

  doc = ByteLevelDocument(kLlama3Pattern);
  doc["model"]["vocab"]["extra"] = "seven";
  ExpectError(doc.dump(), "", invalid, "no integer id");

  doc = ByteLevelDocument(kLlama3Pattern);
  doc["added_tokens"].push_back({{"id", 3}, {"content", "<x>"}, {"special", true}});
  ExpectError(doc.dump(), "", invalid, "used by both");

  doc = ByteLevelDocument(kLlama3Pattern);
  doc["added_tokens"].push_back({{"content", "<x>"}});
  ExpectError(doc.dump(), "", invalid, "added_tokens");

  doc = ByteLevelDocument(kLlama3Pattern);
  ExpectError(doc.dump(), "{oops", invalid, "tokenizer_config.json is not valid JSON");
  ExpectError(doc.dump(), R"({"bos_token": "<nope>"})", invalid,
              "'<nope>' is not in the vocabulary");
  ExpectError(doc.dump(), R"({"eos_token": 7})", invalid, "eos_token is neither");
  ExpectError(doc.dump(), R"({"chat_template": 7})", invalid, "chat_template");
}

}  // namespace
}  // namespace tokenmill::tokenizer
