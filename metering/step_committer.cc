#include "metering/step_committer.h"

#include <utility>

namespace tokenmill::metering {

StepCommitter::StepCommitter(storage::MeterSink& sink) : sink_(sink) {
  queue_.reserve(64);
  thread_ = std::thread([this] { Run(); });
}

StepCommitter::~StepCommitter() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  thread_.join();
}

absl::Status StepCommitter::Commit(const storage::StepRecord& step) {
  Ticket ticket;
  ticket.step = &step;
  absl::MutexLock lock(&mu_);
  queue_.push_back(&ticket);
  mu_.Await(absl::Condition(&ticket.done));
  return std::move(ticket.status);
}

uint64_t StepCommitter::group_commits() const {
  absl::MutexLock lock(&mu_);
  return group_commits_;
}

size_t StepCommitter::queued() const {
  absl::MutexLock lock(&mu_);
  return queue_.size();
}

void StepCommitter::Run() {
  std::vector<Ticket*> batch;
  std::vector<const storage::StepRecord*> steps;
  std::vector<absl::Status> results;
  batch.reserve(64);
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_ || !queue_.empty(); };
      mu_.Await(absl::Condition(&ready));
      if (queue_.empty()) return;  // stopping, nothing left
      batch.swap(queue_);
    }
    steps.clear();
    for (const Ticket* t : batch) steps.push_back(t->step);
    results.assign(batch.size(), absl::OkStatus());
    sink_.RecordSteps(steps, results);
    {
      absl::MutexLock lock(&mu_);
      ++group_commits_;
      for (size_t i = 0; i < batch.size(); ++i) {
        batch[i]->status = std::move(results[i]);
        batch[i]->done = true;
      }
    }
    batch.clear();
  }
}

}  // namespace tokenmill::metering
