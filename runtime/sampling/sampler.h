// Picks the next token of one sequence from its logits: penalties, temperature, top-k, top-p,
// min-p, then a seeded draw, and reports log-probabilities.
#ifndef TOKENMILL_RUNTIME_SAMPLING_SAMPLER_H_
#define TOKENMILL_RUNTIME_SAMPLING_SAMPLER_H_

#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/sampling/sampling_params.h"
#include "runtime/sampling/sampling_rng.h"

namespace tokenmill::sampling {

// A token id with its log-probability.
struct TokenLogprob {
  int32_t token = -1;
  float logprob = 0.0f;
};

// Result of one Sample call. Fixed-size so that sampling never allocates.
struct SampledToken {
  int32_t token = -1;
  // Log-probability of `token` under the processed distribution: log-softmax of the logits after
  // penalties and temperature (temperature 0 counts as 1), before top-k/top-p/min-p truncation.
  float logprob = 0.0f;
  // The params.logprobs most likely tokens under that distribution, most likely first, lowest id
  // first on ties.
  std::array<TokenLogprob, kMaxLogprobs> top{};
  int32_t num_top = 0;

  std::span<const TokenLogprob> top_logprobs() const {
    return std::span<const TokenLogprob>(top.data(), static_cast<size_t>(num_top));
  }
};

// Sampling state of one sequence. All buffers are sized for the vocabulary at construction, so
// Sample and Accept do not allocate. Not thread-safe: one Sampler per sequence, used by one thread.
class Sampler {
 public:
  // `params` must have passed Validate(); vocab_size > 0.
  Sampler(const SamplingParams& params, int32_t vocab_size);

  // Marks prompt tokens as seen for the repetition penalty (frequency/presence only count output).
  // kInvalidArgument if an id is outside [0, vocab_size).
  absl::Status AcceptPrompt(std::span<const int32_t> prompt);

  // Records a generated token for all penalties. kInvalidArgument if outside [0, vocab_size).
  absl::Status Accept(int32_t token);

  // Picks the next token. Does not call Accept. kInvalidArgument if logits.size() != vocab_size
  // or no logit is finite. NaN logits are treated as -inf.
  absl::StatusOr<SampledToken> Sample(std::span<const float> logits);

  // Applies the penalties and temperature to a copy of `logits` (what Sample draws from, before
  // truncation); exposed so that callers and tests can inspect the processed distribution.
  // Same errors as Sample.
  absl::StatusOr<std::span<const float>> ProcessLogits(std::span<const float> logits);

  int32_t vocab_size() const { return vocab_size_; }
  const SamplingParams& params() const { return params_; }

 private:
  // Token order used everywhere: higher logit first, lower id first on ties (a total order, so
  // results do not depend on the standard library's selection algorithms).
  bool Before(int32_t a, int32_t b) const {
    return processed_[a] > processed_[b] || (processed_[a] == processed_[b] && a < b);
  }
  void MarkSeen(int32_t token);
  void FillTopLogprobs(float max_logit, float log_sum, SampledToken& out);
  // Narrows candidates_[0, n) with top-k, top-p and min-p; returns the new count.
  int32_t Truncate(float max_logit);
  // Keeps the smallest most-likely prefix of candidates_[0, n) reaching top_p; returns its size.
  size_t ApplyTopP(size_t n, float max_logit);
  int32_t Draw(int32_t n);

  SamplingParams params_;
  int32_t vocab_size_;
  SamplingRng rng_;
  std::vector<float> processed_;  // logits after penalties and temperature
  std::vector<float> weights_;    // exp(processed_ - max): unnormalized probabilities
  std::vector<int32_t> candidates_;
  std::vector<int32_t> boundary_;       // top-p scratch: candidates in the boundary bucket
  std::vector<int32_t> output_counts_;  // occurrences in generated output
  std::vector<uint8_t> seen_;           // in prompt or output
  std::vector<int32_t> seen_ids_;       // ids with seen_ set, so penalties skip the vocabulary
};

}  // namespace tokenmill::sampling

#endif  // TOKENMILL_RUNTIME_SAMPLING_SAMPLER_H_
