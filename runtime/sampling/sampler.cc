#include "runtime/sampling/sampler.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>

#include "absl/strings/str_cat.h"

namespace tokenmill::sampling {
namespace {

uint64_t SeedFor(const SamplingParams& params) {
  if (params.seed.has_value()) return *params.seed;
  std::random_device device;
  return (static_cast<uint64_t>(device()) << 32) ^ static_cast<uint64_t>(device());
}

// Top-p buckets candidates by how far below the max their logit lies, kTopPBucketsPerUnit
// buckets per logit unit; the last bucket also takes everything further down.
constexpr int kTopPBuckets = 256;
constexpr float kTopPBucketsPerUnit = 16.0f;

int TopPBucket(float below_max) {
  constexpr float kLimit = static_cast<float>(kTopPBuckets - 1) / kTopPBucketsPerUnit;
  if (below_max >= kLimit) return kTopPBuckets - 1;  // also +inf from -inf logits
  return static_cast<int>(below_max * kTopPBucketsPerUnit);
}

}  // namespace

Sampler::Sampler(const SamplingParams& params, int32_t vocab_size)
    : params_(params),
      vocab_size_(vocab_size),
      rng_(SeedFor(params)),
      processed_(static_cast<size_t>(vocab_size)),
      weights_(static_cast<size_t>(vocab_size)),
      candidates_(static_cast<size_t>(vocab_size)),
      boundary_(static_cast<size_t>(vocab_size)),
      output_counts_(static_cast<size_t>(vocab_size), 0),
      seen_(static_cast<size_t>(vocab_size), 0) {
  seen_ids_.reserve(static_cast<size_t>(vocab_size));
}

void Sampler::MarkSeen(int32_t token) {
  if (seen_[token]) return;
  seen_[token] = 1;
  seen_ids_.push_back(token);
}

absl::Status Sampler::AcceptPrompt(std::span<const int32_t> prompt) {
  for (int32_t token : prompt) {
    if (token < 0 || token >= vocab_size_) {
      return absl::InvalidArgumentError(
          absl::StrCat("prompt token ", token, " outside vocabulary of ", vocab_size_));
    }
  }
  for (int32_t token : prompt) MarkSeen(token);
  return absl::OkStatus();
}

absl::Status Sampler::Accept(int32_t token) {
  if (token < 0 || token >= vocab_size_) {
    return absl::InvalidArgumentError(
        absl::StrCat("token ", token, " outside vocabulary of ", vocab_size_));
  }
  ++output_counts_[token];
  MarkSeen(token);
  return absl::OkStatus();
}

absl::StatusOr<std::span<const float>> Sampler::ProcessLogits(std::span<const float> logits) {
  if (logits.size() != processed_.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("logits hold ", logits.size(), " values, vocabulary is ", vocab_size_));
  }
  constexpr float kMinusInf = -std::numeric_limits<float>::infinity();
  for (size_t i = 0; i < logits.size(); ++i) {
    processed_[i] = std::isnan(logits[i]) ? kMinusInf : logits[i];
  }
  for (const auto& [id, bias] : params_.logit_bias) {
    if (id >= 0 && id < vocab_size_) processed_[static_cast<size_t>(id)] += bias;
  }
  const float repetition = params_.repetition_penalty;
  for (int32_t id : seen_ids_) {
    float x = processed_[id];
    if (repetition != 1.0f) x = x > 0.0f ? x / repetition : x * repetition;
    const int32_t count = output_counts_[id];
    if (count > 0) {
      x -= params_.frequency_penalty * static_cast<float>(count) + params_.presence_penalty;
    }
    processed_[id] = x;
  }
  const float temperature = params_.temperature;
  if (temperature > 0.0f && temperature != 1.0f) {
    for (float& x : processed_) x /= temperature;
  }
  return std::span<const float>(processed_);
}

absl::StatusOr<SampledToken> Sampler::Sample(std::span<const float> logits) {
  if (absl::StatusOr<std::span<const float>> done = ProcessLogits(logits); !done.ok()) {
    return done.status();
  }
  // Argmax by the strict comparison keeps the lowest id on exact ties.
  int32_t best = 0;
  for (int32_t i = 1; i < vocab_size_; ++i) {
    if (processed_[i] > processed_[best]) best = i;
  }
  const float max_logit = processed_[best];
  if (!std::isfinite(max_logit)) {
    return absl::InvalidArgumentError(
        absl::StrCat("logits have no finite maximum (max is ", max_logit, ")"));
  }
  double sum = 0.0;
  for (size_t i = 0; i < processed_.size(); ++i) {
    weights_[i] = std::exp(processed_[i] - max_logit);
    sum += weights_[i];
  }
  const float log_sum = static_cast<float>(std::log(sum));

  SampledToken out;
  if (params_.temperature == 0.0f) {
    out.token = best;
  } else {
    out.token = Draw(Truncate(max_logit));
  }
  out.logprob = processed_[out.token] - max_logit - log_sum;
  FillTopLogprobs(max_logit, log_sum, out);
  return out;
}

