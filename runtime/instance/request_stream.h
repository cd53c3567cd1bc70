// RequestStream: the engine thread's state of one request: its sampler, the
// text decoder and stop-string matcher, the finish rules, usage, and the
// update being gathered for its sink. One per request; engine thread only.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/grammar/grammar_matcher.h"
#include "runtime/instance/generation.h"
#include "runtime/sampling/sampler.h"
#include "runtime/sampling/stop_matcher.h"
#include "runtime/tokenizer/tokenizer.h"

namespace tokenmill::runtime {

class RequestStream {
 public:
  // The tokenizer outlives the stream. vocab_size is the logits' width.
  RequestStream(GenerationRequest request, GenerationSink sink,
                const tokenizer::Tokenizer& tokenizer, int32_t vocab_size, int32_t context,
                SteadyTime now);

  // Feeds the prompt to the sampler's penalties. kInvalidArgument for ids
  // outside the vocabulary.
  absl::Status Start();

  struct Next {
    int32_t token = -1;
    bool finished = false;
  };
  // Samples the next token from one row of logits and records it; `finished`
  // when it ends the request (EOS or a stop token, a stop string, max_tokens,
  // the context). The finish is sent by Finish(). The row is the caller's
  // scratch: a grammar masks it in place (-inf where a token is not allowed).
  absl::StatusOr<Next> OnLogits(std::span<float> logits, SteadyTime now);
  // Whether the executor may pick the next token (LogitsWanted::kArgmax):
  // greedy (temperature 0), no penalties, logit bias or grammar, no logprobs
  // wanted. What the Sampler would pick from the logits is then exactly the
  // argmax.
  bool GreedyOnDevice() const;
  // Records the token the executor picked, as OnLogits does after sampling.
  absl::StatusOr<Next> OnToken(int32_t token, SteadyTime now);

  // Sends the tokens and text gathered since the last update, if any.
  void Flush();
  // Sends the last update (gathered tokens, held-back text unless a stop
  // string ended it, the reason). `reason` overrides the one OnLogits found
  // unless it is unset; later calls do nothing.
  void Finish(std::optional<FinishReason> reason = std::nullopt,
              absl::Status error = absl::OkStatus());

  // Prompt logprobs: the logits row computed at prompt position `pos`, which
  // predicts prompt token pos + 1; rows must come in position order (others,
  // and the last prompt token's, are ignored). Reported with the next update.
  void OnPromptLogits(int32_t pos, std::span<const float> logits);
  bool wants_prompt_logits() const { return request_.prompt_logprobs >= 0; }

  void set_cached_tokens(int32_t tokens) {
    usage_.cached_tokens = tokens;
    cached_counted_ = true;
  }
  bool cached_counted() const { return cached_counted_; }
  // The first time a step ran the request (the end of its queueing).
  void mark_started(SteadyTime at) {
    if (!started_at_) started_at_ = at;
  }
  std::optional<SteadyTime> started_at() const { return started_at_; }
  std::optional<FinishReason> reason() const { return reason_; }
  SteadyTime queued_at() const { return queued_at_; }
  std::optional<SteadyTime> first_token_at() const { return first_token_at_; }
  void add_preemption() { ++usage_.preemptions; }
  bool finished() const { return sent_final_; }
  const GenerationRequest& request() const { return request_; }
  const GenerationUsage& usage() const { return usage_; }

 private:
  void Emit(bool final);
  // Constrained decoding under a length budget: tokens the request may still
  // generate, this one included (max_tokens and the context room).
  int32_t TokensLeft() const;
  // Tokens that end the value after `token` (0 when it ends the request),
  // counting one per byte still needed plus an EOS unless the value then
  // admits nothing more: an upper bound. Uses trial_; -1 when the grammar
  // refuses the token.
  int32_t TokensToEndAfter(int32_t token);
  // Leaves in `row` only single-byte tokens and EOS after which the value
  // can end within `left` - 1 more tokens (or, when none can, those that end
  // it soonest).
  void RestrictToBudget(std::span<float> row, int32_t left);
  // Accepts a chosen token and applies the stop rules.
  absl::StatusOr<Next> Advance(int32_t token, float logprob,
                               std::span<const sampling::TokenLogprob> top, SteadyTime now);

  GenerationRequest request_;
  GenerationSink sink_;
  const tokenizer::Tokenizer& tokenizer_;
  int32_t context_;
  sampling::Sampler sampler_;
  // Constrained decoding: the grammar's state and its token mask (sized on
  // the first step, reused after).
  std::optional<grammar::GrammarMatcher> matcher_;
  std::vector<uint32_t> mask_words_;
  // A copy of matcher_ to try a token on (its buffers reused step to step).
  std::optional<grammar::GrammarMatcher> trial_;
  std::vector<std::pair<int32_t, float>> kept_;  // RestrictToBudget's survivors
  tokenizer::StreamDecoder decoder_;
  sampling::StopMatcher stop_;
  GenerationUsage usage_;
  GenerationUpdate pending_;
  std::optional<FinishReason> reason_;
  SteadyTime queued_at_;
  std::optional<SteadyTime> first_token_at_;
  std::optional<SteadyTime> started_at_;
  bool sent_final_ = false;
  bool cached_counted_ = false;
  int32_t next_prompt_pos_ = 0;      // prompt logprobs reported below this position
  std::vector<int32_t> prompt_ids_;  // OnPromptLogits' top-k scratch (vocabulary-sized)
};

}  // namespace tokenmill::runtime
