#include "daemon/http/loop_task_queue.h"

#include <utility>

namespace tokenmill::http {

absl::Status LoopTaskQueue::Init(uv_loop_t* loop) {
  int rc = uv_async_init(loop, &async_, &LoopTaskQueue::OnAsync);
  if (rc != 0) {
    return absl::InternalError(std::string("uv_async_init: ") + uv_strerror(rc));
  }
  async_.data = this;
  handle_open_ = true;
  absl::MutexLock lock(&mu_);
  accepting_ = true;
  return absl::OkStatus();
}

void LoopTaskQueue::Post(std::function<void()> fn) {
  {
    absl::MutexLock lock(&mu_);
    if (accepting_) {
      tasks_.push_back(std::move(fn));
      // Sent under the lock so that CloseHandle() (which needs accepting_ to
      // be false first) can never race with a send on a closing handle.
      uv_async_send(&async_);
      return;
    }
  }
  // Dropped outside the lock: its captures (a ResponseWriter, say) may post
  // from their destructors.
  fn = nullptr;
}

void LoopTaskQueue::RunOnLoop(std::function<void()> fn) {
  if (OnLoopThread()) {
    fn();
  } else {
    Post(std::move(fn));
  }
}

bool LoopTaskQueue::PostLastAndClose(std::function<void()> last) {
  absl::MutexLock lock(&mu_);
  if (!accepting_) return false;
  tasks_.push_back(std::move(last));
  accepting_ = false;
  uv_async_send(&async_);
  return true;
}

void LoopTaskQueue::CloseHandle() {
  {
    absl::MutexLock lock(&mu_);
    accepting_ = false;
  }
  if (handle_open_) {
    handle_open_ = false;
    uv_close(reinterpret_cast<uv_handle_t*>(&async_), nullptr);
  }
}

void LoopTaskQueue::OnAsync(uv_async_t* handle) {
  static_cast<LoopTaskQueue*>(handle->data)->Drain();
}

void LoopTaskQueue::Drain() {
  std::deque<std::function<void()>> batch;
  {
    absl::MutexLock lock(&mu_);
    batch.swap(tasks_);
  }
  while (!batch.empty()) {
    std::function<void()> fn = std::move(batch.front());
    batch.pop_front();
    fn();
  }
}

}  // namespace tokenmill::http
