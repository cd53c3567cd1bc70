#include "runtime/instance/model_instance.h"

#include <algorithm>
#include <thread>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "runtime/instance/request_stream.h"
#include "runtime/kv/kv_block_manager.h"
#include "runtime/node/device_arbiter.h"

namespace tokenmill::runtime {
namespace {

using TimePoint = Clock::time_point;

// What other threads hand to the engine thread. Shared with request handles,
// which may outlive the instance.
struct Mailbox {
  struct Submission {
    uint64_t seq_id = 0;
    GenerationRequest request;
    GenerationSink sink;
  };

  absl::Mutex mu;
  absl::CondVar cv;
  std::vector<Submission> submissions ABSL_GUARDED_BY(mu);
  std::vector<uint64_t> cancels ABSL_GUARDED_BY(mu);
  std::vector<std::pair<std::string, sched::TenantShare>> shares ABSL_GUARDED_BY(mu);
  bool stop ABSL_GUARDED_BY(mu) = false;
  bool draining ABSL_GUARDED_BY(mu) = false;
  // Requests submitted and not yet finished (engine thread decrements).
  uint64_t live ABSL_GUARDED_BY(mu) = 0;

  bool HasNews() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    return stop || !submissions.empty() || !cancels.empty() || !shares.empty();
  }
};

class Handle final : public RequestHandle {
 public:
  Handle(std::weak_ptr<Mailbox> box, uint64_t seq_id) : box_(std::move(box)), seq_id_(seq_id) {}
  void Cancel() override {
    if (auto box = box_.lock()) {
      absl::MutexLock lock(&box->mu);
      box->cancels.push_back(seq_id_);
      box->cv.Signal();
    }
  }

 private:
  std::weak_ptr<Mailbox> box_;
  uint64_t seq_id_;
};

}  // namespace

struct ModelInstance::Impl {
  Impl(InstanceOptions opts, model::LoadedModel loaded, devices::ExecutorPtr exec,
       std::unique_ptr<tokenizer::Tokenizer> tok, devices::KvArena& kv_arena,
       DeviceArbiter& device_arbiter, const Clock& instance_clock, UsageObserverPtr usage_observer)
      : options(std::move(opts)),
        model(std::move(loaded)),
        executor(std::move(exec)),
        tokenizer(std::move(tok)),
        arena(kv_arena),
        arbiter(device_arbiter),
        clock(instance_clock),
        observer(std::move(usage_observer)),
        blocks_per_page(executor->kv_blocks_per_page()),
        kv(kv::KvBlockManager::Paged(executor->kv_blocks(), executor->kv_layout().block_tokens,
                                     blocks_per_page)),
        scheduler(options.scheduler, *kv, [this] { return GrowKv(); }),
        slot_pages(blocks_per_page == 0 ? 0 : executor->kv_blocks() / blocks_per_page) {
    const auto arena_stats = arena.Stats();
    kv->SetQuotaBase(std::min<uint64_t>(executor->kv_blocks(),
                                        uint64_t{arena_stats.pages_total} * blocks_per_page));
    seen_misses = arena_stats.page_misses;
    client = arbiter.Register(options.id);
  }

  void Run();
  // Takes what other threads sent; waits for it when `wait`. False once stopping.
  bool TakeMail(bool wait);
  void Step();
  // Ends a request (reason unset: the one its stream found) and forgets it.
  void FinishSeq(uint64_t seq_id, std::optional<FinishReason> reason,
                 absl::Status error = absl::OkStatus());
  void ExpireDeadlines();
  TimePoint Now() const { return clock.Now(); }
  bool GrowKv();
  void ReleasePages(bool include_cached);
  void PublishStats();
  double DemandWeight() const;

