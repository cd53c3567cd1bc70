#include "runtime/instance/request_stream.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"

namespace tokenmill::runtime {

std::string_view FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kCancelled:
      return "cancelled";
    case FinishReason::kDeadline:
      return "deadline";
    case FinishReason::kError:
      return "error";
  }
  return "error";
}

RequestStream::RequestStream(GenerationRequest request, GenerationSink sink,
                             const tokenizer::Tokenizer& tokenizer, int32_t vocab_size,
                             int32_t context, SteadyTime now)
    : request_(std::move(request)),
      sink_(std::move(sink)),
      tokenizer_(tokenizer),
      context_(context),
      sampler_(request_.sampling, vocab_size),
      decoder_(tokenizer, /*skip_special=*/true, request_.kept_control_tokens),
      stop_(request_.sampling.stop),
      queued_at_(now) {
  usage_.prompt_tokens = static_cast<int32_t>(request_.prompt.size());
  if (request_.grammar != nullptr) matcher_.emplace(request_.grammar);
}

absl::Status RequestStream::Start() { return sampler_.AcceptPrompt(request_.prompt); }

absl::StatusOr<RequestStream::Next> RequestStream::OnLogits(std::span<float> logits,
                                                            SteadyTime now) {
  if (matcher_) {
    // Tokens the grammar does not allow get -inf before penalties and
    // temperature, so they can be neither drawn nor reported as alternatives.
    mask_words_.resize(static_cast<size_t>(matcher_->grammar().vocabulary().mask_words()));
    matcher_->FillNextTokenBitmask(mask_words_);
    grammar::ApplyBitmask(logits, mask_words_);
  }
  auto sampled = sampler_.Sample(logits);
  if (!sampled.ok()) return sampled.status();
  if (matcher_) {
    // A value cut by max_tokens or the context would not parse: when the
    // sampled token leaves the value unable to end in the tokens left, the
    // row keeps only single-byte tokens (and EOS) that can, and is sampled
    // again. Only near the budget is a token refused, so the extra work is
    // one trial step per token until then.
    const int32_t left = TokensLeft();
    const int32_t need = TokensToEndAfter(sampled->token);
    if (need > left - 1) {
      RestrictToBudget(logits, left);
      sampled = sampler_.Sample(logits);
      if (!sampled.ok()) return sampled.status();
    }
  }
  return Advance(sampled->token, sampled->logprob, sampled->top_logprobs(), now);
}

int32_t RequestStream::TokensLeft() const {
  return std::min(request_.sampling.max_tokens - usage_.completion_tokens,
                  context_ - usage_.prompt_tokens - usage_.completion_tokens);
}

int32_t RequestStream::TokensToEndAfter(int32_t token) {
  const auto& stops = request_.sampling.stop_token_ids;
  if ((request_.stop_at_eos && tokenizer_.IsEos(token)) ||
      std::find(stops.begin(), stops.end(), token) != stops.end()) {
    return 0;
  }
  if (!trial_) {
    trial_.emplace(*matcher_);
  } else {
    *trial_ = *matcher_;
  }
  if (!trial_->AcceptToken(token).ok()) return -1;
  if (trial_->finished()) return 0;
  const int32_t bytes = trial_->MinBytesToComplete();
  if (bytes == 0) return trial_->IsTerminated() ? 0 : 1;
  return bytes + 1;
}

void RequestStream::RestrictToBudget(std::span<float> row, int32_t left) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  const grammar::TokenVocabulary& v = matcher_->grammar().vocabulary();
  const auto allowed = [&](int32_t id) {
    return id >= 0 && static_cast<size_t>(id) < row.size() && row[id] != kNegInf;
  };
  kept_.clear();
  int32_t best = std::numeric_limits<int32_t>::max();
  const auto consider = [&](int32_t id) {
    const int32_t need = TokensToEndAfter(id);
    if (need < 0) return;
    // Within budget, or (when nothing is) among those that end soonest.
    const int32_t over = std::max(need, left - 1);
    if (over < best) {
      best = over;
      kept_.clear();
    }
    if (over == best) kept_.emplace_back(id, row[id]);
  };
  for (const int32_t eos : v.eos_ids()) {
    if (allowed(eos)) consider(eos);
  }
  for (int b = 0; b < 256; ++b) {
    const int32_t id = v.byte_token(static_cast<uint8_t>(b));
    if (allowed(id)) consider(id);
  }
  // A vocabulary without single-byte tokens for these bytes: no steering.
  if (kept_.empty()) return;
  std::fill(row.begin(), row.end(), kNegInf);
  for (const auto& [id, logit] : kept_) row[id] = logit;
}

bool RequestStream::GreedyOnDevice() const {
  const sampling::SamplingParams& p = request_.sampling;
  return p.temperature == 0.0f && p.logprobs == 0 && !request_.wants_logprobs &&
         request_.prompt_logprobs < 0 && p.repetition_penalty == 1.0f &&
         p.frequency_penalty == 0.0f && p.presence_penalty == 0.0f && p.logit_bias.empty() &&
         !matcher_;
}

