// OpenAiApi: the OpenAI-compatible data API.
//
// Endpoints:
// - GET /v1/models: {"object":"list","data":[MODEL...]}, the ready models the
//   tenant may use.
// - GET /v1/models/{id}: MODEL, or 404 model_not_found.
// - POST /v1/completions: a text completion, JSON or an SSE stream.
// - POST /v1/chat/completions: a chat completion, JSON or an SSE stream.
// - POST /tokenize, POST /detokenize: the model's tokenizer
//   (daemon/tokenize.h), encoded on the EncodePool like a prompt, neither
//   admitted nor metered.
//
// Auth: "Authorization: Bearer KEY" names the tenant (TenantRegistry::
// FindByApiKey); an unknown or missing key is 401 invalid_api_key. While the
// registry holds no tenant at all, every request runs as tenant "anonymous"
// without admission limits, so that a fresh node is usable locally; adding
// any tenant turns keys on.
//
// A generation: the loop thread authenticates, then hands the request to the
// EncodePool (daemon/encode_pool.h); a pool thread parses the body, finds the
// model, checks the tenant may be admitted at all (not in debt, under its
// in-flight cap: an Admit of 0 tokens whose slot it holds, so a tenant over
// its limits costs no encoding), and tokenizes the prompt (completions: BOS
// as the tokenizer says, control-token text not parsed; chat: the model's
// chat template). The result comes back to the loop thread (PostFn), which
// admits the request with its prompt tokens (429 rate_limit_exceeded with
// Retry-After; the slot held while encoding is given back first, so the
// tenant's bucket sees each prompt in full, in the order the loop admits
// them) and submits it to the instance. A full pool answers 429 (the
// tenant's share of waiting places is taken) or 503 (all are), both with
// Retry-After. Its updates come back on the engine thread and are posted to
// the loop thread, where they are streamed or collected and charged to the
// tenant's token bucket. A client that goes away cancels its request (while
// its prompt is encoded: the result is dropped and the slot freed).
// X-Request-Id: the client's (IsClientRequestId) or a new UUIDv7, echoed in
// the response. X-Tokenmill-Timeout-Ms sets a deadline: none reached before
// the first token is 504; later the response ends with finish_reason "stop"
// and "tokenmill_finish":"deadline".
//
// Errors are in OpenAI's shape (daemon/api_errors: OpenAiErrorJson); one
// that happens mid-stream is an SSE data line with the error object, then
// the stream ends (no [DONE]).
//
// Handle() runs on the HTTP loop thread and never blocks: no JSON body is
// parsed and no prompt encoded there.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>

#include "absl/status/statusor.h"
#include "daemon/api_errors.h"
#include "daemon/encode_pool.h"
#include "daemon/http/http_server.h"
#include "daemon/openai_protocol.h"
#include "runtime/node/instance_manager.h"
#include "runtime/tenants/tenant_registry.h"

namespace tokenmill::daemon {

// The tenant a registry without tenants serves every request as.
inline constexpr char kAnonymousTenant[] = "anonymous";

class OpenAiApi {
 public:
  // Runs a closure on the HTTP loop thread (HttpServer::Post); any thread.
  using PostFn = std::function<void(std::function<void()>)>;
  using WallClock = std::function<std::chrono::system_clock::time_point()>;

  // `tenants` and `instances` outlive the API and every request it started.
  // `encoder` runs prompt preparation; it must be Stop()ped, and the loop
  // that `post` feeds stopped, before the API and `instances` go away (jobs
  // and posted results call back into the API).
  OpenAiApi(
      tenants::TenantRegistry& tenants, runtime::InstanceManager& instances, EncodePool& encoder,
      PostFn post, WallClock clock = [] { return std::chrono::system_clock::now(); });

  // Called (loop thread) for each request refused by admission (429), for
  // the requests_total{outcome="rejected"} counter.
  using RejectionObserver =
      std::function<void(const std::string& tenant, const std::string& model)>;
  void set_rejection_observer(RejectionObserver fn) { on_rejected_ = std::move(fn); }

  // Handles every /v1/ path (unknown ones are 404 in OpenAI's shape),
  // /tokenize and /detokenize, and returns true; false for other paths (the
  // request is then untouched).
  // When it returns true it may have moved request.body away.
  bool Handle(http::HttpRequest& request, const http::ResponseWriterPtr& response);

  // Generation requests accepted but not yet submitted to an instance
  // (waiting for or in prompt preparation, or on their way back to the
  // loop). Any thread; a drain waits for it to reach 0.
  size_t preparing() const { return preparing_->load(); }

  // Test hook: called on the thread that prepares a generation request
  // (an EncodePool thread), after the body is parsed and right before the
  // prompt is encoded. Set before the first request; not changed after.
  void set_encode_observer(std::function<void()> fn) { on_encode_ = std::move(fn); }

 private:
  // The tenant of the request's key (or anonymous); 401 otherwise.
  absl::StatusOr<tenants::TenantPolicy> Authenticate(const http::HttpRequest& request) const;
  void ListModels(const tenants::TenantPolicy& tenant, const std::string& one_id,
                  http::ResponseWriter& response, const HttpHeaders& headers);
  // Queues the request's preparation on the pool (loop thread).
  void Generate(OpenAiEndpoint endpoint, const tenants::TenantPolicy& tenant,
                const std::string& request_id, http::HttpRequest& request,
                const http::ResponseWriterPtr& response, HttpHeaders headers);
  // Queues a /tokenize or /detokenize request on the pool (loop thread).
  void Tokenize(bool detokenize, const tenants::TenantPolicy& tenant, http::HttpRequest& request,
                const http::ResponseWriterPtr& response, HttpHeaders headers);
  // Parses it, finds the model and runs the tokenizer (pool thread).
  absl::StatusOr<nlohmann::json> RunTokenizeJob(bool detokenize,
                                                const tenants::TenantPolicy& tenant,
                                                std::string_view body) const;
  struct PendingGeneration;
  struct PreparedGeneration;
  // Parses, looks up the model, pre-admits and encodes (pool thread).
  void Prepare(PendingGeneration& pending, PreparedGeneration& out) const;
  // Admits and submits a prepared request, or answers its error (loop thread).
  void AdmitAndSubmit(PendingGeneration& pending, PreparedGeneration& prepared);
  std::string RequestId(const http::HttpRequest& request);

  tenants::TenantRegistry& tenants_;
  runtime::InstanceManager& instances_;
  EncodePool& encoder_;
  PostFn post_;
  WallClock clock_;
  RejectionObserver on_rejected_;
  std::function<void()> on_encode_;
  // Pool refusals are logged at most once a second (loop thread only).
  std::chrono::steady_clock::time_point last_refusal_log_{};
  uint64_t refusals_unlogged_ = 0;
  std::mt19937_64 rng_;  // request ids; loop thread only
  // Shared with the requests in preparation, which count themselves out
  // wherever they end (a dropped post included).
  std::shared_ptr<std::atomic<size_t>> preparing_ = std::make_shared<std::atomic<size_t>>(0);
};

}  // namespace tokenmill::daemon
