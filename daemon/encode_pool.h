// EncodePool: a few worker threads that prepare data requests off the HTTP
// loop thread. Parsing a multi-MiB JSON body, rendering a chat template and
// encoding the prompt take up to hundreds of milliseconds for a large prompt;
// on the loop thread they would stall every other client, /healthz included.
//
// Bounded: at most `max_queued` jobs wait (running ones not counted) and at
// most `max_queued_per_key` of them share a key (the tenant), so one tenant's
// burst cannot take every place. Waiting jobs are taken one key at a time in
// turn (round-robin over keys, FIFO within a key), so another tenant's small
// prompt waits for at most one job per busy tenant, not for a whole queue of
// 4 MiB prompts.
//
// Thread safety: every method is safe from any thread. Jobs run on the
// pool's threads, several at once; a job must not call Stop() (it would wait
// for itself).
//
// Lifetime: Stop() (the destructor calls it) refuses new jobs, calls every
// waiting job with dropped = true on the stopping thread, waits for the
// running ones and joins the threads. Whatever a job references must outlive
// Stop().
#pragma once

#include <cstddef>
#include <deque>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"

namespace tokenmill::daemon {

class EncodePool {
 public:
  // dropped = false: run the job (on a pool thread). dropped = true: the pool
  // stopped before the job ran (on the thread calling Stop()); the job should
  // only answer its client and release what it holds.
  using Job = std::function<void(bool dropped)>;

  struct Options {
    int threads = 1;  // at least 1
    // Waiting jobs in all, and of one key. The node's defaults match its
    // other limits: max_connections (a connection waits for one request at a
    // time, so queued bodies never exceed what connections already hold) and
    // a tenant's default max_queue, so a legitimate burst is not refused.
    size_t max_queued = 1024;
    size_t max_queued_per_key = 256;
    // Added to each thread's nice value (Linux: per thread), so that on a
    // busy CPU the loop and engine threads run before an encoding. 0 = none.
    int nice_increment = 5;
  };

  // The node's default thread count: a quarter of the CPUs it may run on
  // (UsableCpuCount), 1 to 4. Prompt
  // preparation competes with the CPU executor's workers, and a few threads
  // keep the loop free however large the prompts; more only raise the
  // throughput of encoding, not the loop's latency.
  static int DefaultThreads();

  explicit EncodePool(Options options);
  ~EncodePool();  // Stop()s
  EncodePool(const EncodePool&) = delete;
  EncodePool& operator=(const EncodePool&) = delete;

  // Queues `job` under `key`. kResourceExhausted when `key` has
  // max_queued_per_key jobs waiting; kUnavailable when max_queued jobs wait
  // or the pool is stopped. On error the job is neither run nor called.
  absl::Status Submit(std::string_view key, Job job);

  // See the lifetime note above. Idempotent.
  void Stop();

  struct Stats {
    size_t queued = 0;   // waiting
    size_t running = 0;  // on a thread now
  };
  Stats stats() const;

 private:
  void Work();
  // Takes the next job in round-robin order; false when stopping.
  bool Next(Job* job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool HasWorkOrStopping() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  mutable absl::Mutex mu_;
  // Waiting jobs by key; a key with no job waiting has no entry.
  std::map<std::string, std::deque<Job>, std::less<>> queues_ ABSL_GUARDED_BY(mu_);
  std::string last_key_ ABSL_GUARDED_BY(mu_);  // the key served last (round-robin)
  size_t queued_ ABSL_GUARDED_BY(mu_) = 0;
  size_t running_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;  // set in the constructor, joined by Stop()
  absl::Mutex stop_mu_;               // serialises Stop() callers
};

}  // namespace tokenmill::daemon
