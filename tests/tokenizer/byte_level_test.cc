// Byte-level BPE: known tokenizations, special tokens, round trips, threads,
// and the specs Create refuses.
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/tokenizer/pre_tokenizer.h"
#include "runtime/tokenizer/tokenizer.h"
#include "tests/tokenizer/test_vocab.h"
#include "tests/tokenizer/tokenizer_test_util.h"

namespace tokenmill::tokenizer {
namespace {

using testing::kNoBos;
using testing::MustCreate;

using testing::ByteLevelSpec;
using testing::ByteLevelSpelling;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Ids of raw-text tokens, for readable expectations.
std::vector<int32_t> ByteLevelIds(const Tokenizer& tokenizer, const std::vector<std::string>& raw) {
  std::vector<int32_t> ids;
  for (const std::string& text : raw) {
    std::optional<int32_t> id = tokenizer.TokenId(ByteLevelSpelling(text));
    if (!id) id = tokenizer.TokenId(text);  // special tokens are stored as plain text
    EXPECT_TRUE(id.has_value()) << "no token " << text;
    ids.push_back(id.value_or(-1));
  }
  return ids;
}

TokenizerSpec HelloWorldSpec(PreTokenizer pre) {
  return ByteLevelSpec(pre,
                       {{"h", "e"},
                        {"l", "l"},
                        {"he", "ll"},
                        {"hell", "o"},
                        {" ", "w"},
                        {"o", "r"},
                        {" w", "or"},
                        {"l", "d"},
                        {" wor", "ld"}},
                       {"<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"}, {"<tool>"});
}

TEST(ByteLevelTest, HelloWorld) {
  for (PreTokenizer pre : {PreTokenizer::kGpt2, PreTokenizer::kLlama3, PreTokenizer::kQwen2}) {
    TokenizerPtr t = MustCreate(HelloWorldSpec(pre));
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(t->Encode("hello world", kNoBos), ByteLevelIds(*t, {"hello", " world"}));
    EXPECT_EQ(t->Encode("hello world"), ByteLevelIds(*t, {"<|begin_of_text|>", "hello", " world"}));
    EXPECT_EQ(t->Encode(" hello", kNoBos), ByteLevelIds(*t, {" ", "hello"}));
    EXPECT_EQ(t->Encode("hellow", kNoBos), ByteLevelIds(*t, {"hello", "w"}));
  }
}

TEST(ByteLevelTest, LowestRankMergesFirstAndLeftmostOnTies) {
  TokenizerPtr t = MustCreate(ByteLevelSpec(PreTokenizer::kGpt2, {{"b", "c"}, {"a", "b"}}));
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->Encode("abc", kNoBos), ByteLevelIds(*t, {"a", "bc"}));
  TokenizerPtr aa = MustCreate(ByteLevelSpec(PreTokenizer::kGpt2, {{"a", "a"}}));
  ASSERT_NE(aa, nullptr);
  EXPECT_EQ(aa->Encode("aaa", kNoBos), ByteLevelIds(*aa, {"aa", "a"}));
  EXPECT_EQ(aa->Encode("aaaaa", kNoBos), ByteLevelIds(*aa, {"aa", "aa", "a"}));
}

TEST(ByteLevelTest, Llama3TakesWholeWordsThatAreTokens) {
  // "abc" is a token but no merge reaches it from "a b c" (the merges build
  // "ab" then stop); Llama 3 (ignore_merges) takes the word itself.
  TokenizerSpec spec = ByteLevelSpec(PreTokenizer::kLlama3, {{"a", "b"}});
  spec.tokens.push_back(ByteLevelSpelling("abc"));
  spec.token_types.push_back(TokenType::kNormal);
  TokenizerPtr llama3 = MustCreate(spec);
  spec.pre = PreTokenizer::kGpt2;
  TokenizerPtr gpt2 = MustCreate(spec);
  ASSERT_NE(llama3, nullptr);
  ASSERT_NE(gpt2, nullptr);
  EXPECT_EQ(llama3->Encode("abc", kNoBos), ByteLevelIds(*llama3, {"abc"}));
  EXPECT_EQ(gpt2->Encode("abc", kNoBos), ByteLevelIds(*gpt2, {"ab", "c"}));
}

TEST(ByteLevelTest, NumbersFollowThePreTokenizer) {
  const std::vector<std::pair<std::string, std::string>> merges = {
      {"1", "2"}, {"12", "3"}, {"4", "5"}, {"123", "45"}};
  TokenizerPtr gpt2 = MustCreate(ByteLevelSpec(PreTokenizer::kGpt2, merges));
  TokenizerPtr llama3 = MustCreate(ByteLevelSpec(PreTokenizer::kLlama3, merges));
  TokenizerPtr qwen2 = MustCreate(ByteLevelSpec(PreTokenizer::kQwen2, merges));
  ASSERT_TRUE(gpt2 && llama3 && qwen2);
  EXPECT_EQ(gpt2->Encode("12345", kNoBos), ByteLevelIds(*gpt2, {"12345"}));
  EXPECT_EQ(llama3->Encode("12345", kNoBos), ByteLevelIds(*llama3, {"123", "45"}));
  EXPECT_EQ(qwen2->Encode("12345", kNoBos), ByteLevelIds(*qwen2, {"1", "2", "3", "4", "5"}));
}

TEST(ByteLevelTest, ContractionsAndLineBreaks) {
  TokenizerPtr t = MustCreate(
      ByteLevelSpec(PreTokenizer::kLlama3, {{"'", "s"}, {"\r", "\n"}, {"\r\n", "\n"}, {"i", "t"}}));
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->Encode("it's", kNoBos), ByteLevelIds(*t, {"it", "'s"}));
  EXPECT_EQ(t->Encode("it\r\n\nit", kNoBos), ByteLevelIds(*t, {"it", "\r\n\n", "it"}));
}

