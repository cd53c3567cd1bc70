#include "daemon/openai_api.h"

#include <time.h>

#include <chrono>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "daemon/api_errors.h"
#include "daemon/tokenize.h"
#include "runtime/chat/chat_template.h"
#include "spdlog/spdlog.h"

namespace tokenmill::daemon {
namespace {

using nlohmann::json;
using runtime::FinishReason;

// Longest deadline a client may ask for (a day); longer is surely a mistake.
constexpr int64_t kMaxTimeoutMs = 24LL * 3600 * 1000;

absl::Status ModelNotFound(const std::string& model) {
  return WithErrorParam(
      WithErrorCode(absl::NotFoundError(absl::StrCat("The model '", model, "' does not exist")),
                    "model_not_found"),
      "model");
}

int64_t UnixSeconds(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

// One generation between its admission and its last update: the response it
// writes to and what its choices (OpenAI `n`; one sequence each) have
// gathered. Loop thread only, except that the engine thread holds a
// reference through the sinks.
class ActiveGeneration {
 public:
  // `parsers`: one per choice, set when the request parses tool calls.
  ActiveGeneration(http::ResponseWriterPtr response, ResponseMeta meta, HttpHeaders headers,
                   bool stream, bool include_usage, bool logprobs,
                   tenants::AdmissionTicketPtr ticket,
                   std::vector<std::optional<chat::ToolCallParser>> parsers)
      : response_(std::move(response)),
        meta_(std::move(meta)),
        headers_(std::move(headers)),
        stream_(stream),
        include_usage_(include_usage),
        logprobs_(logprobs),
        ticket_(std::move(ticket)),
        choices_(parsers.size()) {
    for (size_t i = 0; i < parsers.size(); ++i) choices_[i].tools = std::move(parsers[i]);
  }

  void set_handle(size_t choice, runtime::RequestHandlePtr handle) {
    choices_[choice].handle = std::move(handle);
  }
  // `echo`: the prompt's text, put before each choice's (with the prompt's
  // logprob entries from choice 0's updates, when logprobs are wanted).
  void set_echo(std::string text) {
    echo_ = true;
    echo_text_ = std::move(text);
  }
  // Runs once, at choice 0's first update with a token: the prompt's full
  // blocks are in the prefix cache then, so the other choices start from them.
  void set_on_first_update(std::function<void()> fn) { on_first_update_ = std::move(fn); }
  void Cancel() {
    for (Choice& c : choices_) {
      if (c.handle) c.handle->Cancel();
    }
  }
  // A choice could not start: the request fails, the others are cancelled.
  void FailAll(const absl::Status& status) {
    if (done_) return;
    done_ = true;
    Cancel();
    if (!response_->closed()) Fail(status);
    ticket_.reset();
  }

  void OnUpdate(size_t index, runtime::GenerationUpdate update, std::vector<LogprobEntry> entries,
                std::vector<LogprobEntry> prompt_entries = {}) {
    if (done_) return;
    Choice& c = choices_[index];
    if (c.done) return;
    std::move(prompt_entries.begin(), prompt_entries.end(), std::back_inserter(echo_entries_));
    if (ticket_) ticket_->ChargeTokens(static_cast<int64_t>(update.tokens.size()));
    const bool failed = update.finished && (update.finish_reason == FinishReason::kError ||
                                            update.finish_reason == FinishReason::kCancelled);
    if (index == 0 && on_first_update_ && !failed && (!update.tokens.empty() || update.finished)) {
      auto fn = std::move(on_first_update_);
      on_first_update_ = nullptr;
      fn();
      if (done_) return;
    }
    if (update.finished) {
      c.done = true;
      c.handle.reset();
      FinishChoice(index, update, std::move(entries));
      if (!done_ && std::all_of(choices_.begin(), choices_.end(),
                                [](const Choice& other) { return other.done; })) {
        Complete();
      }
      return;
    }
    if (response_->closed()) return;  // the cancel is on its way
    chat::ToolCallUpdate parsed = Split(c, std::move(update.text), /*at_end=*/false);
    if (!stream_) {
      c.text += parsed.content;
      std::move(entries.begin(), entries.end(), std::back_inserter(c.entries));
      return;
    }
    if (parsed.content.empty() && parsed.calls.empty() && entries.empty()) return;
    StartStream();
    WriteChunk(index, parsed, std::nullopt, entries);
  }

 private:
  struct Choice {
    runtime::RequestHandlePtr handle;
    std::optional<chat::ToolCallParser> tools;  // requests that parse tool calls
    std::string text;                           // non-streaming: the completion so far
    std::vector<LogprobEntry> entries;          // non-streaming: its logprobs
    int64_t text_offset = 0;                    // completions logprobs text_offset
    bool echoed = false;                        // the echoed prompt was put before it
    bool done = false;
    FinishReason reason = FinishReason::kStop;
    runtime::GenerationUsage usage;
  };

  void StartStream() {
    if (started_) return;
    started_ = true;
    HttpHeaders headers = headers_;
    headers.emplace_back("Cache-Control", "no-cache");
    response_->Start(200, "text/event-stream", std::move(headers));
    if (meta_.endpoint == OpenAiEndpoint::kChatCompletions) {
      for (size_t i = 0; i < choices_.size(); ++i) {
        ChunkContent role;
        role.index = static_cast<int32_t>(i);
        role.role_chunk = true;
        response_->Write(SseData(ChunkJson(meta_, role, include_usage_)));
      }
    }
  }

  json LogprobsJson(Choice& c, std::span<const LogprobEntry> entries) {
    if (!logprobs_) return nullptr;
    if (meta_.endpoint == OpenAiEndpoint::kChatCompletions) return ChatLogprobsJson(entries);
    return CompletionLogprobsJson(entries, &c.text_offset);
  }

  // Generated text as content and tool calls (all content when the request
  // parses no calls).
  static chat::ToolCallUpdate Split(Choice& c, std::string text, bool at_end) {
    chat::ToolCallUpdate out;
    if (!c.tools) {
      out.content = std::move(text);
      return out;
    }
    out = c.tools->Feed(text);
    if (at_end) {
      chat::ToolCallUpdate rest = c.tools->Finish();
      out.content += rest.content;
      std::move(rest.calls.begin(), rest.calls.end(), std::back_inserter(out.calls));
    }
    return out;
  }

  static bool CalledTools(const Choice& c) { return c.tools && !c.tools->calls().empty(); }

  // Puts the echoed prompt before a choice's first text and entries.
  void Echo(Choice& c, std::string& text, std::vector<LogprobEntry>& entries) {
    if (!echo_ || c.echoed) return;
    c.echoed = true;
    text.insert(0, echo_text_);
    if (logprobs_) entries.insert(entries.begin(), echo_entries_.begin(), echo_entries_.end());
  }

  void WriteChunk(size_t index, const chat::ToolCallUpdate& parsed,
                  std::optional<FinishReason> finish, std::span<const LogprobEntry> given) {
    Choice& c = choices_[index];
    ChunkContent chunk;
    chunk.index = static_cast<int32_t>(index);
    chunk.text = parsed.content;
    std::vector<LogprobEntry> entries(given.begin(), given.end());
    Echo(c, chunk.text, entries);
    if (!parsed.calls.empty()) chunk.tool_calls = ToolCallDeltasJson(parsed.calls);
    chunk.finish = finish;
    chunk.called_tools = CalledTools(c);
    chunk.logprobs = LogprobsJson(c, entries);
    response_->Write(SseData(ChunkJson(meta_, chunk, include_usage_)));
  }

  void Fail(const absl::Status& status) {
    if (started_) {
      // An error event, then [DONE] as after any stream, so that clients stop reading.
      response_->Write(SseData(OpenAiErrorJson(status)));
      response_->Write(std::string(kSseDone));
      response_->End();
    } else {
      SendOpenAiError(*response_, status, headers_);
    }
  }

  bool NothingGenerated() const {
    return !started_ && std::all_of(choices_.begin(), choices_.end(), [](const Choice& c) {
      return c.text.empty() && c.entries.empty() && c.usage.completion_tokens == 0;
    });
  }

  void FinishChoice(size_t index, const runtime::GenerationUpdate& update,
                    std::vector<LogprobEntry> entries) {
    if (response_->closed()) return;  // cancelled for a client that left
    Choice& c = choices_[index];
    FinishReason reason = update.finish_reason;
    if (reason == FinishReason::kError || reason == FinishReason::kCancelled) {
      absl::Status error = update.error;
      if (reason == FinishReason::kCancelled) {
        error = absl::UnavailableError("the request was cancelled: the model is being unloaded");
      } else if (error.ok()) {
        error = absl::InternalError("generation failed");
      }
      spdlog::warn("generation_failed request_id={} choice={} error={}", meta_.id, index,
                   std::string(error.message()));
      return FailAll(error);
    }
    if (reason == FinishReason::kDeadline && update.usage.completion_tokens == 0 &&
        NothingGenerated()) {
      return FailAll(absl::DeadlineExceededError(
          "the request's deadline (X-Tokenmill-Timeout-Ms) passed before the first token"));
    }
    c.reason = reason;
    c.usage = update.usage;
    chat::ToolCallUpdate parsed = Split(c, update.text, /*at_end=*/true);
    if (!stream_) {
      c.text += parsed.content;
      std::move(entries.begin(), entries.end(), std::back_inserter(c.entries));
      return;
    }
    StartStream();
    if (!parsed.content.empty() || !parsed.calls.empty() || !entries.empty() ||
        (echo_ && !c.echoed)) {
      WriteChunk(index, parsed, std::nullopt, entries);
    }
    WriteChunk(index, {}, reason, {});
  }

  // Every choice finished: the response (not streamed) or the stream's end.
  void Complete() {
    done_ = true;
    ticket_.reset();
    if (response_->closed()) return;
    // The prompt once (the choices after the first read it from the prefix
    // cache), every choice's completion.
    runtime::GenerationUsage usage = choices_[0].usage;
    for (size_t i = 1; i < choices_.size(); ++i) {
      usage.completion_tokens += choices_[i].usage.completion_tokens;
      usage.preemptions += choices_[i].usage.preemptions;
    }
    if (!stream_) {
      json choices = json::array();
      for (size_t i = 0; i < choices_.size(); ++i) {
        Choice& c = choices_[i];
        Echo(c, c.text, c.entries);
        json logprobs = LogprobsJson(c, c.entries);
        json calls = CalledTools(c) ? ToolCallsJson(c.tools->calls()) : json(nullptr);
        choices.push_back(ChoiceJson(meta_, static_cast<int32_t>(i), c.text, c.reason,
                                     std::move(logprobs), std::move(calls)));
      }
      response_->Send(200, "application/json",
                      DumpJson(ResponseJson(meta_, std::move(choices), usage)), headers_);
      return;
    }
    StartStream();
    if (include_usage_) response_->Write(SseData(UsageChunkJson(meta_, usage)));
    response_->Write(std::string(kSseDone));
    response_->End();
  }

  http::ResponseWriterPtr response_;
  ResponseMeta meta_;
  HttpHeaders headers_;
  bool stream_ = false;
  bool include_usage_ = false;
  bool logprobs_ = false;
  tenants::AdmissionTicketPtr ticket_;
  std::vector<Choice> choices_;
  std::function<void()> on_first_update_;
  bool echo_ = false;
  std::string echo_text_;
  std::vector<LogprobEntry> echo_entries_;  // the prompt's, from choice 0
  bool started_ = false;
  bool done_ = false;
};

// Encodes the request's prompt with the instance's tokenizer (chats through
// the instance's compiled chat template; `now` is what strftime_now() reads).
absl::StatusOr<std::vector<int32_t>> PromptTokens(const OpenAiRequest& request,
                                                  const runtime::ModelInstance& instance,
                                                  absl::Time now) {
  const tokenizer::Tokenizer& tokenizer = instance.tokenizer();
  std::vector<int32_t> tokens;
  if (request.endpoint == OpenAiEndpoint::kChatCompletions) {
    chat::ChatRenderOptions options;
    options.now = now;
    if (request.tool_choice != OpenAiRequest::ToolChoice::kNone) options.tools = request.tools;
    absl::StatusOr<std::vector<int32_t>> encoded =
        instance.chat_template().Encode(request.messages, tokenizer, options);
    if (!encoded.ok()) return WithErrorParam(encoded.status(), "messages");
    tokens = std::move(*encoded);
  } else if (request.prompt_text) {
    tokenizer::Tokenizer::EncodeOptions options;
    options.add_bos = true;
    options.add_eos = false;
    options.parse_special = false;
    tokens = tokenizer.Encode(*request.prompt_text, options);
  } else {
    for (int32_t id : request.prompt_tokens) {
      if (id >= tokenizer.vocab_size()) {
        return WithErrorParam(absl::InvalidArgumentError(absl::StrCat(
                                  "prompt token id ", id, " is outside the vocabulary of ",
                                  tokenizer.vocab_size(), " tokens")),
                              "prompt");
      }
    }
    tokens = request.prompt_tokens;
  }
  if (tokens.empty()) {
    return WithErrorParam(absl::InvalidArgumentError("the prompt is empty"),
                          request.endpoint == OpenAiEndpoint::kCompletions ? "prompt" : "messages");
  }
  return tokens;
}

}  // namespace

OpenAiApi::OpenAiApi(tenants::TenantRegistry& tenants, runtime::InstanceManager& instances,
                     EncodePool& encoder, PostFn post, WallClock clock)
    : tenants_(tenants),
      instances_(instances),
      encoder_(encoder),
      post_(std::move(post)),
      clock_(std::move(clock)),
      rng_(std::random_device{}()) {}

std::string OpenAiApi::RequestId(const http::HttpRequest& request) {
  std::string_view id = request.Header("x-request-id");
  if (IsClientRequestId(id)) return std::string(id);
  uint64_t a = rng_();
  uint64_t b = rng_();
  return UuidV7(clock_(), a, b);
}

absl::StatusOr<tenants::TenantPolicy> OpenAiApi::Authenticate(
    const http::HttpRequest& request) const {
  std::string_view authorization = request.Header("authorization");
  std::string key;
  if (authorization.size() > 7 &&
      absl::EqualsIgnoreCase(std::string(authorization.substr(0, 7)), "bearer ")) {
    key = std::string(absl::StripAsciiWhitespace(std::string(authorization.substr(7))));
  }
  if (!key.empty()) {
    if (std::optional<tenants::TenantPolicy> tenant = tenants_.FindByApiKey(key)) return *tenant;
  }
  if (tenants_.List().empty()) {
    tenants::TenantPolicy anonymous;
    anonymous.name = kAnonymousTenant;
    anonymous.source = tenants::TenantSource::kApi;
    return anonymous;
  }
  return WithErrorCode(
      absl::UnauthenticatedError(key.empty() ? "Missing API key: send 'Authorization: Bearer KEY'"
                                             : "Incorrect API key provided"),
      "invalid_api_key");
}

bool OpenAiApi::Handle(http::HttpRequest& request, const http::ResponseWriterPtr& response) {
  const std::string& path = request.path;
  const bool tokenize = path == "/tokenize" || path == "/detokenize";
  if (!tokenize && path != "/v1" && !absl::StartsWith(path, "/v1/")) return false;
  const std::string& method = request.method;
  bool get = method == "GET" || method == "HEAD";

  std::string request_id = RequestId(request);
  HttpHeaders headers = {{"X-Request-Id", request_id}};
  auto method_not_allowed = [&](const char* allowed) {
    headers.emplace_back("Allow", allowed);
    absl::Status status = absl::InvalidArgumentError(
        absl::StrCat("Method ", method, " is not allowed on ", path, " (allowed: ", allowed, ")"));
    response->Send(405, "application/json", DumpJson(OpenAiErrorJson(status)), headers);
    return true;
  };

  std::optional<OpenAiEndpoint> endpoint;
  if (path == "/v1/completions") endpoint = OpenAiEndpoint::kCompletions;
  if (path == "/v1/chat/completions") endpoint = OpenAiEndpoint::kChatCompletions;
  bool models = path == "/v1/models" || absl::StartsWith(path, "/v1/models/");
  if (!endpoint && !models && !tokenize) {
    SendOpenAiError(*response, absl::NotFoundError(absl::StrCat("Unknown endpoint ", path)),
                    headers);
    return true;
  }
  if ((endpoint || tokenize) && method != "POST") return method_not_allowed("POST");
  if (models && !get) return method_not_allowed("GET, HEAD");

  absl::StatusOr<tenants::TenantPolicy> tenant = Authenticate(request);
  if (!tenant.ok()) {
    SendOpenAiError(*response, tenant.status(), headers);
    return true;
  }
  if (models) {
    std::string id = path == "/v1/models" ? "" : path.substr(std::string("/v1/models/").size());
    ListModels(*tenant, id, *response, headers);
  } else if (tokenize) {
    Tokenize(path == "/detokenize", *tenant, request, response, std::move(headers));
  } else {
    Generate(*endpoint, *tenant, request_id, request, response, std::move(headers));
  }
  return true;
}

void OpenAiApi::ListModels(const tenants::TenantPolicy& tenant, const std::string& one_id,
                           http::ResponseWriter& response, const HttpHeaders& headers) {
  json data = json::array();
  for (const runtime::InstanceInfo& info : instances_.List()) {
    if (info.state != runtime::InstanceState::kReady || !tenant.AllowsModel(info.spec.id)) continue;
    json model = ModelObjectJson(info.spec.id, UnixSeconds(info.loaded_at), info.chat_template,
                                 info.tool_calls);
    if (!one_id.empty() && info.spec.id == one_id) {
      response.Send(200, "application/json", DumpJson(model), headers);
      return;
    }
    data.push_back(std::move(model));
  }
  if (!one_id.empty()) return SendOpenAiError(response, ModelNotFound(one_id), headers);
  response.Send(200, "application/json", DumpJson(json{{"object", "list"}, {"data", data}}),
                headers);
}

// A generation request from its acceptance on the loop thread until it is
// submitted or answered. The loop thread alone touches `response` and
// `headers`, the pool thread alone `body` (once queued); the other fields
// are set before it is queued and only read after.
struct OpenAiApi::PendingGeneration {
  explicit PendingGeneration(std::shared_ptr<std::atomic<size_t>> counter)
      : preparing(std::move(counter)) {
    preparing->fetch_add(1);
  }
  ~PendingGeneration() { preparing->fetch_sub(1); }
  PendingGeneration(const PendingGeneration&) = delete;
  PendingGeneration& operator=(const PendingGeneration&) = delete;

