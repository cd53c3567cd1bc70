// The request/response types between the APIs and a model instance: what to
// generate, and the updates that stream back while it is generated.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "runtime/grammar/compiled_grammar.h"
#include "runtime/sampling/sampler.h"
#include "runtime/sampling/sampling_params.h"

namespace tokenmill::runtime {

using SteadyTime = std::chrono::steady_clock::time_point;

enum class FinishReason {
  kStop,       // a stop token or stop string
  kLength,     // max_tokens, or the context is full
  kCancelled,  // the client went away or cancelled
  kDeadline,   // the request's deadline passed
  kError,      // see GenerationUpdate::error
};

// "stop", "length", "cancelled", "deadline", "error".
std::string_view FinishReasonName(FinishReason reason);

struct GenerationRequest {
  std::string request_id;         // unique per node: the ledger key
  std::string client_request_id;  // the client's X-Request-Id, "" when none
  std::string user;               // the client's end-user id (OpenAI `user`), "" when none
  std::string tenant;
  std::vector<int32_t> prompt;        // token ids, >= 1
  sampling::SamplingParams sampling;  // validated by the caller
  // Constrained decoding (response_format json_object / json_schema): only
  // tokens the grammar allows are sampled, and the request ends (stop) once
  // the value is complete and nothing but EOS may follow. Null: none.
  // Compiled for this instance's vocabulary (ModelInstance::Grammar).
  grammar::CompiledGrammarPtr grammar;
  bool stop_at_eos = true;  // the model's EOS tokens end generation
  // Control tokens whose text the output keeps (tool-call markers such as
  // [TOOL_CALLS] or <|python_tag|>, which the caller parses); every other
  // control token adds no text.
  std::vector<int32_t> kept_control_tokens;
  // Another choice of the same client request (OpenAI `n`) bills this
  // prompt: this one's prompt tokens are metered as recomputed (their device
  // cost, no charge) and its cached ones not at all, so the request's
  // records add up to one prompt and every choice's completion.
  bool prompt_billed_elsewhere = false;
  // >= 0: report the logprob of every prompt token given the ones before it
  // (the first has none) with this many alternatives (<= kMaxLogprobs), in
  // the first updates' `prompt` (OpenAI `echo` with `logprobs`). The prompt
  // is then computed in full: the prefix cache is not used for it.
  int32_t prompt_logprobs = -1;
  // The caller reports each token's logprob. When false, a greedy request
  // without penalties takes its tokens from the executor's argmax (a GPU
  // sends back token ids, not logits) and GeneratedToken::logprob stays 0.
  bool wants_logprobs = true;
  // On the instance's clock (ModelInstance::Start, InstanceManager::clock).
  std::optional<SteadyTime> deadline;
};

struct GeneratedToken {
  int32_t id = -1;
  float logprob = 0.0f;
  std::vector<sampling::TokenLogprob> top;  // sampling.logprobs alternatives
};

struct GenerationUsage {
  int32_t prompt_tokens = 0;
  int32_t cached_tokens = 0;  // prompt tokens served from the prefix cache
  int32_t completion_tokens = 0;
  int32_t preemptions = 0;
};

// One update of a running request: new tokens and text since the last one,
// or the end. Exactly one update has finished = true, and it is the last.
struct GenerationUpdate {
  // Prompt logprobs (GenerationRequest::prompt_logprobs), in prompt order,
  // spread over the first updates; the prompt's first token has a NaN
  // logprob (none) and no alternatives.
  std::vector<GeneratedToken> prompt;
  std::vector<GeneratedToken> tokens;
  std::string text;  // decoded text of `tokens`, stop strings withheld
  bool finished = false;
  FinishReason finish_reason = FinishReason::kStop;
  absl::Status error;     // set when finish_reason == kError
  GenerationUsage usage;  // cumulative
  SteadyTime queued_at{};
  std::optional<SteadyTime> first_token_at;
};

// Receives a request's updates, in order, on the instance's engine thread.
// Must not block: hand the update to the caller's thread (e.g. HttpServer::Post).
using GenerationSink = std::function<void(GenerationUpdate)>;

// A submitted request. Thread-safe.
class RequestHandle {
 public:
  virtual ~RequestHandle() = default;
  // Ends the request at the next step boundary with kCancelled and frees its
  // KV blocks. Idempotent; a no-op once it finished.
  virtual void Cancel() = 0;
};

using RequestHandlePtr = std::shared_ptr<RequestHandle>;

}  // namespace tokenmill::runtime