  InstanceOptions options;
  model::LoadedModel model;
  devices::ExecutorPtr executor;
  std::unique_ptr<tokenizer::Tokenizer> tokenizer;
  chat::ChatTemplatePtr chat_template;  // compiled once, rendered on encode threads
  // Response-format grammars, built on the first constrained request.
  absl::Mutex grammar_mu;
  std::unique_ptr<grammar::GrammarCache> grammars ABSL_GUARDED_BY(grammar_mu);
  devices::KvArena& arena;
  DeviceArbiter& arbiter;
  const Clock& clock;
  UsageObserverPtr observer;
  uint32_t client = 0;
  uint32_t blocks_per_page = 0;
  std::unique_ptr<kv::KvBlockManager> kv;
  sched::Scheduler scheduler;
  std::vector<std::optional<uint32_t>> slot_pages;  // arena page mapped at each slot
  uint64_t seen_misses = 0;

  std::shared_ptr<Mailbox> mailbox = std::make_shared<Mailbox>();
  std::atomic<uint64_t> next_seq_id{1};
  std::thread thread;

  // Engine thread only.
  absl::flat_hash_map<uint64_t, std::unique_ptr<RequestStream>> streams;
  absl::flat_hash_map<std::string, double> tenant_weight;
  absl::flat_hash_map<std::string, uint32_t> tenant_live;
  std::vector<sched::SequenceResult> results;
  // The plan's batch with greedy sequences switched to kArgmax, and each
  // planned sequence's stream (null when gone) for the forward and sampling.
  devices::Batch batch;
  std::vector<RequestStream*> step_streams;
  std::vector<uint64_t> finished;
  StepUsage step_usage;  // reused every step
  // Per planned sequence of the current step: tokens, 0 decode / 1 prefill /
  // 2 recompute, prompt tokens newly served from the cache.
  std::vector<int32_t> step_tokens;
  std::vector<uint8_t> step_prefill;
  std::vector<int32_t> step_cached;
  std::vector<uint64_t> preempted_now;
  InstanceStats totals;
  bool holding_device = false;
  std::chrono::nanoseconds step_charge{0};  // device time of the last step, charged at handoff

  mutable absl::Mutex stats_mu;
  InstanceStats stats ABSL_GUARDED_BY(stats_mu);
  std::vector<std::pair<std::string, sched::TenantService>> services ABSL_GUARDED_BY(stats_mu);
};

bool ModelInstance::Impl::TakeMail(bool wait) {
  std::vector<Mailbox::Submission> submissions;
  std::vector<uint64_t> cancels;
  std::vector<std::pair<std::string, sched::TenantShare>> shares;
  {
    absl::MutexLock lock(&mailbox->mu);
    if (wait && !mailbox->HasNews()) {
      // Idle: wake now and then to hand pages back when the arena runs short.
      mailbox->cv.WaitWithTimeout(&mailbox->mu, absl::Milliseconds(200));
    }
    if (mailbox->stop) return false;
    submissions.swap(mailbox->submissions);
    cancels.swap(mailbox->cancels);
    shares.swap(mailbox->shares);
  }
  for (auto& [tenant, share] : shares) {
    tenant_weight[tenant] = share.weight;
    (void)scheduler.SetTenant(tenant, share);
  }
  const TimePoint now = Now();
  for (auto& sub : submissions) {
    auto stream = std::make_unique<RequestStream>(std::move(sub.request), std::move(sub.sink),
                                                  *tokenizer, executor->spec().hp.vocab_size,
                                                  options.scheduler.context, now);
    const GenerationRequest& req = stream->request();
    absl::Status status = stream->Start();
    if (status.ok()) {
      status = scheduler.Add(sched::SequenceSpec{sub.seq_id, req.tenant, req.prompt,
                                                 req.sampling.max_tokens,
                                                 /*prompt_logits=*/req.prompt_logprobs >= 0});
    }
    ++tenant_live[req.tenant];
    streams.emplace(sub.seq_id, std::move(stream));
    if (!status.ok()) FinishSeq(sub.seq_id, FinishReason::kError, status);
  }
  for (uint64_t seq_id : cancels) {
    if (streams.contains(seq_id)) {
      scheduler.Remove(seq_id);
      FinishSeq(seq_id, FinishReason::kCancelled);
    }
  }
  return true;
}