  OpenAiEndpoint endpoint = OpenAiEndpoint::kCompletions;
  tenants::TenantPolicy tenant;
  bool limited = false;  // the tenant has admission limits
  std::string request_id;
  bool client_request_id = false;  // request_id is the client's X-Request-Id
  std::string body;                // released once parsed
  std::string timeout_header;      // X-Tokenmill-Timeout-Ms
  http::ResponseWriterPtr response;
  HttpHeaders headers;
  std::atomic<bool> abandoned{false};  // the client left; set on the loop thread
  std::shared_ptr<std::atomic<size_t>> preparing;
};

// What the pool thread hands back: an error to answer, or the request ready
// to admit and submit.
struct OpenAiApi::PreparedGeneration {
  absl::Status status;
  bool rejected = false;  // status is an admission refusal (requests_total "rejected")
  OpenAiRequest request;  // its prompt text and messages released once encoded
  // Re-found on the loop thread: the model may be unloaded (and even loaded
  // again) while the prompt is encoded, and its tokens are only good for
  // this instance. A weak reference never keeps an unloaded model alive.
  std::weak_ptr<runtime::ModelInstance> instance;
  std::vector<int32_t> prompt;
  int32_t max_tokens = 0;
  std::optional<runtime::SteadyTime> deadline;
  grammar::CompiledGrammarPtr grammar;  // response_format's or a forced call's, for `instance`
  // The format tool calls are parsed in (kNone: no parsing).
  chat::ToolCallFormat tool_format = chat::ToolCallFormat::kNone;
  // The format's markers that are tokens of the vocabulary: their text is
  // kept in the output for the parser.
  std::vector<int32_t> tool_marker_tokens;
  // `echo`: the prompt as text (the client's text, or its token ids
  // decoded), and whether the prompt's first token is a BOS the tokenizer
  // added (its logprob entry is not echoed: the text has no BOS).
  std::string echo_text;
  bool added_bos = false;
  // The in-flight slot held while encoding (null for a tenant without limits).
  tenants::AdmissionTicketPtr slot;
};

namespace {

// A status that tells the client to retry after `after`, with `code`.
absl::Status RetryLater(absl::StatusCode code, std::string_view message,
                        std::chrono::seconds after) {
  absl::Status retry = tenants::RetryLaterError(message, after);
  absl::Status status(code, std::string(message));
  retry.ForEachPayload(
      [&](absl::string_view url, const absl::Cord& payload) { status.SetPayload(url, payload); });
  return status;
}

// This thread's CPU time: what a grammar compile costs the encode pool,
// whatever else runs on the machine.
std::chrono::nanoseconds ThreadCpuTime() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
}

// An admission refusal in OpenAI's terms.
absl::Status AdmissionError(absl::Status status) {
  if (status.code() == absl::StatusCode::kResourceExhausted) {
    status = WithErrorCode(status, "rate_limit_exceeded");
  } else if (status.code() == absl::StatusCode::kInvalidArgument) {
    status = WithErrorParam(status, "n");  // more choices than the tenant may run
  }
  return status;
}

}  // namespace

void OpenAiApi::Generate(OpenAiEndpoint endpoint, const tenants::TenantPolicy& tenant,
                         const std::string& request_id, http::HttpRequest& request,
                         const http::ResponseWriterPtr& response, HttpHeaders headers) {
  auto pending = std::make_shared<PendingGeneration>(preparing_);
  pending->endpoint = endpoint;
  pending->tenant = tenant;
  pending->limited = tenant.name != kAnonymousTenant || tenants_.Get(kAnonymousTenant);
  pending->request_id = request_id;
  pending->client_request_id = IsClientRequestId(request.Header("x-request-id"));
  pending->body = std::move(request.body);
  pending->timeout_header = std::string(request.Header("x-tokenmill-timeout-ms"));
  pending->response = response;
  pending->headers = std::move(headers);

  std::weak_ptr<PendingGeneration> weak = pending;
  response->OnClose([weak] {
    if (auto alive = weak.lock()) alive->abandoned.store(true);
  });
  absl::Status queued = encoder_.Submit(tenant.name, [this, pending](bool dropped) {
    auto prepared = std::make_shared<PreparedGeneration>();
    if (dropped) {
      prepared->status = absl::UnavailableError("the node is stopping");
    } else if (!pending->abandoned.load()) {
      Prepare(*pending, *prepared);
    }
    post_([this, pending, prepared] { AdmitAndSubmit(*pending, *prepared); });
  });
  if (!queued.ok()) {
    // The pool's refusal: the tenant's share of waiting places (429) or all
    // of them (503) are taken; either way a retry soon may pass.
    absl::Status status =
        RetryLater(queued.code(), std::string(queued.message()), std::chrono::seconds(1));
    if (queued.code() == absl::StatusCode::kResourceExhausted) {
      status = WithErrorCode(status, "rate_limit_exceeded");
    }
    // At most one line a second: a flood must not flood the log too.
    const auto now = std::chrono::steady_clock::now();
    if (now - last_refusal_log_ >= std::chrono::seconds(1)) {
      spdlog::warn("encode_refused tenant={} refused_since_last_log={} reason=\"{}\"", tenant.name,
                   refusals_unlogged_ + 1, std::string(queued.message()));
      last_refusal_log_ = now;
      refusals_unlogged_ = 0;
    } else {
      ++refusals_unlogged_;
    }
    SendOpenAiError(*response, status, pending->headers);
  }
}

void OpenAiApi::Tokenize(bool detokenize, const tenants::TenantPolicy& tenant,
                         http::HttpRequest& request, const http::ResponseWriterPtr& response,
                         HttpHeaders headers) {
  struct Job {
    bool detokenize = false;
    tenants::TenantPolicy tenant;
    std::string body;
    http::ResponseWriterPtr response;
    HttpHeaders headers;
  };
  auto job = std::make_shared<Job>(
      Job{detokenize, tenant, std::move(request.body), response, std::move(headers)});
  // Encoding is the work: on the pool, in the tenant's share of it, like a
  // generation's prompt (no admission slot: nothing is generated or billed).
  absl::Status queued = encoder_.Submit(tenant.name, [this, job](bool dropped) {
    absl::StatusOr<json> answer = absl::UnavailableError("the node is stopping");
    if (!dropped) answer = RunTokenizeJob(job->detokenize, job->tenant, job->body);
    std::string().swap(job->body);
    post_([job, answer = std::move(answer)] {
      if (!answer.ok()) return SendOpenAiError(*job->response, answer.status(), job->headers);
      job->response->Send(200, "application/json", DumpJson(*answer), job->headers);
    });
  });
  if (!queued.ok()) {
    SendOpenAiError(
        *response,
        RetryLater(queued.code(), std::string(queued.message()), std::chrono::seconds(1)),
        job->headers);
  }
}

absl::StatusOr<json> OpenAiApi::RunTokenizeJob(bool detokenize, const tenants::TenantPolicy& tenant,
                                               std::string_view body) const {
  absl::StatusOr<TokenizeRequest> parsed = ParseTokenizeRequest(detokenize, body);
  if (!parsed.ok()) return parsed.status();
  std::string model = parsed->model;
  if (model.empty()) {
    for (const runtime::InstanceInfo& info : instances_.List()) {
      if (info.state == runtime::InstanceState::kReady && tenant.AllowsModel(info.spec.id)) {
        model = info.spec.id;
        break;
      }
    }
    if (model.empty()) {
      return WithErrorParam(absl::NotFoundError("no ready model this key may use"), "model");
    }
  }
  if (!tenant.AllowsModel(model)) return ModelNotFound(model);
  runtime::ModelInstancePtr instance = instances_.Find(model);
  if (instance == nullptr) return ModelNotFound(model);
  absl::StatusOr<json> answer =
      RunTokenize(*parsed, instance->tokenizer(), instance->chat_template(), instance->context(),
                  absl::FromChrono(clock_()));
  if (answer.ok()) (*answer)["model"] = model;
  return answer;
}

void OpenAiApi::Prepare(PendingGeneration& pending, PreparedGeneration& out) const {
  auto fail = [&](absl::Status status) { out.status = std::move(status); };
  absl::StatusOr<OpenAiRequest> parsed = ParseOpenAiRequest(pending.endpoint, pending.body);
  std::string().swap(pending.body);
  if (!parsed.ok()) return fail(parsed.status());
  OpenAiRequest& req = out.request;
  req = std::move(*parsed);

  // A model the tenant may not use answers like one that does not exist.
  if (!pending.tenant.AllowsModel(req.model)) return fail(ModelNotFound(req.model));
  runtime::ModelInstancePtr instance = instances_.Find(req.model);
  if (instance == nullptr) {
    absl::StatusOr<runtime::InstanceInfo> info = instances_.Get(req.model);
    if (info.ok() && info->state == runtime::InstanceState::kLoading) {
      return fail(WithErrorCode(
          absl::UnavailableError(absl::StrCat("The model '", req.model, "' is still loading")),
          "model_not_ready"));
    }
    return fail(ModelNotFound(req.model));
  }
  out.instance = instance;
  using ToolChoice = OpenAiRequest::ToolChoice;
  if (req.tool_choice != ToolChoice::kNone) {
    out.tool_format = instance->chat_template().tool_call_format();
    if (out.tool_format == chat::ToolCallFormat::kNone) {
      return fail(WithErrorParam(
          absl::InvalidArgumentError(absl::StrCat(
              "The model '", req.model,
              "' takes no tools: its chat template has no tool-call format tokenmill parses "
              "(Hermes/Qwen <tool_call>, Llama 3.1 JSON, Mistral [TOOL_CALLS])")),
          "tools"));
    }
    for (std::string_view marker : chat::ToolCallMarkers(out.tool_format)) {
      if (std::optional<int32_t> id = instance->tokenizer().TokenId(marker)) {
        out.tool_marker_tokens.push_back(*id);
      }
    }
    if (req.tool_choice != ToolChoice::kAuto && req.response_format) {
      return fail(WithErrorParam(
          absl::InvalidArgumentError("'response_format' cannot be combined with a 'tool_choice' "
                                     "that forces a call"),
          "response_format"));
    }
  }

  // A tenant that admission would refuse now (in debt, or at its in-flight
  // cap) costs no encoding. The places taken here (one per choice) count the
  // request as in flight while it is encoded; the prompt is charged on the
  // loop thread.
  if (pending.limited) {
    absl::StatusOr<tenants::AdmissionTicketPtr> slot =
        tenants_.Admit(pending.tenant.name, 0, static_cast<uint32_t>(req.n));
    if (!slot.ok()) {
      out.rejected = slot.status().code() == absl::StatusCode::kResourceExhausted;
      return fail(AdmissionError(slot.status()));
    }
    out.slot = std::move(*slot);
  }

  if (pending.abandoned.load()) return;  // the loop drops it
  if (on_encode_) on_encode_();
  absl::StatusOr<std::vector<int32_t>> prompt =
      PromptTokens(req, *instance, absl::FromChrono(clock_()));
  if (!prompt.ok()) return fail(prompt.status());
  if (req.echo) {
    const tokenizer::Tokenizer& tokenizer = instance->tokenizer();
    if (req.prompt_text) {
      out.echo_text = *req.prompt_text;
      out.added_bos =
          !prompt->empty() && tokenizer.bos_id() && prompt->front() == *tokenizer.bos_id();
    } else {
      out.echo_text = tokenizer.Decode(*prompt);
    }
  }
  req.prompt_text.reset();
  req.messages.clear();
  absl::StatusOr<int32_t> max_tokens =
      ResolveMaxTokens(req, static_cast<int32_t>(prompt->size()), instance->context());
  if (!max_tokens.ok()) return fail(max_tokens.status());
  out.prompt = std::move(*prompt);
  out.max_tokens = *max_tokens;
  // Compiled here, off the loop: a new schema can take up to about a second
  // at a 128K vocabulary; repeated ones come from the cache. A tenant with
  // admission limits pays new ones from its compile budget (thread CPU time).
  auto grammar = [&](const grammar::OutputConstraint& constraint)
      -> absl::StatusOr<grammar::CompiledGrammarPtr> {
    if (out.slot == nullptr) return instance->Grammar(constraint);
    if (grammar::CompiledGrammarPtr cached = instance->CachedGrammar(constraint)) return cached;
    if (absl::Status may = out.slot->MayCompileGrammar(); !may.ok()) {
      out.rejected = true;
      return WithErrorCode(may, "rate_limit_exceeded");
    }
    const std::chrono::nanoseconds start = ThreadCpuTime();
    absl::StatusOr<grammar::CompiledGrammarPtr> compiled = instance->Grammar(constraint);
    out.slot->ChargeGrammarCompile(ThreadCpuTime() - start);
    return compiled;
  };
  if (req.response_format) {
    absl::StatusOr<grammar::CompiledGrammarPtr> compiled = grammar(*req.response_format);
    if (out.rejected) return fail(compiled.status());
    if (!compiled.ok()) {
      return fail(WithErrorParam(absl::InvalidArgumentError(absl::StrCat(
                                     "response_format: ", compiled.status().message())),
                                 "response_format"));
    }
    out.grammar = std::move(*compiled);
  }
  if (req.tool_choice == ToolChoice::kRequired || req.tool_choice == ToolChoice::kFunction) {
    // The call is forced by the grammar: its text in the model's format,
    // naming one of the tools (or the one asked for), with arguments its
    // parameters' schema allows.
    absl::StatusOr<chat::ForcedToolCall> forced = chat::ForcedToolCallGrammar(
        out.tool_format, req.tools, req.tool_choice_name, req.parallel_tool_calls);
    absl::StatusOr<grammar::CompiledGrammarPtr> compiled =
        forced.ok() ? grammar({.kind = grammar::OutputConstraint::Kind::kJsonSchema,
                               .schema = forced->schema,
                               .strict = false,
                               .prefix = forced->prefix,
                               .suffix = forced->suffix})
                    : absl::StatusOr<grammar::CompiledGrammarPtr>(forced.status());
    if (out.rejected) return fail(compiled.status());
    if (!compiled.ok()) {
      return fail(WithErrorParam(
          absl::InvalidArgumentError(absl::StrCat("tools: a forced call cannot be constrained: ",
                                                  compiled.status().message())),
          "tools"));
    }
    out.grammar = std::move(*compiled);
  }

  if (!pending.timeout_header.empty()) {
    int64_t ms = 0;
    if (!absl::SimpleAtoi(pending.timeout_header, &ms) || ms <= 0 || ms > kMaxTimeoutMs) {
      return fail(WithErrorParam(
          absl::InvalidArgumentError(absl::StrCat(
              "X-Tokenmill-Timeout-Ms must be an integer in [1, ", kMaxTimeoutMs, "]")),
          "X-Tokenmill-Timeout-Ms"));
    }
    // On the clock the instances read deadlines from.
    out.deadline = instances_.clock().Now() + std::chrono::milliseconds(ms);
  }
}

void OpenAiApi::AdmitAndSubmit(PendingGeneration& pending, PreparedGeneration& prepared) {
  const http::ResponseWriterPtr& response = pending.response;
  HttpHeaders& headers = pending.headers;
  // A client gone while its prompt was encoded: nothing to answer; the
  // encoding slot goes with `prepared`.
  if (response->closed()) return;
  auto fail = [&](const absl::Status& status) { SendOpenAiError(*response, status, headers); };
  OpenAiRequest& req = prepared.request;
  if (!prepared.status.ok()) {
    if (prepared.rejected && on_rejected_) on_rejected_(pending.tenant.name, req.model);
    return fail(prepared.status);
  }
  // The instance the prompt was encoded for, if it is still the one serving
  // the model (compared by owner, so a new instance at the same address is
  // never taken for it).
  runtime::ModelInstancePtr instance = instances_.Find(req.model);
  if (instance == nullptr || prepared.instance.owner_before(instance) ||
      instance.owner_before(prepared.instance)) {
    return fail(
        WithErrorCode(absl::UnavailableError(absl::StrCat(
                          "The model '", req.model, "' was unloaded while the prompt was encoded")),
                      "model_not_ready"));
  }

  // Admission with the prompt's tokens. The slot held while encoding is
  // given back first: Admit then sees the tenant as it is now (other
  // prompts of the tenant admitted meanwhile included), in loop order.
  prepared.slot.reset();
  tenants::AdmissionTicketPtr ticket;
  if (pending.limited) {
    absl::StatusOr<tenants::AdmissionTicketPtr> admitted =
        tenants_.Admit(pending.tenant.name, static_cast<int64_t>(prepared.prompt.size()),
                       static_cast<uint32_t>(req.n));
    if (!admitted.ok()) {
      if (admitted.status().code() == absl::StatusCode::kResourceExhausted && on_rejected_) {
        on_rejected_(pending.tenant.name, req.model);
      }
      return fail(AdmissionError(admitted.status()));
    }
    ticket = std::move(*admitted);
  }

  runtime::GenerationRequest generation;
  const std::string& request_id = pending.request_id;
  generation.request_id = request_id;
  if (pending.client_request_id) {
    // The ledger is keyed by our own id, so a client reusing an id can never
    // make two requests share (or lose) a ledger record; the client's id is
    // kept beside it.
    generation.client_request_id = request_id;
    const uint64_t a = rng_();
    const uint64_t b = rng_();
    generation.request_id = UuidV7(clock_(), a, b);
  }
  generation.tenant = pending.tenant.name;
  generation.user = req.user;
  generation.prompt = std::move(prepared.prompt);
  generation.sampling = req.sampling;
  generation.sampling.max_tokens = prepared.max_tokens;
  generation.stop_at_eos = !req.ignore_eos;
  generation.wants_logprobs = req.logprobs;
  generation.deadline = prepared.deadline;
  generation.grammar = std::move(prepared.grammar);
  generation.kept_control_tokens = std::move(prepared.tool_marker_tokens);
  if (req.echo && req.logprobs) generation.prompt_logprobs = req.sampling.logprobs;

  ResponseMeta meta;
  meta.endpoint = pending.endpoint;
  // The response id carries the ledger key, so a client can find its record.
  meta.id = absl::StrCat(pending.endpoint == OpenAiEndpoint::kCompletions ? "cmpl-" : "chatcmpl-",
                         generation.request_id);
  meta.created = UnixSeconds(clock_());
  meta.model = req.model;
  const size_t n = static_cast<size_t>(req.n);
  std::vector<std::optional<chat::ToolCallParser>> parsers(n);
  if (prepared.tool_format != chat::ToolCallFormat::kNone) {
    using ToolChoice = OpenAiRequest::ToolChoice;
    const bool forced =
        req.tool_choice == ToolChoice::kRequired || req.tool_choice == ToolChoice::kFunction;
    for (size_t i = 0; i < n; ++i) {
      parsers[i].emplace(prepared.tool_format, forced, req.parallel_tool_calls,
                         std::hash<std::string>{}(generation.request_id) + i);
    }
  }
  auto active = std::make_shared<ActiveGeneration>(response, std::move(meta), headers, req.stream,
                                                   req.include_usage, req.logprobs,
                                                   std::move(ticket), std::move(parsers));
  if (req.echo) active->set_echo(std::move(prepared.echo_text));
  // The sinks run on the engine thread: they only turn tokens into logprob
  // text (the tokenizer lives as long as the engine thread) and post.
  const tokenizer::Tokenizer* tokenizer = &instance->tokenizer();
  auto sink_for = [post = post_, active, tokenizer, logprobs = req.logprobs,
                   skip_bos = prepared.added_bos](size_t choice) -> runtime::GenerationSink {
    return [post, active, tokenizer, logprobs, skip_bos, choice,
            prompt_seen = size_t{0}](runtime::GenerationUpdate update) mutable {
      std::vector<LogprobEntry> entries, prompt;
      if (logprobs) {
        entries.reserve(update.tokens.size());
        for (const runtime::GeneratedToken& token : update.tokens) {
          entries.push_back(MakeLogprobEntry(token, *tokenizer));
        }
        for (const runtime::GeneratedToken& token : update.prompt) {
          if (prompt_seen++ == 0 && skip_bos) continue;
          prompt.push_back(MakeLogprobEntry(token, *tokenizer));
        }
      }
      post([active, choice, update = std::move(update), entries = std::move(entries),
            prompt = std::move(prompt)]() mutable {
        active->OnUpdate(choice, std::move(update), std::move(entries), std::move(prompt));
      });
    };
  };
  if (n > 1) {
    // Choices 1..n-1 are requests of their own (ledger records "<id>-<i>",
    // the prompt billed once, by choice 0), started once choice 0's prompt
    // is in the prefix cache, so they compute only its last partial block.
    // A seed gives choice i the seed + i.
    runtime::GenerationRequest sibling = generation;
    std::weak_ptr<ActiveGeneration> weak_active = active;
    std::weak_ptr<runtime::ModelInstance> weak_instance = instance;
    active->set_on_first_update(
        [weak_active, weak_instance, sibling = std::move(sibling), n, sink_for]() {
          auto alive = weak_active.lock();
          if (alive == nullptr) return;
          runtime::ModelInstancePtr model = weak_instance.lock();
          for (size_t i = 1; i < n; ++i) {
            runtime::GenerationRequest choice = sibling;
            choice.request_id = absl::StrCat(sibling.request_id, "-", i);
            choice.prompt_billed_elsewhere = true;
            choice.prompt_logprobs = -1;  // choice 0 reports the prompt's
            if (choice.sampling.seed) *choice.sampling.seed += i;
            absl::StatusOr<runtime::RequestHandlePtr> handle =
                model == nullptr ? absl::UnavailableError("the model was unloaded")
                                 : model->Submit(std::move(choice), sink_for(i));
            if (!handle.ok()) return alive->FailAll(handle.status());
            alive->set_handle(i, *std::move(handle));
          }
        });
  }
  absl::StatusOr<runtime::RequestHandlePtr> handle =
      instance->Submit(std::move(generation), sink_for(0));
  if (!handle.ok()) {
    // The ticket goes with `active`, which nothing else holds now.
    return SendOpenAiError(*response, handle.status(), {{"X-Request-Id", request_id}});
  }
  active->set_handle(0, *handle);
  std::weak_ptr<ActiveGeneration> weak = active;
  response->OnClose([weak] {
    if (auto alive = weak.lock()) alive->Cancel();
  });
}

}  // namespace tokenmill::daemon
