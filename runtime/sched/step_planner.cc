// Scheduler::Plan and Scheduler::Commit: one step of continuous batching.
//
// Hot path at a few hundred running decodes: no hash lookups for a sequence
// whose block table already covers its next token (the table span is cached
// from the KvBlockManager), vectors reused from step to step, and results
// matched to the plan by index.
#include <algorithm>
#include <cmath>

#include "runtime/sched/scheduler.h"
#include "runtime/sched/scheduler_state.h"

namespace tokenmill::sched {

bool Scheduler::Impl::Reserve(uint32_t slot, int64_t total_tokens, bool may_preempt) {
  SequenceState& s = seqs[slot];
  const int64_t bt = kv.block_tokens();
  if (static_cast<int64_t>(s.table.size()) * bt >= total_tokens) return true;
  for (;;) {
    const absl::Status status = kv.EnsureCapacity(s.id, total_tokens);
    if (status.ok()) {
      s.table = kv.BlockTable(s.id);
      return true;
    }
    if (status.code() != absl::StatusCode::kResourceExhausted) return false;
    if (grow && WithinCap(s, total_tokens)) {
      // A grow that reports success but adds no block would loop forever.
      const uint32_t before = kv.present_blocks();
      if (grow() && kv.present_blocks() > before) continue;
    }
    if (!may_preempt) return false;
    const std::optional<uint64_t> victim = kv.PreemptionVictim(tenants[s.tenant].name);
    if (!victim || *victim == s.id) return false;
    auto it = slot_of.find(*victim);
    if (it == slot_of.end() || seqs[it->second].state != SeqState::kRunning) return false;
    Preempt(it->second);
  }
}

bool Scheduler::Impl::WithinCap(const SequenceState& s, int64_t total_tokens) const {
  // The KvBlockManager's cap formula: floor(max_fraction x quota base).
  const TenantState& t = tenants[s.tenant];
  const int64_t bt = kv.block_tokens();
  const int64_t more = (total_tokens + bt - 1) / bt - static_cast<int64_t>(s.table.size());
  const double cap = std::floor(t.share.kv_max_fraction * kv.quota_base() + 1e-9);
  return static_cast<double>(kv.TenantUsedBlocks(t.name)) + static_cast<double>(more) <= cap;
}

void Scheduler::Impl::Preempt(uint32_t slot) {
  SequenceState& s = seqs[slot];
  if (s.plan_epoch == epoch) {
    // It had claimed part of this step (the batch is built only after every
    // claim, so it is not in it yet): give the claim back.
    budget += s.step_tokens;
    ++seats;
    s.plan_epoch = 0;
  }
  kv.FreeSequence(s.id);
  s.table = {};
  s.state = SeqState::kWaiting;
  s.recompute = true;
  s.computed = 0;
  // Everything it has becomes the prefill; the final chunk samples its next
  // token, which also replaces the decode of its last sampled token.
  s.prefill_end = static_cast<int32_t>(s.tokens.size());
  s.preempted_epoch = epoch;
  TenantState& t = tenants[s.tenant];
  --t.running;
  t.waiting.push_front(slot);
  ++waiting_count;
  plan.preempted.push_back(s.id);
}

void Scheduler::Impl::Claim(uint32_t slot, int32_t n) {
  SequenceState& s = seqs[slot];
  if (s.prompt_logits && s.computed < s.prefill_end) logit_rows -= n;  // a prefill chunk
  s.plan_epoch = epoch;
  s.step_tokens = n;
  budget -= n;
  --seats;
}

void Scheduler::Impl::AddStep(uint32_t slot, bool prefill) {
  SequenceState& s = seqs[slot];
  const int32_t start = s.computed;
  const int32_t n = s.step_tokens;
  const bool samples = !prefill || start + n == s.prefill_end;

  devices::SequenceStep step;
  step.seq_id = s.id;
  step.tokens = std::span<const int32_t>(s.tokens.data() + start, static_cast<size_t>(n));
  step.start_pos = start;
  step.block_table = s.table;
  step.logits = samples ? devices::LogitsWanted::kLast : devices::LogitsWanted::kNone;
  // Prompt tokens past the first-pass watermark have had no logits yet (a
  // preemption mid-prompt recomputes them).
  const bool all_logits =
      prefill && s.prompt_logits && start + n > s.charged_prompt && start < s.prompt_len;
  if (all_logits) step.logits = devices::LogitsWanted::kAll;
  s.plan_index = static_cast<int32_t>(plan.seqs.size());
  plan.batch.seqs.push_back(step);
  plan.seqs.push_back(PlannedSequence{.seq_id = s.id,
                                      .prefill = prefill,
                                      .samples = samples,
                                      .recompute = prefill && s.recompute,
                                      .cached_tokens = s.cached_tokens,
                                      .all_logits = all_logits});
  plan_slots.push_back(slot);
  if (!prefill) {
    ++plan.decode_tokens;
    return;
  }
  plan.prefill_tokens += n;
  // Prompt tokens are charged once: not when served from the prefix cache
  // (below the chunk's start at first admission), not when recomputed.
  const int32_t lo = std::max(start, s.charged_prompt);
  const int32_t hi = std::min(start + n, s.prompt_len);
  if (hi > lo) {
    TenantState& t = tenants[s.tenant];
    const double w = options.vtc_input_weight * (hi - lo);
    t.counter += w / t.share.weight;
    t.weighted_tokens += w;
    t.prompt_tokens += static_cast<uint64_t>(hi - lo);
    s.charged_prompt = hi;
  }
}

int32_t Scheduler::Impl::PickTenant() const {
  int32_t best = -1;
  for (size_t i = 0; i < tenants.size(); ++i) {
    const TenantState& t = tenants[i];
    if (t.waiting.empty() || t.kv_blocked) continue;
    if (t.share.max_running != 0 && t.running >= t.share.max_running) continue;
    if (best < 0 || t.counter < tenants[best].counter) best = static_cast<int32_t>(i);
  }
  return best;
}

void Scheduler::Impl::CompactRunning() {
  std::erase_if(running, [this](uint32_t slot) { return seqs[slot].state != SeqState::kRunning; });
}

void Scheduler::Impl::PlanStep() {
  ++epoch;
  plan.batch.seqs.clear();
  plan.seqs.clear();
  plan.preempted.clear();
  plan_slots.clear();
  plan.prefill_tokens = 0;
  plan.decode_tokens = 0;
  budget = options.max_batch_tokens;
  seats = options.max_seqs;
  logit_rows = kMaxPromptLogitRows;

  // Running work claims its tokens and KV first; the batch is built only
  // after every claim, so a preemption victim is never taken out of it.
  // 1. One decode token for every running sequence past its prefill.
  for (size_t i = 0; i < running.size(); ++i) {
    const uint32_t slot = running[i];
    SequenceState& s = seqs[slot];
    if (s.state != SeqState::kRunning || s.computed < s.prefill_end) continue;
    if (budget < 1 || seats < 1) break;
    if (!Reserve(slot, static_cast<int64_t>(s.computed) + 1, /*may_preempt=*/true)) {
      Preempt(slot);
      continue;
    }
    Claim(slot, 1);
  }
  // 2. The next chunk of running sequences still in their prefill.
  for (size_t i = 0; i < running.size(); ++i) {
    const uint32_t slot = running[i];
    SequenceState& s = seqs[slot];
    if (s.state != SeqState::kRunning || s.computed >= s.prefill_end) continue;
    if (budget < 1 || seats < 1) break;
    const int32_t n = ChunkFor(s);
    if (n < 1) continue;  // its logits rows are spent this step
    if (!Reserve(slot, static_cast<int64_t>(s.computed) + n, /*may_preempt=*/true)) {
      Preempt(slot);
      continue;
    }
    Claim(slot, n);
  }
  CompactRunning();
  for (const uint32_t slot : running) {
    const SequenceState& s = seqs[slot];
    if (s.plan_epoch == epoch && s.computed >= s.prefill_end) AddStep(slot, /*prefill=*/false);
  }
  for (const uint32_t slot : running) {
    const SequenceState& s = seqs[slot];
    if (s.plan_epoch == epoch && s.computed < s.prefill_end) AddStep(slot, /*prefill=*/true);
  }

  // 3. Admit waiting sequences in VTC order. Admission never preempts: new
  // work waits for blocks rather than evict running work.
  for (TenantState& t : tenants) t.kv_blocked = false;
  const auto max_running = static_cast<size_t>(options.max_seqs);
  while (budget > 0 && seats > 0 && running.size() < max_running) {
    const int32_t ti = PickTenant();
    if (ti < 0) break;
    TenantState& t = tenants[ti];
    const uint32_t slot = t.waiting.front();
    SequenceState& s = seqs[slot];
    if (s.prompt_logits && logit_rows < 1) {
      // This step's prompt-logits rows are spent: its tenant's queue waits.
      t.kv_blocked = true;
      continue;
    }
    if (s.preempted_epoch == epoch) {
      // It just gave its blocks up; its tenant's queue waits behind it.
      t.kv_blocked = true;
      continue;
    }
    // A sequence that wants every prompt token's logits computes them all.
    absl::StatusOr<kv::SeqAlloc> alloc = kv.StartSequence(
        s.id, t.name, t.salt, std::span<const int32_t>(s.tokens.data(), s.prefill_end),
        s.prompt_logits ? kv::PrefixLookup::kSkip : kv::PrefixLookup::kMatch);
    if (!alloc.ok()) {
      t.kv_blocked = true;
      continue;
    }
    s.cached_tokens = alloc->cached_tokens;
    s.computed = alloc->cached_tokens;
    s.table = kv.BlockTable(s.id);
    const int32_t n = ChunkFor(s);
    if (!Reserve(slot, static_cast<int64_t>(s.computed) + n, /*may_preempt=*/false)) {
      kv.FreeSequence(s.id);
      s.computed = 0;
      s.table = {};
      t.kv_blocked = true;  // FIFO per tenant: the others may still fit
      continue;
    }
    t.waiting.pop_front();
    --waiting_count;
    s.state = SeqState::kRunning;
    ++t.running;
    running.push_back(slot);
    Claim(slot, n);
    AddStep(slot, /*prefill=*/true);
  }
}

void Scheduler::Impl::CommitStep(std::span<const SequenceResult> results) {
  const int32_t bt = kv.block_tokens();
  bool removed = false;
  for (size_t i = 0; i < results.size(); ++i) {
    const SequenceResult& r = results[i];
    // Results usually come in plan order; fall back to the id map otherwise.
    uint32_t slot;
    if (i < plan_slots.size() && seqs[plan_slots[i]].id == r.seq_id &&
        seqs[plan_slots[i]].state == SeqState::kRunning) {
      slot = plan_slots[i];
    } else {
      auto it = slot_of.find(r.seq_id);
      if (it == slot_of.end()) continue;
      slot = it->second;
    }
    SequenceState& s = seqs[slot];
    if (s.state != SeqState::kRunning || s.plan_epoch != epoch) continue;
    s.plan_epoch = 0;  // a result counts once
    const PlannedSequence& planned = plan.seqs[s.plan_index];
    const int32_t n = s.step_tokens;
    TenantState& t = tenants[s.tenant];

    const int32_t full_before = s.computed / bt;
    s.computed += n;
    if (planned.samples && r.token.has_value() &&
        s.tokens.size() < static_cast<size_t>(s.max_len)) {
      s.tokens.push_back(*r.token);
      t.counter += options.vtc_output_weight / t.share.weight;
      t.weighted_tokens += options.vtc_output_weight;
      ++t.generated_tokens;
    }
    // The newest token is never in the cache yet: it is the next step's input.
    const auto last = static_cast<int32_t>(s.tokens.size()) - 1;
    if (s.computed > last) s.computed = last;
    // Only computed tokens name cached blocks: a block whose last position is
    // the just-sampled token has no KV for it yet.
    if (s.computed / bt > full_before) {
      kv.CommitFullBlocks(
          s.id, std::span<const int32_t>(s.tokens.data(), static_cast<size_t>(s.computed)));
    }
    // At prompt + max_new_tokens it cannot go on, even if the caller missed it.
    if (r.finished || s.tokens.size() >= static_cast<size_t>(s.max_len)) {
      kv.FreeSequence(s.id);
      --t.running;
      FreeSlot(slot);
      removed = true;
    }
  }
  if (removed) CompactRunning();
}

}  // namespace tokenmill::sched
