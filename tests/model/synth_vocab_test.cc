// The synthetic vocabulary is a real byte-level BPE vocabulary that the
// tokenizer accepts, deterministic, and cheap at Llama 3 size.
#include <string>

#include "absl/container/flat_hash_set.h"
#include "gtest/gtest.h"
#include "runtime/model/synth_vocab.h"
#include "runtime/tokenizer/tokenizer.h"

namespace tokenmill::model {
namespace {

using tokenizer::PreTokenizer;
using tokenizer::TokenType;

TEST(ByteToUnicode, Gpt2Alphabet) {
  EXPECT_EQ(ByteToUnicode('A'), "A");
  EXPECT_EQ(ByteToUnicode(' '), "\xC4\xA0");   // U+0120 'Ġ'
  EXPECT_EQ(ByteToUnicode('\n'), "\xC4\x8A");  // U+010A 'Ċ'
  EXPECT_EQ(ByteToUnicode(0), "\xC4\x80");     // U+0100
  EXPECT_EQ(ByteToUnicode(0xAD), "\xC5\x83");  // soft hyphen: U+0143
  EXPECT_EQ(ByteToUnicode(0xFF), "\xC3\xBF");  // ÿ spells itself
}

void ExpectWellFormed(const tokenizer::TokenizerSpec& spec, int32_t vocab_size) {
  ASSERT_EQ(static_cast<int32_t>(spec.tokens.size()), vocab_size);
  ASSERT_EQ(spec.token_types.size(), spec.tokens.size());
  absl::flat_hash_set<std::string> unique(spec.tokens.begin(), spec.tokens.end());
  EXPECT_EQ(unique.size(), spec.tokens.size()) << "token texts repeat";
  for (int b = 0; b < 256; ++b) EXPECT_EQ(spec.tokens[b], ByteToUnicode(static_cast<uint8_t>(b)));
  // Every merge joins two known tokens into a known token.
  for (const std::string& merge : spec.merges) {
    const size_t space = merge.find(' ');
    ASSERT_NE(space, std::string::npos) << merge;
    EXPECT_TRUE(unique.contains(merge.substr(0, space))) << merge;
    EXPECT_TRUE(unique.contains(merge.substr(space + 1))) << merge;
    EXPECT_TRUE(unique.contains(merge.substr(0, space) + merge.substr(space + 1))) << merge;
  }
  const int32_t n = vocab_size - kSynthSpecialCount;
  for (int32_t k = 0; k < kSynthSpecialCount; ++k) {
    EXPECT_EQ(spec.tokens[n + k], kSynthSpecialTokens[k]);
    EXPECT_EQ(spec.token_types[n + k], TokenType::kControl);
  }
  EXPECT_EQ(spec.token_types[n - 1], TokenType::kNormal);
  EXPECT_EQ(spec.bos_id, n);
  EXPECT_EQ(spec.eos_id, n + 1);
  EXPECT_EQ(spec.extra_eos_ids, std::vector<int32_t>{n + 2});
}

TEST(SynthVocabulary, SmallVocabularyIsCorpusMerges) {
  auto spec = BuildSynthVocabulary(300, PreTokenizer::kLlama3);
  ASSERT_TRUE(spec.ok()) << spec.status();
  ExpectWellFormed(*spec, 300);
  EXPECT_EQ(spec->merges.size(), 300u - 256 - 5);
  // The most frequent pair of the corpus: space then "t" ("the", "to", "that").
  EXPECT_EQ(spec->merges[0], "\xC4\xA0 t");
}

// Extra control tokens follow the vocabulary's own in place of normal
// tokens: the size stays, and the tokenizer finds each as one control token.
TEST(SynthVocabulary, ExtraControlTokensTakeTheLastIds) {
  const std::string extra[] = {"<|python_tag|>", "[TOOL_CALLS]"};
  auto spec = BuildSynthVocabulary(600, PreTokenizer::kLlama3, extra);
  ASSERT_TRUE(spec.ok()) << spec.status();
  ASSERT_EQ(spec->tokens.size(), 600u);
  const int32_t n = 600 - kSynthSpecialCount - 2;
  EXPECT_EQ(spec->bos_id, n);
  EXPECT_EQ(spec->tokens[n + kSynthSpecialCount], "<|python_tag|>");
  EXPECT_EQ(spec->tokens[n + kSynthSpecialCount + 1], "[TOOL_CALLS]");
  auto tok = tokenizer::Tokenizer::Create(*spec);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->TokenId("[TOOL_CALLS]"), 599);
  EXPECT_EQ((*tok)->token_type(599), TokenType::kControl);
  EXPECT_EQ((*tok)->Decode(std::vector<int32_t>{599}, /*skip_special=*/true), "");
  EXPECT_FALSE(
      BuildSynthVocabulary(256 + kSynthSpecialCount + 2, PreTokenizer::kLlama3, extra).ok());
}

TEST(SynthVocabulary, TokenizesAndRoundTrips) {
  auto spec = BuildSynthVocabulary(2000, PreTokenizer::kLlama3);
  ASSERT_TRUE(spec.ok()) << spec.status();
  ExpectWellFormed(*spec, 2000);
  auto tok = tokenizer::Tokenizer::Create(*spec);
  ASSERT_TRUE(tok.ok()) << tok.status();
  const std::string text = "The factory runs through the night, and every token has a price: 42.";
  const std::vector<int32_t> ids = (*tok)->Encode(text);
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids[0], *spec->bos_id);
  // Learned merges compress English well below one token per byte.
  EXPECT_LT(ids.size(), text.size() / 2);
  EXPECT_EQ((*tok)->Decode(ids, /*skip_special=*/true), text);
  EXPECT_TRUE((*tok)->IsEos(*spec->eos_id));
  EXPECT_TRUE((*tok)->IsEos(spec->extra_eos_ids[0]));
}

TEST(SynthVocabulary, Llama3SizeIsDeterministic) {
  auto a = BuildSynthVocabulary(128256, PreTokenizer::kLlama3);
  ASSERT_TRUE(a.ok());
  ExpectWellFormed(*a, 128256);
  auto b = BuildSynthVocabulary(128256, PreTokenizer::kLlama3);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(a->tokens, b->tokens);
  EXPECT_EQ(a->merges, b->merges);
  // Pinned: the same vocabulary on every machine.
  uint64_t h = 0xcbf29ce484222325ull;
  for (const std::string& m : a->merges) {
    for (unsigned char c : m) h = (h ^ c) * 0x100000001b3ull;
    h = (h ^ '\n') * 0x100000001b3ull;
  }
  EXPECT_EQ(h, 438499214883361448ull) << "update only when the vocabulary is meant to change";
  auto tok = tokenizer::Tokenizer::Create(*a);
  ASSERT_TRUE(tok.ok()) << tok.status();
}

TEST(SynthVocabulary, TooSmallIsRefused) {
  EXPECT_EQ(BuildSynthVocabulary(261, PreTokenizer::kLlama3).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(BuildSynthVocabulary(262, PreTokenizer::kQwen2).ok());
}

}  // namespace
}  // namespace tokenmill::model
