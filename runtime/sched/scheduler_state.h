// Private state of Scheduler, shared by scheduler.cc (sequences, tenants,
// queries) and step_planner.cc (Plan, Commit). Not part of the API.
#pragma once

#include <algorithm>
#include <cstdint>
#include <deque>
#include <span>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "runtime/kv/kv_block_manager.h"
#include "runtime/sched/scheduler.h"

namespace tokenmill::sched {

enum class SeqState : uint8_t { kFree, kWaiting, kRunning };

// One sequence slot. Slots are reused after a sequence leaves, so their token
// vectors keep their capacity and steady traffic allocates little.
struct SequenceState {
  uint64_t id = 0;
  int32_t tenant = -1;
  SeqState state = SeqState::kFree;
  bool recompute = false;  // its prefill re-computes a preempted sequence
  // Prompt followed by generated tokens; reserved to max_len at Add so that
  // appends never move it (the plan's token spans point here).
  std::vector<int32_t> tokens;
  int32_t prompt_len = 0;
  int32_t max_len = 0;         // prompt + max_new_tokens
  int32_t computed = 0;        // leading tokens whose KV is written; next start_pos
  int32_t prefill_end = 0;     // the prefill covers tokens [0, prefill_end)
  int32_t charged_prompt = 0;  // prompt tokens already charged to VTC (a watermark)
  int32_t cached_tokens = 0;   // prefix-cache hit when it last started
  bool prompt_logits = false;  // SequenceSpec::prompt_logits
  // kv.BlockTable(id), refreshed after every EnsureCapacity (the manager keeps
  // it valid until then); empty while not running.
  std::span<const uint32_t> table;
  // == Impl::epoch once Plan() reserved KV for its step (step_tokens tokens)
  // and while it is in that plan (at plan_index).
  uint64_t plan_epoch = 0;
  int32_t step_tokens = 0;
  int32_t plan_index = -1;
  uint64_t preempted_epoch = 0;  // == Impl::epoch when preempted by this Plan()
};

struct TenantState {
  std::string name;
  TenantShare share;
  std::string salt;  // share.cache_salt, or the name when that is empty
  double counter = 0.0;
  double weighted_tokens = 0.0;
  uint64_t prompt_tokens = 0;
  uint64_t generated_tokens = 0;
  uint32_t running = 0;
  std::deque<uint32_t> waiting;  // slots, FIFO; preempted ones go to the front
  bool kv_blocked = false;       // admission failed on KV during this Plan()
  bool backlogged() const { return running > 0 || !waiting.empty(); }
};

struct Scheduler::Impl {
  Impl(SchedulerOptions o, kv::KvBlockManager& k, KvGrowFn g);

  // scheduler.cc
  int32_t TenantIndex(const std::string& name);
  uint32_t NewSlot();
  void FreeSlot(uint32_t slot);
  SequenceState* Find(uint64_t seq_id);
  const SequenceState* Find(uint64_t seq_id) const;

  // step_planner.cc
  void PlanStep();
  void CommitStep(std::span<const SequenceResult> results);
  // Makes the sequence's block table cover total_tokens: EnsureCapacity, then
  // grow(), then (may_preempt) preempting KV's victim. False when none helps.
  bool Reserve(uint32_t slot, int64_t total_tokens, bool may_preempt);
  // False when the tenant's own KV cap refuses the blocks: growing the
  // manager would take arena pages that the tenant could still not use.
  bool WithinCap(const SequenceState& s, int64_t total_tokens) const;
  // Frees a running sequence's blocks and queues it at the front of its
  // tenant's queue, to be recomputed from its whole token list.
  void Preempt(uint32_t slot);
  // Takes n tokens and a seat of the step for the sequence (reserved KV).
  void Claim(uint32_t slot, int32_t n);
  // Appends the sequence's claimed step (tokens [computed, computed + n)) to
  // the plan and charges the VTC for prompt tokens not charged before.
  void AddStep(uint32_t slot, bool prefill);
  // Backlogged tenant with waiting work, room under max_running and not KV
  // blocked, with the lowest counter (ties: first seen); -1 if none.
  int32_t PickTenant() const;
  void CompactRunning();

  SchedulerOptions options;
  kv::KvBlockManager& kv;
  KvGrowFn grow;

  std::vector<SequenceState> seqs;  // slots
  std::vector<uint32_t> free_slots;
  absl::flat_hash_map<uint64_t, uint32_t> slot_of;  // live seq_id -> slot

  std::vector<TenantState> tenants;  // first-seen order
  absl::flat_hash_map<std::string, int32_t> tenant_index;

  std::vector<uint32_t> running;  // slots in admission order
  size_t waiting_count = 0;

  StepPlan plan;
  std::vector<uint32_t> plan_slots;  // parallel to plan.seqs
  uint64_t epoch = 0;                // bumped by every Plan()
  int32_t budget = 0;                // tokens left while planning
  int32_t seats = 0;                 // sequences left while planning
  int32_t logit_rows = 0;            // prompt-logits rows left while planning
  // The prefill chunk a sequence may take now: what is left of its prefill,
  // within the token budget and, for a prompt_logits one, the rows of
  // logits a step may hold (kMaxPromptLogitRows); 0: none this step.
  int32_t ChunkFor(const SequenceState& s) const {
    int32_t n = std::min(s.prefill_end - s.computed, budget);
    if (s.prompt_logits) n = std::min(n, logit_rows);
    return n;
  }
};

}  // namespace tokenmill::sched
