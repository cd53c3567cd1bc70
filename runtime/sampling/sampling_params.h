// Per-request sampling settings (OpenAI-compatible ranges) and their validation.
#ifndef TOKENMILL_RUNTIME_SAMPLING_SAMPLING_PARAMS_H_
#define TOKENMILL_RUNTIME_SAMPLING_SAMPLING_PARAMS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace tokenmill::sampling {

// Most top alternatives one sampled token may carry (OpenAI's limit for `logprobs`).
inline constexpr int kMaxLogprobs = 20;
// Most stop strings per request; bounds the per-piece matching work.
inline constexpr int kMaxStopStrings = 16;
// Longest stop string in bytes; bounds how much text StopMatcher holds back.
inline constexpr int kMaxStopStringBytes = 256;
// Most logit_bias entries per request; bounds the per-step work they add.
inline constexpr int kMaxLogitBias = 1024;
// A logit bias lies in [-kLogitBiasLimit, kLogitBiasLimit] (OpenAI's range).
inline constexpr float kLogitBiasLimit = 100.0f;

// How one sequence picks its next tokens. Defaults sample from the full softmax at temperature 1.
// Processing order in Sampler: logit bias -> penalties -> temperature -> top-k -> top-p -> min-p
// -> draw.
struct SamplingParams {
  // Divides logits; 0 means greedy (argmax, lowest id on ties). Range [0, 2].
  float temperature = 1.0f;
  // Keeps only the k most likely tokens; 0 = off. Range >= 0.
  int32_t top_k = 0;
  // Keeps the smallest most-likely set whose probability reaches top_p; 1 = off. Range (0, 1].
  float top_p = 1.0f;
  // Drops tokens whose probability is below min_p * (probability of the most likely); 0 = off.
  // Range [0, 1].
  float min_p = 0.0f;
  // Tokens seen in prompt or output: positive logits are divided by it, negative multiplied.
  // 1 = off. Range (0, 2].
  float repetition_penalty = 1.0f;
  // Subtracted once per earlier occurrence of a token in the output (OpenAI). Range [-2, 2].
  float frequency_penalty = 0.0f;
  // Subtracted once if a token occurred in the output at all (OpenAI). Range [-2, 2].
  float presence_penalty = 0.0f;
  // Fixes the random stream: same seed + same logits give the same tokens on every platform.
  // Unset: seeded from std::random_device.
  std::optional<uint64_t> seed;
  // Number of most likely alternatives reported with each token. Range [0, kMaxLogprobs].
  int32_t logprobs = 0;
  // Most tokens to generate; enforced by the runtime, not the Sampler. Range >= 1.
  int32_t max_tokens = 256;
  // Generation ends after any of these tokens (enforced by the runtime). Each >= 0.
  std::vector<int32_t> stop_token_ids;
  // Generation ends before any of these strings (see StopMatcher). Non-empty, at most
  // kMaxStopStrings of at most kMaxStopStringBytes each.
  std::vector<std::string> stop;
  // Added to the named tokens' logits before everything else (OpenAI logit_bias): -100 keeps a
  // token from being drawn in practice, +100 makes it all but certain. Each id >= 0 (the instance
  // checks it against the model's vocabulary), each bias in [-100, 100], at most kMaxLogitBias.
  std::vector<std::pair<int32_t, float>> logit_bias;

  // kInvalidArgument naming the first field out of range and the allowed range; OK otherwise.
  absl::Status Validate() const;
};

}  // namespace tokenmill::sampling

#endif  // TOKENMILL_RUNTIME_SAMPLING_SAMPLING_PARAMS_H_
