// SentencePiece-style BPE: score order, byte fallback, the space prefix and
// round trips.
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/tokenizer/tokenizer.h"
#include "tests/tokenizer/test_vocab.h"
#include "tests/tokenizer/tokenizer_test_util.h"

namespace tokenmill::tokenizer {
namespace {

using testing::kNoBos;
using testing::MustCreate;

using ::testing::HasSubstr;

const std::vector<std::string> kPieces = {" ",      "h",     "e",      "l",   "o",    "w",    "r",
                                          "d",      "t",     "th",     " th", " the", "he",   "ll",
                                          "hell",   "hello", " hello", " w",  "or",   " wor", "ld",
                                          " world", "  ",    "日",     "本",  "日本"};

// Ids of pieces written with " " for "▁" (or of "<0xAB>" / special names).
std::vector<int32_t> PieceIds(const Tokenizer& t, const std::vector<std::string>& pieces) {
  std::vector<int32_t> ids;
  for (std::string piece : pieces) {
    std::string text;
    for (char c : piece) text += c == ' ' ? std::string("\xE2\x96\x81") : std::string(1, c);
    std::optional<int32_t> id = t.TokenId(text);
    EXPECT_TRUE(id.has_value()) << "no token " << piece;
    ids.push_back(id.value_or(-1));
  }
  return ids;
}

TEST(SentencePieceTest, HelloWorld) {
  TokenizerPtr t = MustCreate(testing::SentencePieceSpec(kPieces));
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->Encode("hello world"), PieceIds(*t, {"<s>", " hello", " world"}));
  // As Hugging Face decodes: only a space that starts the text is the prefix's.
  EXPECT_EQ(t->Decode(t->Encode("hello world")), "<s> hello world");
  EXPECT_EQ(t->Decode(t->Encode("hello world"), /*skip_special=*/true), "hello world");
  EXPECT_EQ(t->Encode("the", kNoBos), PieceIds(*t, {" the"}));
}

TEST(SentencePieceTest, HighestScoreMergesFirst) {
  // "▁h" scores above "he": "▁he" is not a token, so "▁h" + "e" stays apart.
  TokenizerPtr t = MustCreate(testing::SentencePieceSpec({" ", "h", "e", " h", "he"}));
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->Encode("he", kNoBos), PieceIds(*t, {" h", "e"}));
  TokenizerPtr u = MustCreate(testing::SentencePieceSpec({" ", "h", "e", "he", " h"}));
  ASSERT_NE(u, nullptr);
  EXPECT_EQ(u->Encode("he", kNoBos), PieceIds(*u, {" ", "he"}));
}

TEST(SentencePieceTest, LeadingSpaces) {
  TokenizerPtr t = MustCreate(testing::SentencePieceSpec(kPieces));
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->Encode(" hello", kNoBos), PieceIds(*t, {" ", " hello"}));
  EXPECT_EQ(t->Decode(t->Encode(" hello", kNoBos)), " hello");
  EXPECT_EQ(t->Decode(t->Encode("  hello  ", kNoBos)), "  hello  ");

  TokenizerPtr no_prefix = MustCreate(testing::SentencePieceSpec(kPieces, true, false));
  ASSERT_NE(no_prefix, nullptr);
  EXPECT_EQ(no_prefix->Encode("hello world", kNoBos), PieceIds(*no_prefix, {"hello", " world"}));
  EXPECT_EQ(no_prefix->Decode(no_prefix->Encode(" hello", kNoBos)), " hello");
}

TEST(SentencePieceTest, ByteFallback) {
  TokenizerPtr t = MustCreate(testing::SentencePieceSpec(kPieces));
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->Encode("hé", kNoBos), PieceIds(*t, {" ", "h", "<0xC3>", "<0xA9>"}));
  EXPECT_EQ(t->Decode(t->Encode("hé", kNoBos)), "hé");
  EXPECT_EQ(t->Encode("日本", kNoBos), PieceIds(*t, {" ", "日本"}));
  EXPECT_EQ(t->TokenBytes(*t->TokenId("<0x0A>")), "\n");
  EXPECT_EQ(t->TokenBytes(PieceIds(*t, {" hello"})[0]), " hello");
}

TEST(SentencePieceTest, UnknownWithoutByteTokens) {
  TokenizerPtr t = MustCreate(testing::SentencePieceSpec(kPieces, /*byte_tokens=*/false));
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->Encode("hé", kNoBos), PieceIds(*t, {" ", "h", "<unk>"}));
  EXPECT_EQ(t->Decode(t->Encode("hé", kNoBos), /*skip_special=*/true), "h");
}