void ModelInstance::Impl::FinishSeq(uint64_t seq_id, std::optional<FinishReason> reason,
                                    absl::Status error) {
  auto it = streams.find(seq_id);
  if (it == streams.end()) return;
  RequestStream& stream = *it->second;
  if (observer) {
    // Metered before the last update is sent.
    const FinishReason outcome = reason ? *reason : stream.reason().value_or(FinishReason::kStop);
    RequestRecord record;
    record.request_id = stream.request().request_id;
    record.client_request_id = stream.request().client_request_id;
    record.user = stream.request().user;
    record.tenant = stream.request().tenant;
    record.model = options.id;
    record.device = options.device;
    record.usage = stream.usage();
    record.outcome = outcome;
    if (!error.ok()) record.error = std::string(error.message());
    record.queued_at = stream.queued_at();
    record.started_at = stream.started_at();
    record.first_token_at = stream.first_token_at();
    record.finished_at = Now();
    record.finished_wall = std::chrono::system_clock::now();
    observer->OnFinish(record);
  }
  stream.Finish(reason, std::move(error));
  const std::string& tenant = it->second->request().tenant;
  if (auto live = tenant_live.find(tenant); live != tenant_live.end() && --live->second == 0) {
    tenant_live.erase(live);
  }
  streams.erase(it);
  absl::MutexLock lock(&mailbox->mu);
  --mailbox->live;
}

void ModelInstance::Impl::ExpireDeadlines() {
  const TimePoint now = Now();
  finished.clear();
  for (const auto& [seq_id, stream] : streams) {
    if (stream->request().deadline && *stream->request().deadline <= now)
      finished.push_back(seq_id);
  }
  for (uint64_t seq_id : finished) {
    scheduler.Remove(seq_id);
    FinishSeq(seq_id, FinishReason::kDeadline);
  }
}

double ModelInstance::Impl::DemandWeight() const {
  double weight = 0.0;
  for (const auto& [tenant, live] : tenant_live) {
    auto it = tenant_weight.find(tenant);
    weight += it == tenant_weight.end() ? 1.0 : it->second;
  }
  return weight > 0.0 ? weight : 1.0;
}

bool ModelInstance::Impl::GrowKv() {
  if (blocks_per_page == 0) return false;
  auto slot = std::find(slot_pages.begin(), slot_pages.end(), std::nullopt);
  if (slot == slot_pages.end()) return false;
  const std::optional<uint32_t> page = arena.TakePage();
  if (!page) return false;
  const auto index = static_cast<uint32_t>(slot - slot_pages.begin());
  if (!executor->MapKvPage(index, *page).ok()) {
    arena.ReturnPage(*page);
    return false;
  }
  if (!kv->AddPage(index).ok()) {
    (void)executor->UnmapKvPage(index);
    arena.ReturnPage(*page);
    return false;
  }
  *slot = *page;
  return true;
}

void ModelInstance::Impl::ReleasePages(bool include_cached) {
  for (uint32_t slot : kv->ReleasablePages(include_cached)) {
    if (slot >= slot_pages.size() || !slot_pages[slot]) continue;
    if (!kv->RemovePage(slot, include_cached)) continue;
    (void)executor->UnmapKvPage(slot);
    arena.ReturnPage(*slot_pages[slot]);
    slot_pages[slot].reset();
  }
}

void ModelInstance::Impl::PublishStats() {
  const kv::KvStats kv_stats = kv->Stats();
  InstanceStats s = totals;
  s.running = static_cast<uint32_t>(scheduler.running());
  s.waiting = static_cast<uint32_t>(scheduler.waiting());
  s.kv_blocks_used = kv_stats.blocks_used;
  s.kv_blocks_cached = kv_stats.blocks_cached;
  s.kv_blocks_free = kv_stats.blocks_free;
  s.kv_pages = kv_stats.pages;
  s.prefix_query_tokens = kv_stats.prefix_query_tokens;
  s.prefix_hit_tokens = kv_stats.prefix_hit_tokens;
  for (const kv::TenantKvUsage& t : kv->TenantUsage()) {
    if (t.used_blocks > 0) s.tenant_kv_blocks.emplace_back(t.tenant, t.used_blocks);
  }
  std::vector<std::pair<std::string, sched::TenantService>> per_tenant;
  for (const std::string& tenant : scheduler.Tenants()) {
    per_tenant.emplace_back(tenant, scheduler.Service(tenant));
  }
  absl::MutexLock lock(&stats_mu);
  stats = s;
  services = std::move(per_tenant);
}

