// Prints Encode throughput of a byte-level tokenizer (a few thousand trained
// merges, Llama 3 and GPT-2 pre-tokenizers) on about 1 MB of English-like
// text. A figure, not a test.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>

#include "runtime/tokenizer/tokenizer.h"
#include "tests/tokenizer/test_vocab.h"

namespace tokenmill::tokenizer {
namespace {

int Run() {
  const std::string text = testing::EnglishLikeText(1 << 20, 42);
  const std::string corpus = testing::EnglishLikeText(200 << 10, 7);
  for (PreTokenizer pre : {PreTokenizer::kLlama3, PreTokenizer::kGpt2}) {
    const auto train_start = std::chrono::steady_clock::now();
    const TokenizerSpec spec = testing::TrainByteLevelSpec(corpus, pre, 3000);
    const double train_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - train_start).count();
    absl::StatusOr<TokenizerPtr> tokenizer = Tokenizer::Create(spec);
    if (!tokenizer.ok()) {
      std::fprintf(stderr, "%s\n", std::string(tokenizer.status().message()).c_str());
      return 1;
    }
    size_t tokens = 0;
    double best_s = 1e9;
    for (int round = 0; round < 3; ++round) {
      const auto start = std::chrono::steady_clock::now();
      tokens = (*tokenizer)->Encode(text).size();
      best_s = std::min(
          best_s, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    const bool round_trip = (*tokenizer)->Decode((*tokenizer)->Encode(text)) == text;
    std::printf(
        "byte-level %s: %zu merges (trained in %.1f s), %zu bytes -> %zu tokens, %.1f MB/s, "
        "round trip %s\n",
        pre == PreTokenizer::kLlama3 ? "llama3" : "gpt2", spec.merges.size(), train_s, text.size(),
        tokens, static_cast<double>(text.size()) / best_s / 1e6, round_trip ? "ok" : "FAILED");
    // One 1 MB "word": merging must stay O(n log n), not quadratic.
    std::string word;
    while (word.size() < (1u << 20)) word += "thement";
    const auto start = std::chrono::steady_clock::now();
    const size_t word_tokens = (*tokenizer)->Encode(word).size();
    const double word_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("  1 MB single word: %zu tokens, %.1f MB/s\n", word_tokens,
                static_cast<double>(word.size()) / word_s / 1e6);
  }
  return 0;
}

}  // namespace
}  // namespace tokenmill::tokenizer

int main() { return tokenmill::tokenizer::Run(); }
