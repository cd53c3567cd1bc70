// StepCommitter: the metering writer thread of durability = "power". Engine
// threads hand it their step's record and wait on their commit ticket; the
// one writer thread takes every step queued meanwhile, from all instances,
// and commits them in one synced write (MeterSink::RecordSteps), so a power
// cut safe store costs one fsync per group rather than one per step, and no
// engine thread runs an fsync of its own. A step's tokens are still sent only
// after its commit: Commit returns once the write holding it is durable.
#pragma once

#include <cstdint>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "storage/meter_sink.h"

namespace tokenmill::metering {

class StepCommitter {
 public:
  // Starts the writer thread; `sink` outlives it.
  explicit StepCommitter(storage::MeterSink& sink);
  // Commits what is queued, then stops the thread.
  ~StepCommitter();
  StepCommitter(const StepCommitter&) = delete;
  StepCommitter& operator=(const StepCommitter&) = delete;

  // Queues `step` and blocks until the group commit holding it has been
  // written; returns the step's outcome (as MeterSink::RecordStep). `step` is
  // read by the writer thread, not copied: the caller keeps it unchanged
  // until Commit returns. Any thread; allocates nothing once the queue has
  // held as many steps as there are committing threads.
  absl::Status Commit(const storage::StepRecord& step);

  // Group commits written so far, and steps queued and not yet taken by the
  // writer (for tests and benchmarks).
  uint64_t group_commits() const;
  size_t queued() const;

 private:
  struct Ticket {
    const storage::StepRecord* step = nullptr;
    absl::Status status;
    bool done = false;
  };
  void Run();

  storage::MeterSink& sink_;
  mutable absl::Mutex mu_;
  std::vector<Ticket*> queue_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t group_commits_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread thread_;
};

}  // namespace tokenmill::metering