TEST(SentencePieceTest, SpecialTokensRestartTheSpacePrefix) {
  TokenizerPtr t = MustCreate(testing::SentencePieceSpec(kPieces));
  ASSERT_NE(t, nullptr);
  Tokenizer::EncodeOptions parse = kNoBos;
  parse.parse_special = true;
  EXPECT_EQ(t->Encode("hello</s>hello", parse), PieceIds(*t, {" hello", "</s>", " hello"}));
  const std::vector<int32_t> plain = t->Encode("hello</s>", kNoBos);
  EXPECT_THAT(plain, ::testing::Not(::testing::Contains(*t->eos_id())));
  EXPECT_EQ(t->Decode(plain), "hello</s>");
}

// Hugging Face's Strip decoder removes the first character of the decoded
// text when it is a space, whichever token it came from, and only then.
TEST(SentencePieceTest, DecodeStripsOnlyTheSpaceThatStartsTheText) {
  TokenizerPtr t = MustCreate(testing::SentencePieceSpec(kPieces));
  ASSERT_NE(t, nullptr);
  const int32_t space_byte = *t->TokenId("<0x20>");
  const int32_t bos = *t->bos_id();
  const std::vector<int32_t> lone = {space_byte};
  EXPECT_EQ(t->Decode(lone), "");
  const std::vector<int32_t> after_bos = {bos, space_byte};
  EXPECT_EQ(t->Decode(after_bos), "<s> ");
  EXPECT_EQ(t->Decode(after_bos, /*skip_special=*/true), "");
  std::vector<int32_t> two_spaces = {space_byte};
  for (int32_t id : PieceIds(*t, {" hello"})) two_spaces.push_back(id);
  EXPECT_EQ(t->Decode(two_spaces), " hello");
  std::vector<int32_t> bos_hello = {bos};
  for (int32_t id : PieceIds(*t, {" ", " hello"})) bos_hello.push_back(id);
  EXPECT_EQ(t->Decode(bos_hello), "<s>  hello");
  StreamDecoder stream(*t);
  std::string streamed;
  for (int32_t id : bos_hello) streamed += stream.Push(id);
  EXPECT_EQ(streamed + stream.Flush(), "<s>  hello");
}

// Gemma's indentation tokens ("▁▁" .. 31 "▁") are user-defined added tokens;
// Hugging Face runs them through the decoder, which turns "▁" into spaces.
TEST(SentencePieceTest, UserDefinedTokensDecodeMetaSpacesAsSpaces) {
  TokenizerSpec spec = testing::SentencePieceSpec(kPieces, /*byte_tokens=*/true,
                                                  /*add_space_prefix=*/false);
  spec.tokens.push_back("\xE2\x96\x81\xE2\x96\x81\xE2\x96\x81\xE2\x96\x81");
  spec.token_types.push_back(TokenType::kUserDefined);
  spec.scores.push_back(0.0f);
  TokenizerPtr t = MustCreate(spec);
  ASSERT_NE(t, nullptr);
  const int32_t indent = t->vocab_size() - 1;
  std::vector<int32_t> ids = {indent};
  for (int32_t id : PieceIds(*t, {"hello"})) ids.push_back(id);
  EXPECT_EQ(t->Decode(ids), "    hello");
  EXPECT_EQ(t->TokenBytes(indent), "    ");
  StreamDecoder stream(*t);
  EXPECT_EQ(stream.Push(indent), "    ");
}

TEST(SentencePieceTest, RoundTripsWithByteFallback) {
  TokenizerPtr t = MustCreate(testing::SentencePieceSpec(kPieces));
  ASSERT_NE(t, nullptr);
  std::mt19937 rng(21);
  for (int i = 0; i < 2000; ++i) {
    const std::string text = i % 2 ? testing::RandomText(rng, 12) : testing::RandomBytes(rng, 40);
    if (text.find("\xE2\x96\x81") != std::string::npos) continue;  // "▁" decodes as a space
    ASSERT_EQ(t->Decode(t->Encode(text), /*skip_special=*/true), text);
  }
}

TEST(SentencePieceTest, CreateRefusesBadSpecs) {
  TokenizerSpec spec = testing::SentencePieceSpec(kPieces);
  spec.scores.clear();
  absl::StatusOr<TokenizerPtr> t = Tokenizer::Create(spec);
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("scores"));

  spec = testing::SentencePieceSpec(kPieces, /*byte_tokens=*/false);
  spec.unk_id.reset();
  t = Tokenizer::Create(spec);
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("no unknown token"));

  spec = testing::SentencePieceSpec(kPieces);
  spec.tokens[5] = "<0xZZ>";
  t = Tokenizer::Create(spec);
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("not spelled <0xAB>"));
}

}  // namespace
}  // namespace tokenmill::tokenizer
