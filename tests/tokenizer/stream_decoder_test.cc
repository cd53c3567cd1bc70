// StreamDecoder: text per generated token never ends inside a character and
// adds up to Decode.
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/tokenizer/tokenizer.h"
#include "tests/tokenizer/test_vocab.h"
#include "tests/tokenizer/tokenizer_test_util.h"

namespace tokenmill::tokenizer {
namespace {

using testing::kNoBos;
using testing::MustCreate;

TEST(StreamDecoderTest, HoldsAnEmojiUntilItsLastByte) {
  // No merges: the emoji's four bytes are four tokens.
  TokenizerPtr t = MustCreate(testing::ByteLevelSpec(PreTokenizer::kLlama3, {}));
  ASSERT_NE(t, nullptr);
  const std::vector<int32_t> ids = t->Encode("a😀b", kNoBos);
  ASSERT_EQ(ids.size(), 6u);
  StreamDecoder stream(*t);
  std::vector<std::string> outputs;
  for (int32_t id : ids) outputs.push_back(stream.Push(id));
  EXPECT_EQ(outputs, (std::vector<std::string>{"a", "", "", "", "😀", "b"}));
  EXPECT_EQ(stream.Flush(), "");
}

TEST(StreamDecoderTest, SentencePieceBytesAndLeadingSpace) {
  TokenizerPtr t = MustCreate(testing::SentencePieceSpec({" ", "h", "i", "hi", " hi"}));
  ASSERT_NE(t, nullptr);
  const std::vector<int32_t> ids = t->Encode("hi 😀");
  StreamDecoder stream(*t, /*skip_special=*/true);
  std::vector<std::string> outputs;
  for (int32_t id : ids) outputs.push_back(stream.Push(id));
  // <s>, "▁hi" (prefix space removed), "▁", then four byte tokens.
  EXPECT_EQ(outputs, (std::vector<std::string>{"", "hi", " ", "", "", "", "😀"}));
}

TEST(StreamDecoderTest, InvalidBytesComeOutAtTheLatestOnFlush) {
  TokenizerPtr t = MustCreate(testing::ByteLevelSpec(PreTokenizer::kGpt2, {}));
  ASSERT_NE(t, nullptr);
  StreamDecoder stream(*t);
  EXPECT_EQ(stream.Push(0xF0), "");
  EXPECT_EQ(stream.Push(0x9F), "");
  // 'x' can never complete the sequence: everything comes out.
  EXPECT_EQ(stream.Push('x'), "\xF0\x9Fx");
  EXPECT_EQ(stream.Push(0xE2), "");
  EXPECT_EQ(stream.Flush(), "\xE2");
  // A byte that cannot start a sequence is not held.
  EXPECT_EQ(stream.Push(0xFF), "\xFF");
}

TEST(StreamDecoderTest, PiecesAreValidAndConcatenateToDecode) {
  std::mt19937 rng(99);
  std::string corpus = testing::EnglishLikeText(3000, 1);
  for (int i = 0; i < 40; ++i) corpus += testing::RandomText(rng, 10);
  TokenizerPtr byte_level =
      MustCreate(testing::TrainByteLevelSpec(corpus, PreTokenizer::kLlama3, 200));
  TokenizerPtr sentencepiece = MustCreate(testing::SentencePieceSpec({" ", "a", "b", "ab", " ab"}));
  ASSERT_TRUE(byte_level && sentencepiece);
  for (const Tokenizer* t : {byte_level.get(), sentencepiece.get()}) {
    for (int i = 0; i < 500; ++i) {
      const bool valid = i % 4 != 0;
      const std::string text = valid ? testing::RandomText(rng, 12) : testing::RandomBytes(rng, 30);
      const std::vector<int32_t> ids = t->Encode(text);
      StreamDecoder stream(*t);
      std::string joined;
      for (int32_t id : ids) {
        const std::string piece = stream.Push(id);
        if (valid) {
          ASSERT_TRUE(testing::IsValidUtf8(piece)) << "text " << text;
        }
        joined += piece;
      }
      joined += stream.Flush();
      ASSERT_EQ(joined, t->Decode(ids));
    }
  }
}

}  // namespace
}  // namespace tokenmill::tokenizer