void ModelInstance::Impl::Step() {
  const sched::StepPlan& plan = scheduler.Plan();
  preempted_now.assign(plan.preempted.begin(), plan.preempted.end());
  for (uint64_t seq_id : plan.preempted) {
    if (auto it = streams.find(seq_id); it != streams.end()) it->second->add_preemption();
    ++totals.preemptions;
  }
  if (plan.empty()) {
    if (scheduler.running() == 0 && scheduler.waiting() > 0) {
      // Nothing runs and nothing can start: the oldest waiting request needs
      // more KV than the instance can get now. Fail it rather than spin.
      uint64_t oldest = UINT64_MAX;
      for (const auto& [seq_id, stream] : streams) oldest = std::min(oldest, seq_id);
      scheduler.Remove(oldest);
      FinishSeq(oldest, FinishReason::kError,
                absl::ResourceExhaustedError(absl::StrCat(
                    "model ", options.id, ": not enough KV cache memory on ", options.device,
                    " for this request now; retry later or shorten it")));
    }
    return;
  }
  const TimePoint step_at = Now();
  // Greedy sequences without logprobs take the executor's argmax: on a GPU
  // only their token ids come back.
  batch.seqs.assign(plan.batch.seqs.begin(), plan.batch.seqs.end());
  step_streams.clear();
  for (size_t i = 0; i < plan.seqs.size(); ++i) {
    auto it = streams.find(plan.seqs[i].seq_id);
    RequestStream* stream = it != streams.end() ? it->second.get() : nullptr;
    step_streams.push_back(stream);
    if (stream != nullptr && plan.seqs[i].samples &&
        batch.seqs[i].logits == devices::LogitsWanted::kLast && stream->GreedyOnDevice()) {
      batch.seqs[i].logits = devices::LogitsWanted::kArgmax;
    }
  }
  absl::StatusOr<devices::StepOutput> out = executor->Forward(batch);
  const auto wall = std::chrono::duration_cast<std::chrono::nanoseconds>(Now() - step_at);
  const auto device_time = out.ok() && out->device_time.count() > 0 ? out->device_time : wall;
  step_charge = device_time;
  ++totals.steps;
  totals.device_time += device_time;

  if (!out.ok()) {
    finished.clear();
    for (const auto& ps : plan.seqs) finished.push_back(ps.seq_id);
    for (uint64_t seq_id : finished) {
      scheduler.Remove(seq_id);
      FinishSeq(seq_id, FinishReason::kError, out.status());
    }
    return;
  }

  const TimePoint now = Now();
  const size_t vocab = static_cast<size_t>(out->vocab_size);
  size_t row = 0, argmax_row = 0;
  results.clear();
  step_tokens.clear();
  step_prefill.clear();
  step_cached.clear();
  const size_t plan_seqs = plan.seqs.size();
  for (size_t i = 0; i < plan.seqs.size(); ++i) {
    const sched::PlannedSequence& ps = plan.seqs[i];
    const size_t tokens = plan.batch.seqs[i].tokens.size();
    RequestStream* stream = step_streams[i];
    if (stream != nullptr) stream->mark_started(step_at);
    int32_t newly_cached = 0;
    if (ps.prefill && !ps.recompute) {
      totals.prompt_tokens += tokens;
      if (ps.cached_tokens > 0 && stream != nullptr && !stream->cached_counted()) {
        stream->set_cached_tokens(ps.cached_tokens);
        newly_cached = ps.cached_tokens;
        totals.cached_tokens += static_cast<uint64_t>(ps.cached_tokens);
      }
    }
    step_tokens.push_back(static_cast<int32_t>(tokens));
    step_prefill.push_back(ps.prefill ? (ps.recompute ? 2 : 1) : 0);
    step_cached.push_back(newly_cached);
    sched::SequenceResult result{ps.seq_id, std::nullopt, false};
    if (ps.all_logits) {
      // Every token's row: prompt logprobs, then (when it samples) the last
      // row is the sampling one.
      const int32_t start = plan.batch.seqs[i].start_pos;
      for (size_t j = 0; j < tokens; ++j) {
        if (stream == nullptr) break;
        stream->OnPromptLogits(
            start + static_cast<int32_t>(j),
            std::span<const float>(out->logits.data() + (row + j) * vocab, vocab));
      }
      row += ps.samples ? tokens - 1 : tokens;
    }
    const bool on_device = batch.seqs[i].logits == devices::LogitsWanted::kArgmax;
    if (ps.samples && stream != nullptr) {
      absl::StatusOr<RequestStream::Next> next = absl::InternalError("no token from the executor");
      if (!on_device) {
        // The row is read by this stream alone: it may mask it in place.
        const std::span<float> logits(out->logits.data() + row * vocab, vocab);
        ++row;
        next = stream->OnLogits(logits, now);
      } else if (argmax_row < out->argmax.size()) {
        next = stream->OnToken(out->argmax[argmax_row++], now);
      }
      if (next.ok()) {
        result.token = next->token;
        result.finished = next->finished;
        ++totals.generated_tokens;
      } else {
        result.finished = true;
        stream->Finish(FinishReason::kError, next.status());
      }
    } else if (ps.samples) {
      ++(on_device ? argmax_row : row);
    }
    results.push_back(result);
  }
  scheduler.Commit(results);
  if (observer) {
    // Metered before any of the step's tokens is sent.
    step_usage.model = options.id;
    step_usage.device = options.device;
    step_usage.at = std::chrono::system_clock::now();
    step_usage.device_time = device_time;
    step_usage.batch_size = static_cast<int32_t>(plan_seqs);
    step_usage.seqs.clear();
    step_usage.preempted_tenants.clear();
    for (uint64_t seq_id : preempted_now) {
      if (auto it = streams.find(seq_id); it != streams.end()) {
        step_usage.preempted_tenants.push_back(it->second->request().tenant);
      }
    }
    for (size_t i = 0; i < results.size(); ++i) {
      auto it = streams.find(results[i].seq_id);
      if (it == streams.end()) continue;
      SequenceUsage u;
      u.request_id = it->second->request().request_id;
      u.client_request_id = it->second->request().client_request_id;
      u.user = it->second->request().user;
      u.tenant = it->second->request().tenant;
      const int32_t tokens = step_tokens[i];
      if (step_prefill[i] == 1) u.prompt_tokens = tokens;
      if (step_prefill[i] == 2) u.recomputed_tokens = tokens;
      u.cached_tokens = step_cached[i];
      if (it->second->request().prompt_billed_elsewhere) {
        u.recomputed_tokens += u.prompt_tokens;
        u.prompt_tokens = 0;
        u.cached_tokens = 0;
      }
      u.generated_tokens = results[i].token ? 1 : 0;
      step_usage.seqs.push_back(u);
    }
    if (absl::Status metered = observer->OnStep(step_usage); !metered.ok()) {
      // Tokens nobody recorded are not sent: the step's requests end here.
      finished.clear();
      for (const sched::SequenceResult& r : results) {
        if (!r.finished) finished.push_back(r.seq_id);
      }
      for (uint64_t seq_id : finished) scheduler.Remove(seq_id);
      for (const sched::SequenceResult& r : results) {
        FinishSeq(r.seq_id, FinishReason::kError,
                  absl::UnavailableError(absl::StrCat("metering failed: ", metered.message())));
      }
      return;
    }
  }
  for (const sched::SequenceResult& r : results) {
    auto it = streams.find(r.seq_id);
    if (it == streams.end()) continue;
    if (r.finished) {
      FinishSeq(r.seq_id, std::nullopt);  // the reason OnLogits found
    } else {
      it->second->Flush();
    }
  }
}

