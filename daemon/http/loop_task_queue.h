// LoopTaskQueue: hands work from any thread to the HTTP server's loop thread
// through a uv_async_t. Shared (std::shared_ptr) by the server and by every
// ResponseWriter, so a writer that outlives the server can still be dropped
// safely: after Close() posted work is discarded instead of run.
#pragma once

#include <uv.h>

#include <atomic>
#include <deque>
#include <functional>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"

namespace tokenmill::http {

class LoopTaskQueue {
 public:
  LoopTaskQueue() = default;
  LoopTaskQueue(const LoopTaskQueue&) = delete;
  LoopTaskQueue& operator=(const LoopTaskQueue&) = delete;

  // Creates the async handle on `loop`. Call once, before the loop runs.
  absl::Status Init(uv_loop_t* loop);
  // Marks the calling thread as the loop thread (or clears it with
  // std::thread::id()); RunOnLoop() runs inline there.
  void SetLoopThread(std::thread::id id) { loop_thread_.store(id); }
  bool OnLoopThread() const { return loop_thread_.load() == std::this_thread::get_id(); }

  // Queues fn for the loop thread. Any thread. Dropped once closed.
  void Post(std::function<void()> fn);
  // Runs fn now when called on the loop thread, otherwise Post()s it.
  void RunOnLoop(std::function<void()> fn);
  // Queues `last` as the final task and refuses every later Post(). Returns
  // false when already closed. Any thread.
  bool PostLastAndClose(std::function<void()> last);
  // Closes the async handle (loop thread, or before the loop runs). The
  // handle lives inside this object, which outlives the loop.
  void CloseHandle();

 private:
  static void OnAsync(uv_async_t* handle);
  void Drain();

  absl::Mutex mu_;
  std::deque<std::function<void()>> tasks_ ABSL_GUARDED_BY(mu_);
  bool accepting_ ABSL_GUARDED_BY(mu_) = false;
  bool handle_open_ = false;  // loop thread only
  uv_async_t async_{};
  std::atomic<std::thread::id> loop_thread_{};
};

}  // namespace tokenmill::http
