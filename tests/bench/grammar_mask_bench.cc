// Prints what constrained decoding costs per step: FillNextTokenBitmask
// p50 / p99 / max per sequence per step, ApplyBitmask per step, and the
// compile time (schema -> automaton -> per-state masks) for several schemas,
// at the Llama 3 (128256) and Qwen3 (~151K) vocabularies of the tokenizer
// fixtures. Steps come from sequences sampled through the mask with random
// logits. A figure, not a test; the goal is p99 < 100 us at 128K.
// Then, per family, what masking one logits row costs as RequestStream
// does it, over the masks of those steps: before (a copy of the row, then
// the portable word loop) and now (ApplyBitmask in place), interleaved
// mask by mask so that machine load hits both alike; and what the
// length-budget check of a constrained step costs.
//
// Usage: grammar_mask_bench [hf_fixtures_dir [sequences_per_schema]]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "runtime/grammar/compiled_grammar.h"
#include "runtime/grammar/grammar_matcher.h"
#include "tests/bench/bench_stats.h"
#include "tests/grammar/constrained_sampling.h"
#include "tests/tokenizer/hf_fixture_files.h"

namespace tokenmill::grammar {
namespace {

namespace fs = std::filesystem;

struct BenchSchema {
  const char* name;
  const char* schema;  // nullptr: json_object
};

const BenchSchema kSchemas[] = {
    {"flat_object",
     R"({"type":"object","properties":{"name":{"type":"string","maxLength":32},"age":{"type":"integer","minimum":0,"maximum":150},"email":{"type":"string","format":"email"},"active":{"type":"boolean"},"score":{"type":"number","minimum":0,"maximum":100}},"required":["name","age","email","active","score"],"additionalProperties":false})"},
    {"nested_arrays",
     R"({"type":"object","properties":{"order":{"type":"object","properties":{"id":{"type":"string","format":"uuid"},"items":{"type":"array","items":{"type":"object","properties":{"sku":{"type":"string","maxLength":12},"qty":{"type":"integer","minimum":1,"maximum":1000},"tags":{"type":"array","items":{"type":"string","maxLength":10},"maxItems":4}},"required":["sku","qty","tags"]},"minItems":1,"maxItems":10},"note":{"type":["string","null"]}},"required":["id","items","note"]}},"required":["order"]})"},
    {"enum_heavy",
     R"({"type":"object","properties":{"country":{"enum":["Argentina","Australia","Austria","Belgium","Brazil","Canada","Chile","China","Colombia","Czechia","Denmark","Egypt","Finland","France","Germany","Greece","India","Indonesia","Ireland","Israel","Italy","Japan","Kenya","Mexico","Netherlands","New Zealand","Nigeria","Norway","Peru","Poland","Portugal","Romania","Saudi Arabia","Singapore","South Africa","South Korea","Spain","Sweden","Switzerland","Thailand","Turkey","Ukraine","United Kingdom","United States","Vietnam"]},"level":{"enum":["debug","info","notice","warning","error","critical","alert","emergency"]},"code":{"enum":[100,200,201,204,301,302,400,401,403,404,409,429,500,502,503]}},"required":["country","level","code"]})"},
    {"pattern_strings", R"({"type":"object","properties":{"sku":{"type":"string","pattern":"^[A-Z]{3}-[0-9]{4}$"},"color":{"type":"string","pattern":"^#[0-9a-f]{6}$"},"slug":{"type":"string","pattern":"^[a-z0-9]+(?:-[a-z0-9]+)*$"},"when":{"type":"string","format":"date-time"}},"required":["sku","color","slug","when"]})"},
    {"recursive_tree",
     R"({"$defs":{"node":{"type":"object","properties":{"name":{"type":"string"},"children":{"type":"array","items":{"$ref":"#/$defs/node"}}},"required":["name","children"]}},"$ref":"#/$defs/node"})"},
    {"json_object", nullptr},
    // The costly kind to compile: every position of a long bounded string is
    // a state that accepts most of the vocabulary.
    {"long_string",
     R"({"type":"object","properties":{"text":{"type":"string","maxLength":256}},"required":["text"]})"},
};

// ApplyBitmask as it was before the in-place change: the portable loop.
void ApplyBitmaskBefore(std::span<float> logits, std::span<const uint32_t> words) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  uint32_t neg_inf_bits;
  std::memcpy(&neg_inf_bits, &kNegInf, sizeof(neg_inf_bits));
  const size_t covered = std::min(logits.size(), words.size() * 32);
  size_t w = 0;
  for (; (w + 1) * 32 <= covered; ++w) {
    const uint32_t m = words[w];
    if (m == 0xFFFFFFFFu) continue;
    float* row = logits.data() + w * 32;
    if (m == 0) {
      std::fill(row, row + 32, kNegInf);
      continue;
    }
    uint32_t bits[32];
    std::memcpy(bits, row, sizeof(bits));
    for (int b = 0; b < 32; ++b) {
      const uint32_t keep = 0u - ((m >> b) & 1u);
      bits[b] = (bits[b] & keep) | (neg_inf_bits & ~keep);
    }
    std::memcpy(row, bits, sizeof(bits));
  }
  for (size_t i = w * 32; i < covered; ++i) {
    if (((words[i >> 5] >> (i & 31)) & 1u) == 0) logits[i] = kNegInf;
  }
  for (size_t i = covered; i < logits.size(); ++i) logits[i] = kNegInf;
}

// Masks of real steps: the sampled sequences replayed through a matcher.
void CollectMasks(const CompiledGrammarPtr& g, const testing::Sampled& sample, size_t limit,
                  std::vector<std::vector<uint32_t>>* masks) {
  GrammarMatcher m(g);
  std::vector<uint32_t> words(g->vocabulary().mask_words());
  for (size_t step = 0; step <= sample.ids.size() && masks->size() < limit; ++step) {
    m.FillNextTokenBitmask(words);
    masks->push_back(words);
    if (step < sample.ids.size() && !m.AcceptToken(sample.ids[step]).ok()) return;
  }
}

// What RequestStream's length-budget check costs per step: the sampled
// token tried on a copy of the matcher, then the bytes left to complete.
void TimeBudgetCheck(const CompiledGrammarPtr& g, const testing::Sampled& sample,
                     std::vector<double>* us) {
  GrammarMatcher m(g);
  GrammarMatcher trial(g);
  int64_t sink = 0;
  for (const int32_t id : sample.ids) {
    const auto t0 = std::chrono::steady_clock::now();
    trial = m;
    if (trial.AcceptToken(id).ok()) sink += trial.MinBytesToComplete();
    const auto t1 = std::chrono::steady_clock::now();
    us->push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
    if (!m.AcceptToken(id).ok()) break;
  }
  if (sink < 0) std::printf("unreachable\n");
}

void RunRowMasking(const std::vector<std::vector<uint32_t>>& masks, int32_t vocab_size) {
  std::vector<float> source(vocab_size);
  uint64_t x = 88172645463325252ull;
  for (float& l : source) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    l = static_cast<float>(x >> 40) * (1.0f / 16777216.0f);
  }
  std::vector<float> row(source.size());
  std::vector<float> copy;
  std::vector<double> before_us, kernel_before_us, after_us;
  const auto us = [](auto a, auto b) {
    return std::chrono::duration<double, std::micro>(b - a).count();
  };
  for (int pass = 0; pass < 3; ++pass) {
    for (const std::vector<uint32_t>& words : masks) {
      // Before: RequestStream copied the executor's row, then masked the copy.
      std::memcpy(row.data(), source.data(), row.size() * 4);
      const auto t0 = std::chrono::steady_clock::now();
      copy.assign(row.begin(), row.end());
      ApplyBitmaskBefore(copy, words);
      const auto t1 = std::chrono::steady_clock::now();
      before_us.push_back(us(t0, t1));
      // The old word loop alone, in place.
      std::memcpy(row.data(), source.data(), row.size() * 4);
      const auto t2 = std::chrono::steady_clock::now();
      ApplyBitmaskBefore(row, words);
      const auto t3 = std::chrono::steady_clock::now();
      kernel_before_us.push_back(us(t2, t3));
      // Now: in place.
      std::memcpy(row.data(), source.data(), row.size() * 4);
      const auto t4 = std::chrono::steady_clock::now();
      ApplyBitmask(row, words);
      const auto t5 = std::chrono::steady_clock::now();
      after_us.push_back(us(t4, t5));
      if (!std::equal(row.begin(), row.end(), copy.begin(),
                      [](float a, float b) { return std::memcmp(&a, &b, sizeof(a)) == 0; })) {
        std::fprintf(stderr, "ApplyBitmask differs from the old loop\n");
        std::exit(1);
      }
    }
  }
  const bench::SampleFigures b = bench::Summarize(before_us);
  const bench::SampleFigures k = bench::Summarize(kernel_before_us);
  const bench::SampleFigures a = bench::Summarize(after_us);
  std::printf(
      "row masking over %zu masks x 3: copy+old loop p50 %.1f us p99 %.1f us | old loop in place "
      "p50 %.1f us p99 %.1f us | ApplyBitmask in place p50 %.1f us p99 %.1f us\n",
      masks.size(), b.p50_us, b.p99_us, k.p50_us, k.p99_us, a.p50_us, a.p99_us);
}

int RunFamily(const fs::path& dir, int sequences) {
  absl::StatusOr<tokenizer::TokenizerPtr> tok = tokenizer::testing::LoadHfFixtureTokenizer(dir);
  if (!tok.ok()) {
    std::fprintf(stderr, "%s: %s\n", dir.c_str(), tok.status().ToString().c_str());
    return 1;
  }
  const auto t0 = std::chrono::steady_clock::now();
  const auto vocab = TokenVocabulary::FromTokenizer(**tok);
  const double vocab_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::printf("\n%s: vocabulary %d tokens (%zu with bytes), index built in %.1f ms\n",
              dir.filename().c_str(), vocab->size(), vocab->sorted_ids().size(), vocab_ms);
  std::printf("%-16s %9s %7s %7s %7s %9s %7s %7s %9s %9s %9s %9s %9s\n", "schema", "compile",
              "states", "walked", "masks", "undecided", "memory", "steps", "mask_p50", "mask_p99",
              "mask_max", "apply_p50", "apply_p99");
  std::vector<double> all_mask;
  std::vector<std::vector<uint32_t>> masks;
  std::vector<double> budget_us;
  for (const BenchSchema& s : kSchemas) {
    JsonSchemaOptions options;
    const auto c0 = std::chrono::steady_clock::now();
    absl::StatusOr<CompiledGrammarPtr> g = s.schema == nullptr
                                               ? CompileJsonObjectGrammar(options, vocab)
                                               : CompileJsonSchemaGrammar(s.schema, options, vocab);
    const double compile_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - c0).count();
    if (!g.ok()) {
      std::fprintf(stderr, "%s: %s\n", s.name, g.status().ToString().c_str());
      return 1;
    }
    std::mt19937_64 rng(42);
    std::vector<double> mask_us;
    std::vector<double> apply_us;
    for (int i = 0; i < sequences; ++i) {
      absl::StatusOr<testing::Sampled> sample =
          testing::SampleConstrained(*g, &rng, {.soft_byte_budget = 600});
      if (!sample.ok()) {
        std::fprintf(stderr, "%s: %s\n", s.name, sample.status().ToString().c_str());
        return 1;
      }
      mask_us.insert(mask_us.end(), sample->mask_us.begin(), sample->mask_us.end());
      CollectMasks(*g, *sample, masks.size() + 40, &masks);
      TimeBudgetCheck(*g, *sample, &budget_us);
      apply_us.insert(apply_us.end(), sample->apply_us.begin(), sample->apply_us.end());
    }
    all_mask.insert(all_mask.end(), mask_us.begin(), mask_us.end());
    const size_t steps = mask_us.size();
    const bench::SampleFigures m = bench::Summarize(mask_us);
    const bench::SampleFigures a = bench::Summarize(apply_us);
    std::printf(
        "%-16s %7.1fms %7d %7zu %7zu %9zu %6.1fM %7zu %7.1fus %7.1fus %7.1fus %7.1fus %7.1fus\n",
        s.name, compile_ms, (*g)->automaton().num_states(), (*g)->walked_states(),
        (*g)->distinct_masks(), (*g)->undecided_total(), (*g)->memory_bytes() / 1048576.0, steps,
        m.p50_us, m.p99_us, m.max_us, a.p50_us, a.p99_us);
  }
  const bench::SampleFigures all = bench::Summarize(all_mask);
  std::printf("%-16s %7zu steps: mask p50 %.1f us, p99 %.1f us, max %.1f us\n", "all schemas",
              all_mask.size(), all.p50_us, all.p99_us, all.max_us);
  RunRowMasking(masks, vocab->size());
  const bench::SampleFigures b = bench::Summarize(budget_us);
  std::printf(
      "budget check (matcher copy + AcceptToken + MinBytesToComplete) over %zu steps: "
      "p50 %.2f us, p99 %.2f us, max %.1f us\n",
      budget_us.size(), b.p50_us, b.p99_us, b.max_us);
  return 0;
}

int Run(int argc, char** argv) {
  const fs::path fixtures =
      argc > 1 ? fs::path(argv[1]) : fs::path(TOKENMILL_SOURCE_DIR) / "tests/tokenizer/hf_fixtures";
  const int sequences = argc > 2 ? std::atoi(argv[2]) : 20;
  for (const char* family : {"llama3", "qwen3"}) {
    if (int rc = RunFamily(fixtures / family, sequences); rc != 0) return rc;
  }
  return 0;
}

}  // namespace
}  // namespace tokenmill::grammar

int main(int argc, char** argv) { return tokenmill::grammar::Run(argc, argv); }