void ModelInstance::Impl::Run() {
  // The device is held from one step to the next while there is work (the
  // handoff lets other instances in by fair share); sampling and bookkeeping
  // run inside the slot, but only Forward's time is charged.
  bool waited_idle = false;
  while (TakeMail(/*wait=*/!scheduler.HasWork() && !holding_device)) {
    ExpireDeadlines();
    const uint64_t misses = arena.page_misses();
    const bool pressure = misses != seen_misses;
    seen_misses = misses;
    if (!scheduler.HasWork()) {
      if (holding_device) {
        arbiter.Release(client, step_charge);
        holding_device = false;
        step_charge = std::chrono::nanoseconds(0);
      }
      // Idle: empty pages go back at once, cached ones when others need pages.
      ReleasePages(pressure);
      if (!waited_idle) arbiter.Idle(client);
      waited_idle = true;
      PublishStats();
      continue;
    }
    waited_idle = false;
    if (pressure) ReleasePages(/*include_cached=*/true);
    if (holding_device) {
      arbiter.Next(client, step_charge, DemandWeight());
    } else {
      arbiter.Acquire(client, DemandWeight());
      holding_device = true;
    }
    step_charge = std::chrono::nanoseconds(0);
    Step();
    PublishStats();
  }
  if (holding_device) {
    arbiter.Release(client, step_charge);
    holding_device = false;
  }
}

