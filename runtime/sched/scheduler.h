// Scheduler: continuous batching for one model instance. Keeps every
// sequence of the instance (waiting, running, preempted), and each step plans
// a Batch under the instance's token and sequence budgets: running decodes
// first, then prefill chunks, waiting work taken in tenant fair-share order
// (virtual token counters, VTC), KV blocks reserved through the instance's
// KvBlockManager, preemption by recompute when blocks run out.
//
// Not thread-safe: the instance's engine thread owns it and is the only
// caller. It does no I/O and never blocks.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "devices/executor.h"
#include "runtime/kv/kv_block_manager.h"

namespace tokenmill::sched {

// What the scheduler needs to know of a tenant. Settable at any time
// (SIGHUP, tenants API); takes effect from the next Plan().
struct TenantShare {
  double weight = 1.0;       // fair-share weight, > 0
  uint32_t max_running = 0;  // sequences of the tenant running at once; 0 = unlimited
  uint32_t kv_reserved_blocks = 0;
  double kv_max_fraction = 1.0;  // (0, 1] of the instance's block capacity
  // Prefix cache salt: tenants with the same salt share cached prefixes.
  // The runtime sets the tenant's name, or "group:" + cache_group.
  std::string cache_salt{};
};

struct SchedulerOptions {
  int32_t max_batch_tokens = 2048;  // tokens per step (prefill + decode), >= 1
  int32_t max_seqs = 64;            // sequences per step, >= 1
  int32_t context = 4096;           // positions per sequence (prompt + generated)
  double vtc_input_weight = 1.0;    // VTC charge per prompt token
  double vtc_output_weight = 2.0;   // VTC charge per generated token
};

// A new sequence. The scheduler copies what it keeps.
struct SequenceSpec {
  uint64_t seq_id = 0;  // unique among the scheduler's live sequences
  std::string tenant{};
  std::vector<int32_t> prompt{};  // >= 1 token
  int32_t max_new_tokens = 1;     // >= 1; prompt + max_new_tokens <= context
  // Every prompt token's logits are wanted (prompt logprobs): its first-pass
  // prefill chunks ask for all their rows, and it takes nothing from the
  // prefix cache (a cached token has no logits). Such chunks hold at most
  // kMaxPromptLogitRows tokens per step between them (a step's logits are
  // rows x vocabulary floats: 128 MiB at 256 rows of a 128K vocabulary).
  bool prompt_logits = false;
};

inline constexpr int32_t kMaxPromptLogitRows = 256;

// A sequence's part of the planned step; parallel to StepPlan::batch.seqs.
struct PlannedSequence {
  uint64_t seq_id = 0;
  bool prefill = false;       // a prompt (or recompute) chunk; false = one decode token
  bool samples = false;       // this step's last logits give the sequence's next token
  bool recompute = false;     // re-prefill of a preempted sequence's tokens
  int32_t cached_tokens = 0;  // prompt tokens served from the prefix cache when it started
  // The step's logits rows are all of its tokens' (LogitsWanted::kAll: a
  // prompt chunk of a SequenceSpec::prompt_logits sequence with tokens not
  // computed before); the last row is the sampling one when `samples`.
  bool all_logits = false;
};

struct StepPlan {
  // Ready for Executor::Forward. Spans point into scheduler-owned memory,
  // valid until the next Plan(), Commit() or Remove().
  devices::Batch batch{};
  std::vector<PlannedSequence> seqs{};
  // Sequences preempted while planning this step (blocks freed; they wait to
  // be recomputed). Their tenants' counters are not charged again.
  std::vector<uint64_t> preempted{};
  int32_t prefill_tokens = 0;
  int32_t decode_tokens = 0;
  bool empty() const { return batch.seqs.empty(); }
};

// What one planned sequence produced in the step.
struct SequenceResult {
  uint64_t seq_id = 0;
  std::optional<int32_t> token{};  // the sampled token, when the plan said `samples`
  bool finished = false;           // stop token, stop string, max tokens: remove it
};

// Weighted service a tenant received (for tests and metrics).
struct TenantService {
  double counter = 0.0;          // VTC virtual counter (after lifts)
  double weighted_tokens = 0.0;  // w_in * prompt + w_out * generated tokens served
  uint64_t prompt_tokens = 0;    // prompt tokens computed (not cached, not recomputed)
  uint64_t generated_tokens = 0;
  uint32_t running = 0;
  uint32_t waiting = 0;
};

// Gives the instance more KV blocks (a page from the device arena) when the
// KvBlockManager has none free; returns false when the arena has none. May
// be empty: the manager's blocks are then all there is. A true return must
// raise kv.present_blocks() (the scheduler stops asking otherwise); it is not
// asked when the tenant's own kv_max_fraction cap is what refuses.
using KvGrowFn = std::function<bool()>;

class Scheduler {
 public:
  // Budgets below their minimum are clamped (max_batch_tokens, max_seqs >= 1).
  // `kv` must outlive the scheduler.
  Scheduler(SchedulerOptions options, kv::KvBlockManager& kv, KvGrowFn grow = nullptr);
  // Defined where Impl is complete.
  ~Scheduler();

  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Sets or replaces a tenant's share (quota passed on to the KvBlockManager).
  // Sequences of a tenant never set run with the defaults.
  absl::Status SetTenant(const std::string& tenant, const TenantShare& share);

  // Queues a sequence at the back of its tenant's waiting queue.
  // kInvalidArgument: empty prompt, bad max_new_tokens, past the context;
  // kAlreadyExists: seq_id is live.
  absl::Status Add(SequenceSpec spec);

  // Plans the next step: every running sequence that has finished its
  // prefill gets its decode token (preempting, by KvBlockManager's
  // PreemptionVictim, when blocks run out); the remaining token budget goes
  // to prefill chunks of running sequences, then to waiting sequences taken
  // from the backlogged tenant with the lowest counter (a tenant becoming
  // backlogged is lifted to the minimum counter of the backlogged ones). A
  // step holds at most max_seqs sequences and max_batch_tokens tokens, and at
  // most max_seqs sequences run (hold blocks) at once. Running work claims its
  // KV before the batch is built, so a victim is never taken out of it; a
  // sequence with no victim (or itself the victim) is preempted itself.
  // Admission grows the KV through `grow` but never preempts.
  const StepPlan& Plan();

  // Applies the results of the last planned step: records sampled tokens
  // (charging the VTC output weight), registers completed KV blocks in the
  // prefix cache (only computed positions: a block ending in the token just
  // sampled is registered after the step that writes it), and removes
  // finished sequences (freeing their blocks). A sequence that reached
  // prompt + max_new_tokens is removed even if `finished` is false. Results
  // of other sequences, or given twice, are ignored; a planned sequence with
  // no result (or no token where it sampled) is simply planned again.
  void Commit(std::span<const SequenceResult> results);

  // Drops a sequence now, wherever it is (cancel, deadline, error); frees its
  // blocks. Unknown ids are ignored.
  void Remove(uint64_t seq_id);

  // Tokens of a live sequence: prompt followed by what it generated so far.
  std::span<const int32_t> Tokens(uint64_t seq_id) const;

  // True while any sequence is running or waiting (waiting ones may be unable
  // to start until blocks free up).
  bool HasWork() const;
  // Sequences holding KV blocks / queued (preempted ones included).
  size_t running() const;
  size_t waiting() const;
  // Zeros for a tenant never seen.
  TenantService Service(const std::string& tenant) const;
  // Every tenant seen, in first-seen order.
  std::vector<std::string> Tenants() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tokenmill::sched