TEST(ByteLevelTest, SpecialTokensAreParsedOnlyWhenAsked) {
  TokenizerPtr t = MustCreate(HelloWorldSpec(PreTokenizer::kLlama3));
  ASSERT_NE(t, nullptr);
  const int32_t eot = *t->TokenId("<|eot_id|>");
  Tokenizer::EncodeOptions parse = kNoBos;
  parse.parse_special = true;
  EXPECT_EQ(t->Encode("hello<|eot_id|>", parse), ByteLevelIds(*t, {"hello", "<|eot_id|>"}));

  const std::vector<int32_t> plain = t->Encode("hello<|eot_id|>", kNoBos);
  EXPECT_THAT(plain, ::testing::Not(::testing::Contains(eot)));
  EXPECT_EQ(t->Decode(plain), "hello<|eot_id|>");

  // User-defined tokens match either way and decode to their text.
  EXPECT_EQ(t->Encode("hello<tool>", kNoBos), ByteLevelIds(*t, {"hello", "<tool>"}));
  EXPECT_EQ(t->Decode(t->Encode("hello<tool>", kNoBos), /*skip_special=*/true), "hello<tool>");
}

TEST(ByteLevelTest, DecodeShowsOrSkipsControlTokens) {
  TokenizerPtr t = MustCreate(HelloWorldSpec(PreTokenizer::kLlama3));
  ASSERT_NE(t, nullptr);
  const std::vector<int32_t> ids =
      ByteLevelIds(*t, {"<|begin_of_text|>", "hello", " world", "<|eot_id|>"});
  EXPECT_EQ(t->Decode(ids), "<|begin_of_text|>hello world<|eot_id|>");
  EXPECT_EQ(t->Decode(ids, /*skip_special=*/true), "hello world");
  EXPECT_EQ(t->TokenBytes(ids[0]), "");
  EXPECT_EQ(t->TokenBytes(ids[2]), " world");
  EXPECT_EQ(t->Decode(std::vector<int32_t>{-1, 100000, ids[1]}), "hello");
}

TEST(ByteLevelTest, StreamDecoderKeepsOnlyTheControlTokensAsked) {
  TokenizerPtr t = MustCreate(HelloWorldSpec(PreTokenizer::kLlama3));
  ASSERT_NE(t, nullptr);
  const std::vector<int32_t> ids =
      ByteLevelIds(*t, {"<|begin_of_text|>", "hello", "<|eot_id|>", " world"});
  const int32_t kept[] = {ids[2]};
  StreamDecoder decoder(*t, /*skip_special=*/true, kept);
  std::string text;
  for (int32_t id : ids) text += decoder.Push(id);
  EXPECT_EQ(text, "hello<|eot_id|> world");
}