ModelInstance::ModelInstance(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

absl::StatusOr<std::unique_ptr<ModelInstance>> ModelInstance::Start(
    InstanceOptions options, model::LoadedModel model, devices::ExecutorPtr executor,
    devices::KvArena& arena, DeviceArbiter& arbiter, const Clock& clock,
    UsageObserverPtr observer) {
  if (executor == nullptr) return absl::InvalidArgumentError("no executor");
  if (executor->kv_blocks_per_page() == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("model ", options.id, ": the executor's KV is not in an arena"));
  }
  auto tok = tokenizer::Tokenizer::Create(model.tokenizer);
  if (!tok.ok()) return tok.status();
  // A template that does not parse fails the load with the reason: serving
  // the model a different prompt format would go unnoticed.
  absl::StatusOr<chat::ChatTemplatePtr> chat_template = chat::ChatTemplate::Create(**tok);
  if (!chat_template.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("model ", options.id, ": ", chat_template.status().message()));
  }
  const int32_t trained = executor->spec().hp.context_length;
  if (options.scheduler.context <= 0) options.scheduler.context = trained > 0 ? trained : 4096;
  auto impl = std::make_unique<Impl>(std::move(options), std::move(model), std::move(executor),
                                     std::move(*tok), arena, arbiter, clock, std::move(observer));
  impl->chat_template = *std::move(chat_template);
  Impl* raw = impl.get();
  impl->PublishStats();
  impl->thread = std::thread([raw] { raw->Run(); });
  return std::unique_ptr<ModelInstance>(new ModelInstance(std::move(impl)));
}

ModelInstance::~ModelInstance() { Stop(); }

absl::StatusOr<RequestHandlePtr> ModelInstance::Submit(GenerationRequest request,
                                                       GenerationSink sink) {
  const int32_t vocab = impl_->executor->spec().hp.vocab_size;
  if (request.prompt.empty()) return absl::InvalidArgumentError("the prompt has no tokens");
  for (int32_t id : request.prompt) {
    if (id < 0 || id >= vocab) {
      return absl::InvalidArgumentError(
          absl::StrCat("prompt token ", id, " is outside the vocabulary (", vocab, " tokens)"));
    }
  }
  for (const auto& [id, bias] : request.sampling.logit_bias) {
    if (id < 0 || id >= vocab) {
      return absl::InvalidArgumentError(
          absl::StrCat("logit_bias token ", id, " is outside the vocabulary (", vocab, " tokens)"));
    }
  }
  const int64_t total = static_cast<int64_t>(request.prompt.size()) + request.sampling.max_tokens;
  if (total > impl_->options.scheduler.context) {
    return absl::InvalidArgumentError(
        absl::StrCat("prompt (", request.prompt.size(), " tokens) + max_tokens (",
                     request.sampling.max_tokens, ") exceeds the context of model ",
                     impl_->options.id, " (", impl_->options.scheduler.context, " tokens)"));
  }
  const uint64_t seq_id = impl_->next_seq_id.fetch_add(1);
  Mailbox& box = *impl_->mailbox;
  absl::MutexLock lock(&box.mu);
  if (box.stop || box.draining) {
    return absl::UnavailableError(
        absl::StrCat("model ", impl_->options.id, " is ", box.stop ? "stopped" : "draining"));
  }
  box.submissions.push_back({seq_id, std::move(request), std::move(sink)});
  ++box.live;
  box.cv.Signal();
  return std::make_shared<Handle>(impl_->mailbox, seq_id);
}

