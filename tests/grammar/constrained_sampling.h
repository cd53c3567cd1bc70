// Generation through a grammar with random logits (a random-weight model in
// effect: the constraint does all the work). Shared by the ajv property test
// and the mask benchmark.
#ifndef TOKENMILL_TESTS_GRAMMAR_CONSTRAINED_SAMPLING_H_
#define TOKENMILL_TESTS_GRAMMAR_CONSTRAINED_SAMPLING_H_

#include <bit>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "runtime/grammar/grammar_matcher.h"

namespace tokenmill::grammar::testing {

struct SampleOptions {
  // Past this many bytes, only tokens that bring the end closer are taken
  // (single bytes along a shortest completion), so generation finishes.
  int32_t soft_byte_budget = 400;
  // A generation that has not ended after this many tokens is an error.
  int32_t max_tokens = 4000;
  // true: random logits through ApplyBitmask, argmax taken (timed, for the
  // benchmark); false: a uniformly random allowed token straight from the
  // mask, the same distribution without touching a vocabulary of floats.
  bool through_logits = true;
};

struct Sampled {
  std::vector<int32_t> ids;      // without the final EOS
  std::vector<double> mask_us;   // FillNextTokenBitmask time per step
  std::vector<double> apply_us;  // ApplyBitmask time per step
};

// Samples until EOS: logits are uniform random, masked, argmax taken.
inline absl::StatusOr<Sampled> SampleConstrained(const CompiledGrammarPtr& grammar,
                                                 std::mt19937_64* rng,
                                                 const SampleOptions& options = {}) {
  const TokenVocabulary& vocab = grammar->vocabulary();
  GrammarMatcher matcher(grammar);
  std::vector<uint32_t> words(vocab.mask_words());
  std::vector<float> logits(vocab.size());
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  // Logits from xorshift: mt19937 over 128K logits per step would dominate.
  uint64_t x = (*rng)() | 1;
  GrammarMatcher trial = matcher;
  Sampled out;
  int64_t bytes = 0;
  for (int32_t step = 0; step < options.max_tokens; ++step) {
    const auto t0 = std::chrono::steady_clock::now();
    matcher.FillNextTokenBitmask(words);
    const auto t1 = std::chrono::steady_clock::now();
    if (options.through_logits) {
      for (float& l : logits) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        l = static_cast<float>(x >> 40) * (1.0f / 16777216.0f);
      }
      const auto t2 = std::chrono::steady_clock::now();
      ApplyBitmask(logits, words);
      const auto t3 = std::chrono::steady_clock::now();
      out.apply_us.push_back(std::chrono::duration<double, std::micro>(t3 - t2).count());
    }
    out.mask_us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
    int32_t pick = -1;
    if (bytes >= options.soft_byte_budget) {
      // Finish: EOS when allowed, else the allowed single-byte token that
      // leaves the fewest bytes to go.
      for (const int32_t eos : vocab.eos_ids()) {
        if ((words[eos >> 5] >> (eos & 31)) & 1u) pick = eos;
      }
      int32_t best = std::numeric_limits<int32_t>::max();
      const bool complete = matcher.IsComplete();
      for (int32_t id = 0; id < vocab.size() && !complete; ++id) {
        if (vocab.bytes(id).size() != 1 || !((words[id >> 5] >> (id & 31)) & 1u)) continue;
        trial = matcher;
        if (!trial.AcceptToken(id).ok()) continue;
        const int32_t left = trial.MinBytesToComplete();
        if (left < best || (left == best && uniform(*rng) < 0.3f)) {
          best = left;
          pick = id;
        }
      }
    } else if (options.through_logits) {
      float best = -std::numeric_limits<float>::infinity();
      for (int32_t id = 0; id < vocab.size(); ++id) {
        if (logits[id] > best) {
          best = logits[id];
          pick = id;
        }
      }
    } else {
      int64_t allowed = 0;
      for (const uint32_t w : words) allowed += std::popcount(w);
      if (allowed > 0) {
        int64_t k = static_cast<int64_t>((*rng)() % static_cast<uint64_t>(allowed));
        for (size_t w = 0; w < words.size() && pick < 0; ++w) {
          const int bits = std::popcount(words[w]);
          if (k >= bits) {
            k -= bits;
            continue;
          }
          for (int b = 0; b < 32; ++b) {
            if (((words[w] >> b) & 1u) && k-- == 0) {
              pick = static_cast<int32_t>(w * 32 + b);
              break;
            }
          }
        }
      }
    }
    if (pick < 0) return absl::InternalError(absl::StrCat("no token allowed at step ", step));
    if (absl::Status s = matcher.AcceptToken(pick); !s.ok()) {
      return absl::InternalError(absl::StrCat("masked token refused: ", s.ToString()));
    }
    if (matcher.finished()) return out;
    out.ids.push_back(pick);
    bytes += static_cast<int64_t>(vocab.bytes(pick).size());
  }
  return absl::InternalError("generation did not end within max_tokens");
}

}  // namespace tokenmill::grammar::testing

#endif  // TOKENMILL_TESTS_GRAMMAR_CONSTRAINED_SAMPLING_H_