TEST(ByteLevelTest, Accessors) {
  TokenizerPtr t = MustCreate(HelloWorldSpec(PreTokenizer::kLlama3));
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->vocab_size(), 256 + 9 + 3 + 1);
  EXPECT_EQ(t->bos_id(), t->TokenId("<|begin_of_text|>"));
  EXPECT_TRUE(t->IsEos(*t->TokenId("<|end_of_text|>")));
  EXPECT_TRUE(t->IsEos(*t->TokenId("<|eot_id|>")));
  EXPECT_FALSE(t->IsEos(*t->TokenId("<|begin_of_text|>")));
  EXPECT_EQ(t->TokenText(*t->TokenId("Ġworld")), "Ġworld");
  EXPECT_EQ(t->token_type(*t->TokenId("<tool>")), TokenType::kUserDefined);
  EXPECT_FALSE(t->TokenId("nope").has_value());

  TokenizerSpec no_bos = HelloWorldSpec(PreTokenizer::kLlama3);
  no_bos.add_bos = false;
  no_bos.add_eos = true;
  TokenizerPtr u = MustCreate(no_bos);
  ASSERT_NE(u, nullptr);
  EXPECT_EQ(u->Encode("hello"), ByteLevelIds(*u, {"hello", "<|end_of_text|>"}));
}

TEST(ByteLevelTest, EmptyInput) {
  TokenizerPtr t = MustCreate(HelloWorldSpec(PreTokenizer::kGpt2));
  ASSERT_NE(t, nullptr);
  EXPECT_TRUE(t->Encode("", kNoBos).empty());
  EXPECT_EQ(t->Encode(""), ByteLevelIds(*t, {"<|begin_of_text|>"}));
  EXPECT_EQ(t->Decode({}), "");
}

// A trained vocabulary so that round trips exercise real merges too.
TokenizerSpec TrainedSpec(PreTokenizer pre) {
  std::mt19937 rng(11);
  std::string corpus = testing::EnglishLikeText(6000, 3);
  for (int i = 0; i < 60; ++i) corpus += testing::RandomText(rng, 10);
  return testing::TrainByteLevelSpec(corpus, pre, 300, {"<|begin_of_text|>", "<|eot_id|>"});
}

TEST(ByteLevelTest, RoundTripsAnyBytes) {
  for (PreTokenizer pre : {PreTokenizer::kGpt2, PreTokenizer::kLlama3, PreTokenizer::kQwen2}) {
    TokenizerPtr t = MustCreate(TrainedSpec(pre));
    ASSERT_NE(t, nullptr);
    std::mt19937 rng(static_cast<uint32_t>(pre) + 1);
    for (int i = 0; i < 2000; ++i) {
      const std::string text = testing::RandomBytes(rng, 48);
      ASSERT_EQ(t->Decode(t->Encode(text, kNoBos)), text) << "pre " << static_cast<int>(pre);
    }
    for (int i = 0; i < 2000; ++i) {
      const std::string text = testing::RandomText(rng, 16);
      const std::vector<int32_t> ids = t->Encode(text);
      ASSERT_EQ(t->Decode(ids, /*skip_special=*/true), text) << "pre " << static_cast<int>(pre);
      ASSERT_LE(ids.size(), text.size() + 1);
    }
  }
}

// The plain definition of BPE: repeatedly merge the lowest-ranked adjacent
// pair, leftmost first. The tokenizer's heap-based merging must agree.
std::vector<int32_t> NaiveEncodeWord(const Tokenizer& t, const std::map<std::string, size_t>& ranks,
                                     std::string_view word) {
  std::vector<std::string> symbols;
  for (char c : word) symbols.push_back(ByteLevelSpelling(std::string(1, c)));
  while (true) {
    size_t best = symbols.size();
    size_t best_rank = ranks.size();
    for (size_t i = 0; i + 1 < symbols.size(); ++i) {
      auto it = ranks.find(symbols[i] + " " + symbols[i + 1]);
      if (it != ranks.end() && it->second < best_rank) {
        best = i;
        best_rank = it->second;
      }
    }
    if (best == symbols.size()) break;
    symbols[best] += symbols[best + 1];
    symbols.erase(symbols.begin() + static_cast<std::ptrdiff_t>(best) + 1);
  }
  std::vector<int32_t> ids;
  for (const std::string& symbol : symbols) ids.push_back(t.TokenId(symbol).value_or(-1));
  return ids;
}

