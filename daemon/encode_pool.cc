#include "daemon/encode_pool.h"

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <utility>

#include "absl/strings/str_cat.h"
#include "devices/cpu/cpu_info.h"

namespace tokenmill::daemon {

int EncodePool::DefaultThreads() {
  const int cores = devices::UsableCpuCount();
  return std::clamp(cores / 4, 1, 4);
}

EncodePool::EncodePool(Options options) : options_(options) {
  const int threads = std::max(1, options_.threads);
  threads_.reserve(static_cast<size_t>(threads));
  for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { Work(); });
}

EncodePool::~EncodePool() { Stop(); }

absl::Status EncodePool::Submit(std::string_view key, Job job) {
  absl::MutexLock lock(&mu_);
  if (stopping_) return absl::UnavailableError("the node is stopping");
  if (queued_ >= options_.max_queued) {
    return absl::UnavailableError(absl::StrCat(
        "the node is busy: ", queued_, " requests are waiting for their prompt to be encoded"));
  }
  auto it = queues_.find(key);
  if (it != queues_.end() && it->second.size() >= options_.max_queued_per_key) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "'", std::string(key), "' has ", it->second.size(),
        " requests waiting for their prompt to be encoded, the most one tenant may have"));
  }
  if (it == queues_.end()) it = queues_.emplace(std::string(key), std::deque<Job>()).first;
  it->second.push_back(std::move(job));
  ++queued_;
  return absl::OkStatus();
}

bool EncodePool::Next(Job* job) {
  if (stopping_ || queues_.empty()) return false;
  // The first key after the one served last, wrapping around.
  auto it = queues_.upper_bound(last_key_);
  if (it == queues_.end()) it = queues_.begin();
  *job = std::move(it->second.front());
  it->second.pop_front();
  last_key_ = it->first;
  if (it->second.empty()) queues_.erase(it);
  --queued_;
  return true;
}

bool EncodePool::HasWorkOrStopping() const { return stopping_ || queued_ > 0; }

void EncodePool::Work() {
  if (options_.nice_increment > 0) {
    // Best effort: a thread that cannot lower its priority still works.
    const id_t tid = static_cast<id_t>(syscall(SYS_gettid));
    errno = 0;
    const int nice = getpriority(PRIO_PROCESS, tid);
    if (errno == 0) setpriority(PRIO_PROCESS, tid, std::min(19, nice + options_.nice_increment));
  }
  for (;;) {
    Job job;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(this, &EncodePool::HasWorkOrStopping));
      if (!Next(&job)) return;  // stopping
      ++running_;
    }
    job(/*dropped=*/false);
    job = nullptr;  // release what it holds before the pool counts it done
    absl::MutexLock lock(&mu_);
    --running_;
  }
}

void EncodePool::Stop() {
  absl::MutexLock stop_lock(&stop_mu_);
  std::vector<Job> dropped;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_ && threads_.empty()) return;
    stopping_ = true;
    for (auto& [key, jobs] : queues_) {
      for (Job& job : jobs) dropped.push_back(std::move(job));
    }
    queues_.clear();
    queued_ = 0;
  }
  for (Job& job : dropped) job(/*dropped=*/true);
  dropped.clear();
  for (std::thread& thread : threads_) thread.join();
  threads_.clear();
}

EncodePool::Stats EncodePool::stats() const {
  absl::MutexLock lock(&mu_);
  return {queued_, running_};
}

}  // namespace tokenmill::daemon
