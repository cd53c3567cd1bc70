// OpenAiApi: the OpenAI-compatible data API.
//
// Endpoints:
// - GET /v1/models: {"object":"list","data":[MODEL...]}, the ready models the
//   tenant may use.
// - GET /v1/models/{id}: MODEL, or 404 model_not_found.
// - POST /v1/completions: a text completion, JSON or an SSE stream.
// - POST /v1/chat/completions: a chat completion, JSON or an SSE stream.
//
// Auth: "Authorization: Bearer KEY" names the tenant (TenantRegistry::
// FindByApiKey); an unknown or missing key is 401 invalid_api_key. While the
// registry holds no tenant at all, every request runs as tenant "anonymous"
// without admission limits, so that a fresh node is usable locally; adding
// any tenant turns keys on.
//
// A generation: the prompt is tokenized (completions: BOS as the tokenizer
// says, control-token text not parsed; chat: the model's chat template),
// admitted against the tenant's limits (429 rate_limit_exceeded with
// Retry-After), and submitted to the instance. Its updates come back on the
// engine thread and are posted to the loop thread, where they are streamed
// or collected and charged to the tenant's token bucket. A client that goes
// away cancels its request. X-Request-Id: the client's (IsClientRequestId)
// or a new UUIDv7, echoed in the response. X-Tokenmill-Timeout-Ms sets a
// deadline: none reached before the first token is 504; later the response
// ends with finish_reason "stop" and "tokenmill_finish":"deadline".
//
// Errors are in OpenAI's shape (daemon/api_errors: OpenAiErrorJson); one
// that happens mid-stream is an SSE data line with the error object, then
// the stream ends (no [DONE]).
//
// Handle() runs on the HTTP loop thread and never blocks.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <random>
#include <string>

#include "absl/status/statusor.h"
#include "daemon/api_errors.h"
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
  OpenAiApi(
      tenants::TenantRegistry& tenants, runtime::InstanceManager& instances, PostFn post,
      WallClock clock = [] { return std::chrono::system_clock::now(); });

  // Called (loop thread) for each request refused by admission (429), for
  // the requests_total{outcome="rejected"} counter.
  using RejectionObserver = std::function<void(const std::string& tenant, const std::string& model)>;
  void set_rejection_observer(RejectionObserver fn) { on_rejected_ = std::move(fn); }

  // Handles every /v1/ path (unknown ones are 404 in OpenAI's shape) and
  // returns true; false for other paths.
  bool Handle(const http::HttpRequest& request, const http::ResponseWriterPtr& response);

 private:
  // The tenant of the request's key (or anonymous); 401 otherwise.
  absl::StatusOr<tenants::TenantPolicy> Authenticate(const http::HttpRequest& request) const;
  void ListModels(const tenants::TenantPolicy& tenant, const std::string& one_id,
                  http::ResponseWriter& response, const HttpHeaders& headers);
  void Generate(OpenAiEndpoint endpoint, const tenants::TenantPolicy& tenant,
                const std::string& request_id, const http::HttpRequest& request,
                const http::ResponseWriterPtr& response, HttpHeaders headers);
  std::string RequestId(const http::HttpRequest& request);

  tenants::TenantRegistry& tenants_;
  runtime::InstanceManager& instances_;
  PostFn post_;
  WallClock clock_;
  RejectionObserver on_rejected_;
  std::mt19937_64 rng_;  // request ids; loop thread only
};

}  // namespace tokenmill::daemon