TEST(ByteLevelTest, MergesAgreeWithPlainBpe) {
  const TokenizerSpec spec = TrainedSpec(PreTokenizer::kGpt2);
  TokenizerPtr t = MustCreate(spec);
  ASSERT_NE(t, nullptr);
  std::map<std::string, size_t> ranks;
  for (size_t rank = 0; rank < spec.merges.size(); ++rank) {
    ranks.try_emplace(spec.merges[rank], rank);
  }
  std::mt19937 rng(17);
  std::vector<TextUnit> units;
  std::vector<std::string_view> words;
  for (int i = 0; i < 300; ++i) {
    const std::string text =
        testing::EnglishLikeText(200, static_cast<uint32_t>(i)) + testing::RandomText(rng, 8);
    words.clear();
    SplitWords(text, PreTokenizer::kGpt2, &units, &words);
    std::vector<int32_t> expected;
    for (std::string_view word : words) {
      const std::vector<int32_t> ids = NaiveEncodeWord(*t, ranks, word);
      expected.insert(expected.end(), ids.begin(), ids.end());
    }
    ASSERT_EQ(t->Encode(text, kNoBos), expected) << text;
  }
}

TEST(ByteLevelTest, ConcurrentEncodeMatchesSerial) {
  TokenizerPtr t = MustCreate(TrainedSpec(PreTokenizer::kLlama3));
  ASSERT_NE(t, nullptr);
  std::mt19937 rng(5);
  std::vector<std::string> texts;
  for (int i = 0; i < 200; ++i) texts.push_back(testing::RandomText(rng, 20));
  std::vector<std::vector<int32_t>> expected;
  for (const std::string& text : texts) expected.push_back(t->Encode(text));

  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  for (int w = 0; w < 4; ++w) {
    threads.emplace_back([&, w] {
      for (int round = 0; round < 5; ++round) {
        for (size_t i = 0; i < texts.size(); ++i) {
          if (t->Encode(texts[i]) != expected[i]) ++mismatches[w];
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_THAT(mismatches, ElementsAre(0, 0, 0, 0));
}

TEST(ByteLevelTest, CreateRefusesBadSpecs) {
  auto expect_invalid = [](const TokenizerSpec& spec, const std::string& words) {
    absl::StatusOr<TokenizerPtr> t = Tokenizer::Create(spec);
    ASSERT_FALSE(t.ok()) << words;
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(t.status().message()), HasSubstr(words));
  };
  const TokenizerSpec good = HelloWorldSpec(PreTokenizer::kLlama3);
  ASSERT_TRUE(Tokenizer::Create(good).ok());

  expect_invalid(TokenizerSpec{}, "no tokens");
  TokenizerSpec spec = good;
  spec.tokens[10] = "not-a-byte";
  expect_invalid(spec, "byte 0x0A");
  spec = good;
  spec.merges.push_back("x zz");
  expect_invalid(spec, "unknown token 'zz'");
  spec = good;
  spec.merges.push_back("ab");
  expect_invalid(spec, "two tokens");
  spec = good;
  spec.bos_id = static_cast<int32_t>(spec.tokens.size());
  expect_invalid(spec, "bos id");
  spec = good;
  spec.extra_eos_ids.push_back(-3);
  expect_invalid(spec, "extra eos id -3");
  spec = good;
  spec.token_types.pop_back();
  expect_invalid(spec, "token types");
  spec = good;
  spec.token_types[260] = static_cast<TokenType>(42);
  expect_invalid(spec, "unknown type 42");
  spec = good;
  spec.tokens.push_back(spec.tokens[65]);
  spec.token_types.push_back(TokenType::kNormal);
  expect_invalid(spec, "appears twice");
  spec = good;
  spec.scores = {1.0f};
  expect_invalid(spec, "scores");
}

}  // namespace
}  // namespace tokenmill::tokenizer