void RequestStream::OnPromptLogits(int32_t pos, std::span<const float> logits) {
  const auto& prompt = request_.prompt;
  if (request_.prompt_logprobs < 0 || pos + 1 != std::max(next_prompt_pos_, 1) ||
      pos + 1 >= static_cast<int32_t>(prompt.size())) {
    return;
  }
  if (next_prompt_pos_ == 0) {
    GeneratedToken first;
    first.id = prompt[0];
    first.logprob = std::numeric_limits<float>::quiet_NaN();
    pending_.prompt.push_back(std::move(first));
  }
  next_prompt_pos_ = pos + 2;
  // log-softmax of the raw row (no penalties or temperature: the model's own
  // distribution); NaN counts as -inf.
  float max_logit = -std::numeric_limits<float>::infinity();
  for (float x : logits) {
    if (x > max_logit) max_logit = x;
  }
  double sum = 0.0;
  for (float x : logits) {
    if (x == x) sum += std::exp(static_cast<double>(x) - max_logit);
  }
  const float log_z = max_logit + static_cast<float>(std::log(sum));
  auto logprob = [&](int32_t id) {
    const float x = logits[static_cast<size_t>(id)];
    return x == x ? x - log_z : -std::numeric_limits<float>::infinity();
  };
  GeneratedToken entry;
  entry.id = prompt[static_cast<size_t>(pos + 1)];
  entry.logprob = entry.id >= 0 && static_cast<size_t>(entry.id) < logits.size()
                      ? logprob(entry.id)
                      : -std::numeric_limits<float>::infinity();
  const size_t k = std::min(static_cast<size_t>(request_.prompt_logprobs), logits.size());
  if (k > 0) {
    prompt_ids_.resize(logits.size());
    std::iota(prompt_ids_.begin(), prompt_ids_.end(), 0);
    auto value = [&](int32_t id) {
      const float x = logits[static_cast<size_t>(id)];
      return x == x ? x : -std::numeric_limits<float>::infinity();
    };
    std::partial_sort(prompt_ids_.begin(), prompt_ids_.begin() + static_cast<ptrdiff_t>(k),
                      prompt_ids_.end(), [&](int32_t a, int32_t b) {
                        return value(a) > value(b) || (value(a) == value(b) && a < b);
                      });
    for (size_t i = 0; i < k; ++i) entry.top.push_back({prompt_ids_[i], logprob(prompt_ids_[i])});
  }
  pending_.prompt.push_back(std::move(entry));
}

absl::StatusOr<RequestStream::Next> RequestStream::OnToken(int32_t token, SteadyTime now) {
  return Advance(token, 0.0f, {}, now);
}

absl::StatusOr<RequestStream::Next> RequestStream::Advance(
    int32_t token, float logprob, std::span<const sampling::TokenLogprob> top, SteadyTime now) {
  if (absl::Status s = sampler_.Accept(token); !s.ok()) return s;
  if (matcher_) {
    // Only a token the mask allowed gets here (OnToken is never used with a
    // grammar: GreedyOnDevice is false), so a refusal is a bug, not input.
    if (absl::Status s = matcher_->AcceptToken(token); !s.ok()) {
      return absl::InternalError(
          absl::StrCat("constrained decoding: token ", token, " left the grammar: ", s.message()));
    }
  }
  if (!first_token_at_) first_token_at_ = now;
  ++usage_.completion_tokens;

  GeneratedToken out;
  out.id = token;
  out.logprob = logprob;
  out.top.assign(top.begin(), top.end());
  pending_.tokens.push_back(std::move(out));

  const auto& stops = request_.sampling.stop_token_ids;
  const bool stop_token = (request_.stop_at_eos && tokenizer_.IsEos(token)) ||
                          std::find(stops.begin(), stops.end(), token) != stops.end();
  if (stop_token) {
    reason_ = FinishReason::kStop;
    return Next{token, true};
  }
  // An EOS the grammar took ends a constrained request even under
  // ignore_eos: the grammar allows nothing after it.
  if (matcher_ && matcher_->finished()) {
    reason_ = FinishReason::kStop;
    return Next{token, true};
  }
  const sampling::StopMatch match = stop_.Feed(decoder_.Push(token));
  pending_.text.append(match.text);
  if (match.stopped) {
    reason_ = FinishReason::kStop;
    return Next{token, true};
  }
  // The value is complete and only EOS could follow: end here (the EOS adds
  // no text).
  if (matcher_ && matcher_->IsTerminated()) {
    reason_ = FinishReason::kStop;
    return Next{token, true};
  }
  if (usage_.completion_tokens >= request_.sampling.max_tokens ||
      usage_.prompt_tokens + usage_.completion_tokens >= context_) {
    reason_ = FinishReason::kLength;
    return Next{token, true};
  }
  return Next{token, false};
}

void RequestStream::Emit(bool final) {
  pending_.finished = final;
  pending_.usage = usage_;
  pending_.queued_at = queued_at_;
  pending_.first_token_at = first_token_at_;
  GenerationUpdate update = std::move(pending_);
  pending_ = GenerationUpdate{};
  if (sink_) sink_(std::move(update));
}

void RequestStream::Flush() {
  if (sent_final_ ||
      (pending_.tokens.empty() && pending_.text.empty() && pending_.prompt.empty())) {
    return;
  }
  Emit(false);
}

void RequestStream::Finish(std::optional<FinishReason> reason, absl::Status error) {
  if (sent_final_) return;
  if (reason) reason_ = reason;
  if (!reason_) reason_ = FinishReason::kStop;
  if (!stop_.stopped()) {
    pending_.text.append(stop_.Feed(decoder_.Flush()).text);
    if (!stop_.stopped()) pending_.text.append(stop_.Flush().text);
  }
  pending_.finish_reason = *reason_;
  pending_.error = std::move(error);
  sent_final_ = true;
  Emit(true);
}

}  // namespace tokenmill::runtime
