// Prints Encode throughput of a byte-level tokenizer (a few thousand trained
// merges, Llama 3 and GPT-2 pre-tokenizers) on about 1 MB of English-like
// text and, given the directory of the Hugging Face fixtures
// (tests/tokenizer/hf_fixtures), of each real family's tokenizer on its
// multilingual corpus repeated to about 1 MB. Throughput is the best of 3
// rounds by wall clock and by process CPU time (the CPU figure holds up
// better on a shared machine). A figure, not a test.
//
// Usage: tokenizer_bench [hf_fixtures_dir [family]]   (a family: only its figure)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <functional>
#include <string>

#include "nlohmann/json.hpp"
#include "runtime/tokenizer/hf_tokenizer.h"
#include "runtime/tokenizer/tokenizer.h"
#include "tests/tokenizer/hf_fixture_files.h"
#include "tests/tokenizer/test_vocab.h"

namespace tokenmill::tokenizer {
namespace {

namespace fs = std::filesystem;

double CpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

struct Throughput {
  double wall_mb_s = 0;
  double cpu_mb_s = 0;
};

// Best of 3 runs of fn over `bytes` bytes.
Throughput Measure(size_t bytes, const std::function<void()>& fn) {
  double best_wall = 1e9, best_cpu = 1e9;
  for (int round = 0; round < 3; ++round) {
    const auto start = std::chrono::steady_clock::now();
    const double cpu_start = CpuSeconds();
    fn();
    best_cpu = std::min(best_cpu, CpuSeconds() - cpu_start);
    best_wall = std::min(
        best_wall, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return {static_cast<double>(bytes) / best_wall / 1e6,
          static_cast<double>(bytes) / best_cpu / 1e6};
}

// only: one family's name, or "" for all.
int RunFamilies(const fs::path& fixtures, const std::string& only) {
  const nlohmann::json corpus = nlohmann::json::parse(
      testing::ReadFixtureFile(fixtures.parent_path() / "corpus" / "corpus.json"));
  std::string text;
  while (text.size() < (1u << 20)) {
    for (const auto& line : corpus) text += line.get<std::string>() + "\n";
  }
  for (const char* family : {"qwen3", "gemma3", "llama3", "deepseek_v3", "llama2"}) {
    if (!only.empty() && only != family) continue;
    absl::StatusOr<TokenizerPtr> tokenizer =
        testing::LoadHfFixtureTokenizer(fixtures / family, /*generation_config=*/false);
    if (!tokenizer.ok()) {
      std::fprintf(stderr, "%s: %s\n", family, std::string(tokenizer.status().message()).c_str());
      return 1;
    }
    size_t tokens = 0;
    const Throughput t = Measure(text.size(), [&] { tokens = (*tokenizer)->Encode(text).size(); });
    std::printf("%s (corpus x%zu): %zu bytes -> %zu tokens, %.1f MB/s wall, %.1f MB/s cpu\n",
                family, text.size() / corpus.size(), text.size(), tokens, t.wall_mb_s, t.cpu_mb_s);
  }
  return 0;
}

int Run(int argc, char** argv) {
  if (argc > 2) return RunFamilies(argv[1], argv[2]);
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
    const Throughput t = Measure(text.size(), [&] { tokens = (*tokenizer)->Encode(text).size(); });
    const bool round_trip = (*tokenizer)->Decode((*tokenizer)->Encode(text)) == text;
    std::printf(
        "byte-level %s: %zu merges (trained in %.1f s), %zu bytes -> %zu tokens, %.1f MB/s wall, "
        "%.1f MB/s cpu, round trip %s\n",
        pre == PreTokenizer::kLlama3 ? "llama3" : "gpt2", spec.merges.size(), train_s, text.size(),
        tokens, t.wall_mb_s, t.cpu_mb_s, round_trip ? "ok" : "FAILED");
    // One 1 MB "word": merging must stay O(n log n), not quadratic.
    std::string word;
    while (word.size() < (1u << 20)) word += "thement";
    size_t word_tokens = 0;
    const Throughput w =
        Measure(word.size(), [&] { word_tokens = (*tokenizer)->Encode(word).size(); });
    std::printf("  1 MB single word: %zu tokens, %.1f MB/s wall, %.1f MB/s cpu\n", word_tokens,
                w.wall_mb_s, w.cpu_mb_s);
  }
  return argc > 1 ? RunFamilies(argv[1], "") : 0;
}

}  // namespace
}  // namespace tokenmill::tokenizer

int main(int argc, char** argv) { return tokenmill::tokenizer::Run(argc, argv); }
