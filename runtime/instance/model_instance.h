// ModelInstance: one loaded model on one device. It owns the executor, the
// tokenizer, the KV block bookkeeping and the scheduler, and runs them on its
// own engine thread: each step it waits for its device's turn (DeviceArbiter),
// plans a batch, runs Executor::Forward, samples, and streams updates to the
// requests' sinks.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "devices/executor.h"
#include "devices/kv_arena.h"
#include "runtime/chat/chat_template.h"
#include "runtime/grammar/grammar_cache.h"
#include "runtime/instance/generation.h"
#include "runtime/instance/usage_observer.h"
#include "runtime/model/model_loader.h"
#include "runtime/sched/scheduler.h"
#include "runtime/support/clock.h"
#include "runtime/tokenizer/tokenizer.h"

namespace tokenmill::runtime {

class DeviceArbiter;

struct InstanceOptions {
  std::string id;                     // model id on the node ("llama-1b")
  std::string device;                 // device id ("cpu", "cuda:0")
  sched::SchedulerOptions scheduler;  // max_seqs, max_batch_tokens, context, VTC weights
};

// A point-in-time view for the APIs and metrics. Thread-safe to take.
struct InstanceStats {
  uint32_t running = 0;
  uint32_t waiting = 0;
  uint32_t kv_blocks_used = 0;
  uint32_t kv_blocks_cached = 0;
  uint32_t kv_blocks_free = 0;  // held by the instance, empty
  uint32_t kv_pages = 0;        // arena pages held
  uint64_t steps = 0;
  uint64_t prompt_tokens = 0;  // computed
  uint64_t cached_tokens = 0;  // served from the prefix cache
  uint64_t generated_tokens = 0;
  uint64_t preemptions = 0;
  uint64_t prefix_query_tokens = 0;
  uint64_t prefix_hit_tokens = 0;
  std::chrono::nanoseconds device_time{0};
  // KV blocks charged to each tenant on this instance.
  std::vector<std::pair<std::string, uint32_t>> tenant_kv_blocks;
};

class ModelInstance {
 public:
  // Takes the loaded model and an executor made for it (whose KV lives in
  // `arena` pages), and starts the engine thread. `arbiter`, `arena` and
  // `clock` outlive the instance. Every time the instance reads comes from
  // `clock`: requests' times and deadlines (GenerationRequest::deadline is
  // on it), and a step's time when the executor reports none (what the step
  // and the arbiter are charged). `observer` (may be null) meters every step
  // and request on the engine thread.
  static absl::StatusOr<std::unique_ptr<ModelInstance>> Start(
      InstanceOptions options, model::LoadedModel model, devices::ExecutorPtr executor,
      devices::KvArena& arena, DeviceArbiter& arbiter, const Clock& clock,
      UsageObserverPtr observer = nullptr);
  ~ModelInstance();  // Stop()s

  // Queues a request. Thread-safe. kInvalidArgument (empty prompt, token
  // outside the vocabulary, prompt + max_tokens past the context),
  // kUnavailable while draining or stopped. The sink gets every update, the
  // last with finished = true, unless Submit fails.
  absl::StatusOr<RequestHandlePtr> Submit(GenerationRequest request, GenerationSink sink);

  // Sets a tenant's scheduling share (from the next step). Thread-safe.
  void SetTenantShare(const std::string& tenant, const sched::TenantShare& share);

  // Stops admitting; running and waiting requests finish. Thread-safe.
  void Drain();
  bool idle() const;  // nothing running or waiting
  // Cancels everything left (kCancelled), stops the engine thread, returns
  // the KV pages. Idempotent.
  void Stop();

  InstanceStats Stats() const;
  // Each tenant's fair-share service on this instance (VTC counters, tokens
  // served, running and waiting), as of the last step.
  std::vector<std::pair<std::string, sched::TenantService>> TenantServices() const;
  const InstanceOptions& options() const;
  const tokenizer::Tokenizer& tokenizer() const;
  // The model's chat template (or the plain format), compiled at Start;
  // thread-safe to render.
  const chat::ChatTemplate& chat_template() const;
  const model::LoadedModel& model() const;  // spec, metadata, chat template
  // The grammar for a response format, compiled for this model's vocabulary
  // and cached per instance (the vocabulary index is built on first use).
  // kInvalidArgument naming the schema's problem. Thread-safe; compiling a
  // new schema costs milliseconds to about a second at a 128K vocabulary, so
  // call it off event loops (the encode pool does).
  absl::StatusOr<grammar::CompiledGrammarPtr> Grammar(const grammar::OutputConstraint& constraint);
  // The cached grammar for `constraint`, or nullptr when Grammar would
  // compile it (so that a caller can budget the compile).
  grammar::CompiledGrammarPtr CachedGrammar(const grammar::OutputConstraint& constraint);
  int32_t context() const;

 private:
  struct Impl;
  explicit ModelInstance(std::unique_ptr<Impl> impl);
  // The instance's grammar cache, made on first use.
  grammar::GrammarCache& Grammars();
  std::unique_ptr<Impl> impl_;
};

using ModelInstancePtr = std::shared_ptr<ModelInstance>;

}  // namespace tokenmill::runtime
