// Token masks against a slow reference (each token's bytes through a copy of
// the matcher), on a small vocabulary and on Llama 3's 128K one; EOS only at
// completion; ApplyBitmask.
#include <cmath>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/grammar/constrained_sampling.h"
#include "tests/grammar/grammar_test_util.h"
#include "tests/tokenizer/hf_fixture_files.h"

namespace tokenmill::grammar {
namespace {

using testing::MustCompile;
using testing::SmallVocabulary;

int32_t FindToken(const TokenVocabulary& v, std::string_view bytes) {
  for (int32_t id = 0; id < v.size(); ++id) {
    if (v.bytes(id) == bytes) return id;
  }
  ADD_FAILURE() << "no token " << bytes;
  return 0;
}

bool Bit(const std::vector<uint32_t>& words, int32_t id) {
  return (words[id >> 5] >> (id & 31)) & 1u;
}

// Compares the mask with the reference at every step of `steps` sampled
// sequences; returns the number of mismatches (reported as failures).
int CheckMasksAlongSamples(const CompiledGrammarPtr& g, int sequences, int tokens_per_check,
                           uint64_t seed) {
  const TokenVocabulary& v = g->vocabulary();
  std::mt19937_64 rng(seed);
  int mismatches = 0;
  for (int s = 0; s < sequences; ++s) {
    absl::StatusOr<testing::Sampled> sample =
        testing::SampleConstrained(g, &rng, {.soft_byte_budget = 120, .through_logits = false});
    EXPECT_TRUE(sample.ok()) << sample.status();
    if (!sample.ok()) return 1;
    GrammarMatcher m(g);
    std::vector<uint32_t> words(v.mask_words());
    for (size_t step = 0; step <= sample->ids.size(); ++step) {
      if (static_cast<int>(step) % tokens_per_check == 0 || step == sample->ids.size()) {
        m.FillNextTokenBitmask(words);
        // A refused token leaves the probe unchanged; re-copy after a success.
        GrammarMatcher probe = m;
        for (int32_t id = 0; id < v.size(); ++id) {
          const bool reference = probe.AcceptToken(id).ok();
          if (reference) probe = m;
          if (reference != Bit(words, id)) {
            if (++mismatches < 10) {
              ADD_FAILURE() << "step " << step << " token " << id << " \"" << v.bytes(id)
                            << "\": mask " << Bit(words, id) << " reference " << reference;
            }
          }
        }
        // EOS exactly at completion.
        for (const int32_t eos : v.eos_ids()) EXPECT_EQ(Bit(words, eos), m.IsComplete());
      }
      if (step < sample->ids.size()) {
        EXPECT_TRUE(m.AcceptToken(sample->ids[step]).ok());
      }
    }
    EXPECT_TRUE(m.IsComplete());
  }
  return mismatches;
}

const std::vector<std::string>& MaskSchemas() {
  static const std::vector<std::string> kSchemas = {
      R"({"type":"object","properties":{"name":{"type":"string","maxLength":12},"age":{"type":"integer","minimum":0,"maximum":150},"tags":{"type":"array","items":{"type":"string","maxLength":5},"maxItems":6}},"required":["name","age"]})",
      R"({"$defs":{"node":{"type":"object","properties":{"v":{"type":"integer"},"kids":{"type":"array","items":{"$ref":"#/$defs/node"},"maxItems":2}},"required":["v"]}},"$ref":"#/$defs/node"})",
      R"({"type":"array","items":{"anyOf":[{"type":"string","format":"date"},{"enum":["x","yz",null]},{"type":"number","minimum":-10,"maximum":10}]},"minItems":1,"maxItems":8})",
      R"({"type":"object","properties":{"code":{"type":"string","pattern":"^[A-Z]{3}-[0-9]+$"},"meta":{}},"required":["code","meta"]})",
      // Positions of a long bounded string share walks (token-equivalent
      // states); masks must still stop at the bound.
      R"({"type":"array","items":{"type":"string","minLength":3,"maxLength":40},"minItems":1,"maxItems":2})",
  };
  return kSchemas;
}

TEST(GrammarMaskTest, MatchesReferenceOnSmallVocabulary) {
  const auto vocab = SmallVocabulary();
  for (const std::string& schema : MaskSchemas()) {
    const CompiledGrammarPtr g = MustCompile(schema, vocab);
    ASSERT_NE(g, nullptr);
    EXPECT_EQ(CheckMasksAlongSamples(g, 6, 1, 7), 0) << schema;
  }
  absl::StatusOr<CompiledGrammarPtr> object = CompileJsonObjectGrammar({}, vocab);
  ASSERT_TRUE(object.ok());
  EXPECT_EQ(CheckMasksAlongSamples(*object, 6, 1, 8), 0);
}

TEST(GrammarMaskTest, MatchesReferenceOnLlama3Vocabulary) {
  absl::StatusOr<tokenizer::TokenizerPtr> tok = tokenizer::testing::LoadHfFixtureTokenizer(
      std::filesystem::path(TOKENMILL_SOURCE_DIR) / "tests/tokenizer/hf_fixtures/llama3");
  ASSERT_TRUE(tok.ok()) << tok.status();
  const auto vocab = TokenVocabulary::FromTokenizer(**tok);
  ASSERT_EQ(vocab->size(), 128256);
  for (const std::string& schema : MaskSchemas()) {
    const CompiledGrammarPtr g = MustCompile(schema, vocab);
    ASSERT_NE(g, nullptr);
    EXPECT_EQ(CheckMasksAlongSamples(g, 1, 7, 11), 0) << schema;
  }
  absl::StatusOr<CompiledGrammarPtr> object = CompileJsonObjectGrammar({}, vocab);
  ASSERT_TRUE(object.ok());
  EXPECT_EQ(CheckMasksAlongSamples(*object, 1, 7, 12), 0);
}

TEST(GrammarMaskTest, EosOnlyWhenComplete) {
  const auto vocab = SmallVocabulary();
  const CompiledGrammarPtr g = MustCompile(R"({"type":"array","items":{"type":"integer"}})", vocab);
  ASSERT_NE(g, nullptr);
  const int32_t eos = vocab->eos_ids()[0];
  const int32_t control = eos - 1;
  GrammarMatcher m(g);
  std::vector<uint32_t> words(vocab->mask_words());
  m.FillNextTokenBitmask(words);
  EXPECT_FALSE(Bit(words, eos));
  EXPECT_FALSE(Bit(words, control));
  EXPECT_FALSE(m.AcceptToken(eos).ok());
  ASSERT_TRUE(testing::AcceptByteTokens(m, "[1,2]").ok());
  EXPECT_TRUE(m.IsComplete());
  EXPECT_TRUE(m.IsTerminated());
  m.FillNextTokenBitmask(words);
  for (int32_t id = 0; id < vocab->size(); ++id) EXPECT_EQ(Bit(words, id), id == eos) << id;
  EXPECT_FALSE(m.AcceptToken('1').ok());
  EXPECT_TRUE(m.AcceptToken(eos).ok());
  EXPECT_TRUE(m.finished());
  m.FillNextTokenBitmask(words);
  for (const uint32_t w : words) EXPECT_EQ(w, 0u);
}

TEST(GrammarMaskTest, RefusedTokenLeavesStateUnchanged) {
  const auto vocab = SmallVocabulary();
  const CompiledGrammarPtr g = MustCompile(
      R"({"type":"object","properties":{"a":{"type":"integer"}},"required":["a"]})", vocab);
  ASSERT_NE(g, nullptr);
  GrammarMatcher m(g);
  ASSERT_TRUE(testing::AcceptByteTokens(m, "{\"a\":1").ok());
  EXPECT_EQ(m.AcceptToken('x').code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(m.AcceptToken('"').code(), absl::StatusCode::kInvalidArgument);
  // A multi-byte token refused at its second byte ("}" closes the value,
  // nothing may follow) leaves no trace either.
  EXPECT_EQ(m.AcceptToken(FindToken(*vocab, "},")).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(testing::AcceptByteTokens(m, "2}").ok());
  EXPECT_TRUE(m.IsComplete());
  EXPECT_EQ(m.MinBytesToComplete(), 0);
}

TEST(GrammarMaskTest, ApplyBitmaskMasksDisallowedAndTail) {
  std::vector<float> logits(70, 1.0f);
  std::vector<uint32_t> words = {0x00000005u, 0xFFFFFFFFu};  // 64 tokens; logits has 6 more rows
  ApplyBitmask(logits, words);
  for (int i = 0; i < 70; ++i) {
    const bool allowed = i == 0 || i == 2 || (i >= 32 && i < 64);
    EXPECT_EQ(std::isinf(logits[i]), !allowed) << i;
  }
}

// Random masks mixing whole, empty and partial words (every lane of the
// vectorised path) against the bit-by-bit definition; the row keeps its
// allowed values bit for bit.
TEST(GrammarMaskTest, ApplyBitmaskMatchesBitByBit) {
  std::mt19937 rng(5);
  for (const size_t n : {size_t{1}, size_t{31}, size_t{32}, size_t{200}, size_t{1000}}) {
    std::vector<uint32_t> words((n + 31) / 32);
    for (uint32_t& w : words) {
      const uint32_t kind = rng() % 4;
      w = kind == 0 ? 0u : kind == 1 ? 0xFFFFFFFFu : static_cast<uint32_t>(rng());
    }
    std::vector<float> logits(n + 40);  // rows past the mask for some n
    for (size_t i = 0; i < logits.size(); ++i) logits[i] = static_cast<float>(i) * 0.5f - 7.0f;
    const std::vector<float> original = logits;
    ApplyBitmask(logits, words);
    for (size_t i = 0; i < logits.size(); ++i) {
      const bool allowed = i < words.size() * 32 && ((words[i >> 5] >> (i & 31)) & 1u);
      if (allowed) {
        EXPECT_EQ(logits[i], original[i]) << n << " " << i;
      } else {
        EXPECT_TRUE(std::isinf(logits[i]) && logits[i] < 0) << n << " " << i;
      }
    }
  }
}

}  // namespace
}  // namespace tokenmill::grammar

namespace tokenmill::grammar {
namespace {

// Two identical recursive rules offered at every level: the stacks would
// double with each '['; the matcher keeps a bounded number and stays right.
TEST(GrammarMaskTest, AmbiguousRecursionStaysBounded) {
  const std::string schema =
      R"({"$defs":{"n":{"type":"array","items":{"anyOf":[{"$ref":"#/$defs/n"},{"$ref":"#/$defs/m"}]},"maxItems":2},)"
      R"("m":{"type":"array","items":{"anyOf":[{"$ref":"#/$defs/n"},{"$ref":"#/$defs/m"}]},"maxItems":2}},"$ref":"#/$defs/n"})";
  const auto vocab = testing::SmallVocabulary();
  const CompiledGrammarPtr g = testing::MustCompile(schema, vocab);
  ASSERT_NE(g, nullptr);
  const std::string deep = std::string(40, '[') + std::string(40, ']');
  EXPECT_TRUE(testing::AcceptsDocument(g, deep));
  EXPECT_FALSE(testing::AcceptsDocument(g, "[[],[],[]]"));
  EXPECT_EQ(CheckMasksAlongSamples(g, 4, 1, 21), 0);
}

}  // namespace
}  // namespace tokenmill::grammar
