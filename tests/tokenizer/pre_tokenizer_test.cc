#include "runtime/tokenizer/pre_tokenizer.h"

#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/tokenizer/test_vocab.h"

namespace tokenmill::tokenizer {
namespace {

using ::testing::ElementsAre;

std::vector<std::string> Split(std::string_view text, PreTokenizer kind) {
  std::vector<TextUnit> units;
  std::vector<std::string_view> words;
  SplitWords(text, kind, &units, &words);
  return {words.begin(), words.end()};
}

TEST(PreTokenizerTest, Gpt2WordsKeepTheirLeadingSpace) {
  EXPECT_THAT(Split("Hello world", PreTokenizer::kGpt2), ElementsAre("Hello", " world"));
  EXPECT_THAT(Split("a   b", PreTokenizer::kGpt2), ElementsAre("a", "  ", " b"));
  EXPECT_THAT(Split("  hi", PreTokenizer::kGpt2), ElementsAre(" ", " hi"));
  EXPECT_THAT(Split("end  ", PreTokenizer::kGpt2), ElementsAre("end", "  "));
  EXPECT_THAT(Split("\tfoo", PreTokenizer::kGpt2), ElementsAre("\t", "foo"));
}

TEST(PreTokenizerTest, Gpt2ContractionsAreCaseSensitive) {
  EXPECT_THAT(Split("I'm here", PreTokenizer::kGpt2), ElementsAre("I", "'m", " here"));
  EXPECT_THAT(Split("they'll", PreTokenizer::kGpt2), ElementsAre("they", "'ll"));
  EXPECT_THAT(Split("I'M", PreTokenizer::kGpt2), ElementsAre("I", "'", "M"));
  EXPECT_THAT(Split("'sa", PreTokenizer::kGpt2), ElementsAre("'s", "a"));
}

TEST(PreTokenizerTest, Gpt2NumbersAndPunctuation) {
  EXPECT_THAT(Split("12345 abc", PreTokenizer::kGpt2), ElementsAre("12345", " abc"));
  EXPECT_THAT(Split("x = 42!!", PreTokenizer::kGpt2), ElementsAre("x", " =", " 42", "!!"));
  EXPECT_THAT(Split("x\n\ny", PreTokenizer::kGpt2), ElementsAre("x", "\n", "\n", "y"));
}

TEST(PreTokenizerTest, Llama3SplitsNumbersInThrees) {
  EXPECT_THAT(Split("12345", PreTokenizer::kLlama3), ElementsAre("123", "45"));
  EXPECT_THAT(Split("in 2024.", PreTokenizer::kLlama3), ElementsAre("in", " ", "202", "4", "."));
}

TEST(PreTokenizerTest, Qwen2SplitsNumbersOneByOne) {
  EXPECT_THAT(Split("12345", PreTokenizer::kQwen2), ElementsAre("1", "2", "3", "4", "5"));
  EXPECT_THAT(Split("a1", PreTokenizer::kQwen2), ElementsAre("a", "1"));
}

TEST(PreTokenizerTest, Llama3ContractionsIgnoreCase) {
  EXPECT_THAT(Split("I'M", PreTokenizer::kLlama3), ElementsAre("I", "'M"));
  EXPECT_THAT(Split("WE'RE", PreTokenizer::kLlama3), ElementsAre("WE", "'RE"));
  // Not a contraction: the apostrophe prefixes the letters.
  EXPECT_THAT(Split("'hello", PreTokenizer::kLlama3), ElementsAre("'hello"));
}

TEST(PreTokenizerTest, Llama3LineBreaks) {
  EXPECT_THAT(Split("a\r\n\nb", PreTokenizer::kLlama3), ElementsAre("a", "\r\n\n", "b"));
  EXPECT_THAT(Split("a\n  b", PreTokenizer::kLlama3), ElementsAre("a", "\n", " ", " b"));
  EXPECT_THAT(Split("hello, world!\n", PreTokenizer::kLlama3),
              ElementsAre("hello", ",", " world", "!\n"));
  EXPECT_THAT(Split("...\n\nx", PreTokenizer::kLlama3), ElementsAre("...\n\n", "x"));
  EXPECT_THAT(Split("x  \n", PreTokenizer::kLlama3), ElementsAre("x", "  \n"));
  // A tab (any non-newline, non-letter, non-digit) joins the following word.
  EXPECT_THAT(Split("\tfoo", PreTokenizer::kLlama3), ElementsAre("\tfoo"));
}

TEST(PreTokenizerTest, UnicodeClasses) {
  EXPECT_THAT(Split("日本語 テキスト", PreTokenizer::kGpt2), ElementsAre("日本語", " テキスト"));
  // Emoji and their modifiers are neither letters nor numbers.
  EXPECT_THAT(Split("hi 👋🏽!", PreTokenizer::kGpt2), ElementsAre("hi", " 👋🏽!"));
  // Combining marks (Mn) are not letters either.
  EXPECT_THAT(Split("e\u0301t", PreTokenizer::kLlama3), ElementsAre("e", "\u0301t"));
  // U+3000 is white space; Arabic-Indic digits are numbers.
  EXPECT_THAT(Split("a\u3000b", PreTokenizer::kGpt2), ElementsAre("a", "\u3000", "b"));
  EXPECT_THAT(Split("\u0661\u0662\u0663\u0664", PreTokenizer::kLlama3),
              ElementsAre("\u0661\u0662\u0663", "\u0664"));
}

TEST(PreTokenizerTest, InvalidBytesAreOtherCharacters) {
  EXPECT_THAT(Split("a\xFF"
                    "b",
                    PreTokenizer::kGpt2),
              ElementsAre("a", "\xFF", "b"));
  EXPECT_THAT(Split("a\xFF"
                    "b",
                    PreTokenizer::kLlama3),
              ElementsAre("a",
                          "\xFF"
                          "b"));
  // A truncated sequence is one unit per byte, none swallowed.
  EXPECT_THAT(Split("\xE2\x82 x", PreTokenizer::kGpt2), ElementsAre("\xE2\x82", " x"));
}

// DeepSeek-V3 applies three split rules in turn; Llama 3's single regex
// splits these differently.
TEST(PreTokenizerTest, DeepSeekV3AppliesItsThreeRules) {
  constexpr PreTokenizer kDeepSeek = PreTokenizer::kDeepSeekV3;
  EXPECT_THAT(Split("O'Reilly's", kDeepSeek), ElementsAre("O", "'Reilly", "'s"));
  EXPECT_THAT(Split("O'Reilly's", PreTokenizer::kLlama3), ElementsAre("O", "'Re", "illy", "'s"));
  // Combining marks stay with their letters (Devanagari vowel signs, Arabic
  // harakat, Thai vowels and tone marks are marks).
  EXPECT_THAT(Split("cafe\u0301!", kDeepSeek), ElementsAre("cafe\u0301", "!"));
  EXPECT_THAT(Split("नमस्ते दुनिया", kDeepSeek), ElementsAre("नमस्ते", " दुनिया"));
  EXPECT_THAT(Split("مَرْحَبًا", kDeepSeek), ElementsAre("مَرْحَبًا"));
  EXPECT_THAT(Split("น้ำ ที่", kDeepSeek), ElementsAre("น้ำ", " ที่"));
  // Digits in threes first, then CJK / kana runs, then the rest.
  EXPECT_THAT(Split("abc1234日本語のx", kDeepSeek),
              ElementsAre("abc", "123", "4", "日本語の", "x"));
  EXPECT_THAT(Split("a 12", kDeepSeek), ElementsAre("a", " ", "12"));
  // ASCII punctuation takes the ASCII letters after it.
  EXPECT_THAT(Split("x.foo()", kDeepSeek), ElementsAre("x", ".foo", "()"));
  // What no alternative matches is a piece of its own; a format character
  // may prefix letters.
  EXPECT_THAT(Split("a \u200d", kDeepSeek), ElementsAre("a", " ", "\u200d"));
  EXPECT_THAT(Split("x\u200dy", kDeepSeek), ElementsAre("x", "\u200dy"));
  EXPECT_THAT(Split("line\r\n\r\n  next", kDeepSeek),
              ElementsAre("line", "\r\n\r\n", " ", " next"));
}

TEST(PreTokenizerTest, WordsCoverAllBytesInOrder) {
  std::mt19937 rng(7);
  for (PreTokenizer kind : {PreTokenizer::kGpt2, PreTokenizer::kLlama3, PreTokenizer::kQwen2,
                            PreTokenizer::kDeepSeekV3}) {
    for (int i = 0; i < 500; ++i) {
      const std::string text = i % 2 ? testing::RandomBytes(rng, 40) : testing::RandomText(rng, 12);
      std::string joined;
      for (const std::string& word : Split(text, kind)) {
        ASSERT_FALSE(word.empty());
        joined += word;
      }
      ASSERT_EQ(joined, text);
    }
  }
}

}  // namespace
}  // namespace tokenmill::tokenizer