int32_t Sampler::Truncate(float max_logit) {
  auto before = [this](int32_t a, int32_t b) { return Before(a, b); };
  const auto begin = candidates_.begin();
  std::iota(begin, candidates_.end(), 0);
  size_t n = candidates_.size();
  bool ordered = true;  // candidates_[0, n) in a platform-independent order

  if (params_.top_k > 0 && static_cast<size_t>(params_.top_k) < n) {
    n = static_cast<size_t>(params_.top_k);
    std::nth_element(begin, begin + static_cast<ptrdiff_t>(n), candidates_.end(), before);
    ordered = false;
  }
  // Top-p keeps the candidates' own order, then appends its sorted boundary bucket.
  if (params_.top_p < 1.0f) n = ApplyTopP(n, max_logit);
  if (params_.min_p > 0.0f) {
    // p_i >= min_p * p_max  <=>  logit_i >= max_logit + log(min_p); the max always survives
    // top-k and top-p, so p_max is the global one. A stable compaction keeps the order.
    const float threshold = max_logit + std::log(params_.min_p);
    size_t kept = 0;
    for (size_t i = 0; i < n; ++i) {
      if (processed_[candidates_[i]] >= threshold) candidates_[kept++] = candidates_[i];
    }
    n = kept;
  }
  if (!ordered) std::sort(begin, begin + static_cast<ptrdiff_t>(n), before);
  return static_cast<int32_t>(n);
}

size_t Sampler::ApplyTopP(size_t n, float max_logit) {
  // One pass finds the bucket where the cumulative mass reaches top_p. Buckets above it are kept
  // whole (their tokens are strictly more likely), only the boundary bucket is sorted.
  std::array<double, kTopPBuckets> mass{};
  double total = 0.0;
  for (size_t i = 0; i < n; ++i) {
    const int32_t id = candidates_[i];
    mass[static_cast<size_t>(TopPBucket(max_logit - processed_[id]))] += weights_[id];
    total += weights_[id];
  }
  const double target = static_cast<double>(params_.top_p) * total;
  int boundary = 0;
  double mass_above = 0.0;
  for (; boundary < kTopPBuckets - 1; ++boundary) {
    if (mass_above + mass[static_cast<size_t>(boundary)] >= target) break;
    mass_above += mass[static_cast<size_t>(boundary)];
  }
  size_t kept = 0;
  size_t in_boundary = 0;
  for (size_t i = 0; i < n; ++i) {
    const int32_t id = candidates_[i];
    const int bucket = TopPBucket(max_logit - processed_[id]);
    if (bucket < boundary) {
      candidates_[kept++] = id;
    } else if (bucket == boundary) {
      boundary_[in_boundary++] = id;
    }
  }
  const auto begin = boundary_.begin();
  std::sort(begin, begin + static_cast<ptrdiff_t>(in_boundary),
            [this](int32_t a, int32_t b) { return Before(a, b); });
  double cumulative = mass_above;
  for (size_t i = 0; i < in_boundary; ++i) {
    candidates_[kept++] = boundary_[i];
    cumulative += weights_[boundary_[i]];
    if (cumulative >= target) break;
  }
  return kept;
}

int32_t Sampler::Draw(int32_t n) {
  double total = 0.0;
  for (int32_t i = 0; i < n; ++i) total += weights_[candidates_[i]];
  const double target = rng_.Uniform() * total;
  double cumulative = 0.0;
  int32_t last_possible = candidates_[0];  // overwritten: the max (weight 1) is a candidate
  for (int32_t i = 0; i < n; ++i) {
    const double w = weights_[candidates_[i]];
    if (w <= 0.0) continue;
    cumulative += w;
    last_possible = candidates_[i];
    if (target < cumulative) return candidates_[i];
  }
  // Rounding can leave target == total; never return a zero-probability token.
  return last_possible;
}

void Sampler::FillTopLogprobs(float max_logit, float log_sum, SampledToken& out) {
  const size_t k = std::min(static_cast<size_t>(params_.logprobs), candidates_.size());
  out.num_top = static_cast<int32_t>(k);
  if (k == 0) return;
  std::iota(candidates_.begin(), candidates_.end(), 0);
  std::partial_sort(candidates_.begin(), candidates_.begin() + static_cast<ptrdiff_t>(k),
                    candidates_.end(), [this](int32_t a, int32_t b) { return Before(a, b); });
  for (size_t i = 0; i < k; ++i) {
    const int32_t id = candidates_[i];
    out.top[i] = TokenLogprob{.token = id, .logprob = processed_[id] - max_logit - log_sum};
  }
}

}  // namespace tokenmill::sampling