void ModelInstance::SetTenantShare(const std::string& tenant, const sched::TenantShare& share) {
  absl::MutexLock lock(&impl_->mailbox->mu);
  impl_->mailbox->shares.emplace_back(tenant, share);
  impl_->mailbox->cv.Signal();
}

void ModelInstance::Drain() {
  absl::MutexLock lock(&impl_->mailbox->mu);
  impl_->mailbox->draining = true;
}

bool ModelInstance::idle() const {
  absl::MutexLock lock(&impl_->mailbox->mu);
  return impl_->mailbox->live == 0;
}

void ModelInstance::Stop() {
  {
    absl::MutexLock lock(&impl_->mailbox->mu);
    impl_->mailbox->stop = true;
    impl_->mailbox->cv.SignalAll();
  }
  if (impl_->thread.joinable()) impl_->thread.join();
  // The engine thread is gone: end what is left and give the pages back.
  Impl& m = *impl_;
  std::vector<uint64_t> left;
  for (const auto& [seq_id, stream] : m.streams) left.push_back(seq_id);
  for (uint64_t seq_id : left) {
    m.scheduler.Remove(seq_id);
    m.FinishSeq(seq_id, FinishReason::kCancelled);
  }
  {
    absl::MutexLock lock(&m.mailbox->mu);
    for (auto& sub : m.mailbox->submissions) {
      GenerationUpdate update;
      update.finished = true;
      update.finish_reason = FinishReason::kCancelled;
      if (sub.sink) sub.sink(std::move(update));
    }
    m.mailbox->live -= m.mailbox->submissions.size();
    m.mailbox->submissions.clear();
  }
  m.ReleasePages(/*include_cached=*/true);
  if (m.client != 0) {
    m.arbiter.Unregister(m.client);
    m.client = 0;
  }
  m.PublishStats();
}

InstanceStats ModelInstance::Stats() const {
  absl::MutexLock lock(&impl_->stats_mu);
  return impl_->stats;
}
std::vector<std::pair<std::string, sched::TenantService>> ModelInstance::TenantServices() const {
  absl::MutexLock lock(&impl_->stats_mu);
  return impl_->services;
}
const InstanceOptions& ModelInstance::options() const { return impl_->options; }
const tokenizer::Tokenizer& ModelInstance::tokenizer() const { return *impl_->tokenizer; }

const chat::ChatTemplate& ModelInstance::chat_template() const { return *impl_->chat_template; }
const model::LoadedModel& ModelInstance::model() const { return impl_->model; }

grammar::GrammarCache& ModelInstance::Grammars() {
  absl::MutexLock lock(&impl_->grammar_mu);
  if (impl_->grammars == nullptr) {
    impl_->grammars = std::make_unique<grammar::GrammarCache>(
        grammar::TokenVocabulary::FromTokenizer(*impl_->tokenizer), grammar::JsonSchemaOptions());
  }
  // The cache is thread-safe and lives as long as the instance.
  return *impl_->grammars;
}

absl::StatusOr<grammar::CompiledGrammarPtr> ModelInstance::Grammar(
    const grammar::OutputConstraint& constraint) {
  return Grammars().Get(constraint);
}

grammar::CompiledGrammarPtr ModelInstance::CachedGrammar(
    const grammar::OutputConstraint& constraint) {
  return Grammars().Find(constraint);
}
int32_t ModelInstance::context() const { return impl_->options.scheduler.context; }

}  // namespace tokenmill::runtime
