#include "runtime/sampling/sampling_params.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace tokenmill::sampling {
namespace {

// False for NaN, so NaN is rejected as out of range.
bool InClosed(float v, float lo, float hi) { return lo <= v && v <= hi; }

absl::Status OutOfRange(const char* field, float value, const char* range) {
  return absl::InvalidArgumentError(
      absl::StrFormat("%s must be in %s, got %g", field, range, static_cast<double>(value)));
}

}  // namespace

absl::Status SamplingParams::Validate() const {
  if (!InClosed(temperature, 0.0f, 2.0f)) return OutOfRange("temperature", temperature, "[0, 2]");
  if (top_k < 0) return OutOfRange("top_k", static_cast<float>(top_k), "[0, inf) (0 = off)");
  if (!(top_p > 0.0f && top_p <= 1.0f)) return OutOfRange("top_p", top_p, "(0, 1]");
  if (!InClosed(min_p, 0.0f, 1.0f)) return OutOfRange("min_p", min_p, "[0, 1]");
  if (!(repetition_penalty > 0.0f && repetition_penalty <= 2.0f)) {
    return OutOfRange("repetition_penalty", repetition_penalty, "(0, 2]");
  }
  if (!InClosed(frequency_penalty, -2.0f, 2.0f)) {
    return OutOfRange("frequency_penalty", frequency_penalty, "[-2, 2]");
  }
  if (!InClosed(presence_penalty, -2.0f, 2.0f)) {
    return OutOfRange("presence_penalty", presence_penalty, "[-2, 2]");
  }
  if (logprobs < 0 || logprobs > kMaxLogprobs) {
    return absl::InvalidArgumentError(
        absl::StrCat("logprobs must be in [0, ", kMaxLogprobs, "], got ", logprobs));
  }
  if (max_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat("max_tokens must be >= 1, got ", max_tokens));
  }
  for (int32_t id : stop_token_ids) {
    if (id < 0) {
      return absl::InvalidArgumentError(absl::StrCat("stop_token_ids must be >= 0, got ", id));
    }
  }
  if (stop.size() > static_cast<size_t>(kMaxStopStrings)) {
    return absl::InvalidArgumentError(
        absl::StrCat("stop may hold at most ", kMaxStopStrings, " strings, got ", stop.size()));
  }
  for (const std::string& s : stop) {
    if (s.empty() || s.size() > static_cast<size_t>(kMaxStopStringBytes)) {
      return absl::InvalidArgumentError(
          absl::StrCat("stop strings must be 1..", kMaxStopStringBytes, " bytes, got ", s.size()));
    }
  }
  if (logit_bias.size() > static_cast<size_t>(kMaxLogitBias)) {
    return absl::InvalidArgumentError(absl::StrCat("logit_bias may hold at most ", kMaxLogitBias,
                                                   " tokens, got ", logit_bias.size()));
  }
  for (const auto& [id, bias] : logit_bias) {
    if (id < 0) return absl::InvalidArgumentError(absl::StrCat("logit_bias token ", id, " < 0"));
    if (!InClosed(bias, -kLogitBiasLimit, kLogitBiasLimit)) {
      return OutOfRange("logit_bias", bias, "[-100, 100]");
    }
  }
  return absl::OkStatus();
}

}  // namespace tokenmill::sampling
