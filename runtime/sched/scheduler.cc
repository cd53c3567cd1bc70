// Scheduler: sequences, tenants and queries. Planning and committing steps
// are in step_planner.cc.
#include "runtime/sched/scheduler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "runtime/sched/scheduler_state.h"

namespace tokenmill::sched {

Scheduler::Impl::Impl(SchedulerOptions o, kv::KvBlockManager& k, KvGrowFn g)
    : options(o), kv(k), grow(std::move(g)) {
  // The constructor cannot fail; out-of-range budgets are clamped.
  options.max_batch_tokens = std::max(options.max_batch_tokens, 1);
  options.max_seqs = std::max(options.max_seqs, 1);
  options.context = std::max(options.context, 2);
  plan.batch.seqs.reserve(options.max_seqs);
  plan.seqs.reserve(options.max_seqs);
  plan_slots.reserve(options.max_seqs);
  running.reserve(options.max_seqs);
}

int32_t Scheduler::Impl::TenantIndex(const std::string& name) {
  auto [it, inserted] = tenant_index.try_emplace(name, static_cast<int32_t>(tenants.size()));
  if (inserted) {
    TenantState t;
    t.name = name;
    t.salt = name;
    tenants.push_back(std::move(t));
  }
  return it->second;
}

uint32_t Scheduler::Impl::NewSlot() {
  if (!free_slots.empty()) {
    const uint32_t slot = free_slots.back();
    free_slots.pop_back();
    return slot;
  }
  seqs.emplace_back();
  return static_cast<uint32_t>(seqs.size() - 1);
}

void Scheduler::Impl::FreeSlot(uint32_t slot) {
  SequenceState& s = seqs[slot];
  slot_of.erase(s.id);
  s.state = SeqState::kFree;
  s.tokens.clear();  // keeps the capacity for the next sequence
  s.table = {};
  s.plan_epoch = 0;
  free_slots.push_back(slot);
}

SequenceState* Scheduler::Impl::Find(uint64_t seq_id) {
  auto it = slot_of.find(seq_id);
  return it == slot_of.end() ? nullptr : &seqs[it->second];
}

const SequenceState* Scheduler::Impl::Find(uint64_t seq_id) const {
  auto it = slot_of.find(seq_id);
  return it == slot_of.end() ? nullptr : &seqs[it->second];
}

Scheduler::Scheduler(SchedulerOptions options, kv::KvBlockManager& kv, KvGrowFn grow)
    : impl_(std::make_unique<Impl>(options, kv, std::move(grow))) {}

Scheduler::~Scheduler() = default;

absl::Status Scheduler::SetTenant(const std::string& tenant, const TenantShare& share) {
  if (!(share.weight > 0.0) || !std::isfinite(share.weight)) {
    return absl::InvalidArgumentError(
        absl::StrCat("weight of tenant ", tenant, " must be a positive number"));
  }
  if (absl::Status s =
          impl_->kv.SetTenantQuota(tenant, share.kv_reserved_blocks, share.kv_max_fraction);
      !s.ok()) {
    return s;
  }
  TenantState& t = impl_->tenants[impl_->TenantIndex(tenant)];
  t.share = share;
  t.salt = share.cache_salt.empty() ? tenant : share.cache_salt;
  return absl::OkStatus();
}

absl::Status Scheduler::Add(SequenceSpec spec) {
  Impl& m = *impl_;
  if (spec.prompt.empty()) return absl::InvalidArgumentError("empty prompt");
  if (spec.max_new_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_new_tokens must be >= 1, got ", spec.max_new_tokens));
  }
  const int64_t total = static_cast<int64_t>(spec.prompt.size()) + spec.max_new_tokens;
  if (total > m.options.context) {
    return absl::InvalidArgumentError(
        absl::StrCat("prompt (", spec.prompt.size(), " tokens) + max_new_tokens (",
                     spec.max_new_tokens, ") exceed the context of ", m.options.context));
  }
  if (m.slot_of.contains(spec.seq_id)) {
    return absl::AlreadyExistsError(absl::StrCat("sequence ", spec.seq_id, " is live"));
  }

  const int32_t t = m.TenantIndex(spec.tenant);
  TenantState& tenant = m.tenants[t];
  if (!tenant.backlogged()) {
    // VTC lift: a tenant that was idle starts from the lowest counter of the
    // backlogged ones, so idling never banks credit for a later burst.
    double lowest = std::numeric_limits<double>::infinity();
    for (const TenantState& o : m.tenants) {
      if (o.backlogged()) lowest = std::min(lowest, o.counter);
    }
    if (std::isfinite(lowest)) tenant.counter = std::max(tenant.counter, lowest);
  }

  const uint32_t slot = m.NewSlot();
  SequenceState& s = m.seqs[slot];
  s.id = spec.seq_id;
  s.tenant = t;
  s.state = SeqState::kWaiting;
  s.recompute = false;
  s.tokens.reserve(static_cast<size_t>(total));
  s.tokens.assign(spec.prompt.begin(), spec.prompt.end());
  s.prompt_len = static_cast<int32_t>(spec.prompt.size());
  s.max_len = static_cast<int32_t>(total);
  s.computed = 0;
  s.prefill_end = s.prompt_len;
  s.charged_prompt = 0;
  s.cached_tokens = 0;
  s.prompt_logits = spec.prompt_logits;
  s.table = {};
  s.plan_epoch = 0;
  s.plan_index = -1;
  m.slot_of.emplace(spec.seq_id, slot);
  tenant.waiting.push_back(slot);
  ++m.waiting_count;
  return absl::OkStatus();
}

const StepPlan& Scheduler::Plan() {
  impl_->PlanStep();
  return impl_->plan;
}

void Scheduler::Commit(std::span<const SequenceResult> results) { impl_->CommitStep(results); }

void Scheduler::Remove(uint64_t seq_id) {
  Impl& m = *impl_;
  auto it = m.slot_of.find(seq_id);
  if (it == m.slot_of.end()) return;
  const uint32_t slot = it->second;
  SequenceState& s = m.seqs[slot];
  TenantState& t = m.tenants[s.tenant];
  if (s.state == SeqState::kRunning) {
    m.kv.FreeSequence(seq_id);
    --t.running;
    std::erase(m.running, slot);
  } else if (s.state == SeqState::kWaiting) {
    auto pos = std::find(t.waiting.begin(), t.waiting.end(), slot);
    if (pos != t.waiting.end()) {
      t.waiting.erase(pos);
      --m.waiting_count;
    }
  }
  m.FreeSlot(slot);
}

std::span<const int32_t> Scheduler::Tokens(uint64_t seq_id) const {
  const SequenceState* s = impl_->Find(seq_id);
  if (s == nullptr) return {};
  return s->tokens;
}

bool Scheduler::HasWork() const { return !impl_->running.empty() || impl_->waiting_count > 0; }

size_t Scheduler::running() const { return impl_->running.size(); }

size_t Scheduler::waiting() const { return impl_->waiting_count; }

TenantService Scheduler::Service(const std::string& tenant) const {
  TenantService out;
  auto it = impl_->tenant_index.find(tenant);
  if (it == impl_->tenant_index.end()) return out;
  const TenantState& t = impl_->tenants[it->second];
  out.counter = t.counter;
  out.weighted_tokens = t.weighted_tokens;
  out.prompt_tokens = t.prompt_tokens;
  out.generated_tokens = t.generated_tokens;
  out.running = t.running;
  out.waiting = static_cast<uint32_t>(t.waiting.size());
  return out;
}

std::vector<std::string> Scheduler::Tenants() const {
  std::vector<std::string> out;
  out.reserve(impl_->tenants.size());
  for (const TenantState& t : impl_->tenants) out.push_back(t.name);
  return out;
}

}  // namespace tokenmill::sched
