// HttpServer on one libuv loop thread.
//
// Hand-written on purpose: no Debian-packaged library serves HTTP/1.1 on a
// libuv loop that we own. civetweb and similar servers own their threads,
// while the daemon needs one loop thread for all sockets, async writes from
// engine threads (via Post) and SSE streams that are cancelled when the
// client disconnects. http-parser does the parsing; this module does the
// connection handling around it (connection.cc), listeners (listener.cc) and
// responses (response.cc).
#include "daemon/http/http_server.h"

#include <pthread.h>
#include <signal.h>
#include <uv.h>

#include <algorithm>
#include <atomic>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "daemon/http/connection.h"
#include "daemon/http/listener.h"
#include "daemon/http/loop_task_queue.h"

namespace tokenmill::http {

std::string_view ToString(Listener::Role role) {
  switch (role) {
    case Listener::Role::kLocal:
      return "local";
    case Listener::Role::kClient:
      return "client";
    case Listener::Role::kControl:
      return "control";
  }
  return "unknown";
}

std::string PeerName(const RequestOrigin& origin) {
  if (!origin.peer.empty()) return origin.peer;
  if (origin.credentials) {
    return absl::StrCat("pid:", origin.credentials->pid, ",uid:", origin.credentials->uid,
                        ",gid:", origin.credentials->gid);
  }
  return "unknown";
}

std::string_view HttpRequest::Header(std::string_view lowercase_name) const {
  for (const auto& [name, value] : headers) {
    if (name == lowercase_name) return value;
  }
  return {};
}

struct HttpServer::Impl {
  enum class Phase { kNew, kRunning, kStopped };

  Impl(HttpServerOptions opts, Handler handler);

  absl::Status Start();
  void Stop();
  void Accept(uv_stream_t* server, size_t listener_index);
  // Past the output budget: drops the connections with the most queued
  // bytes until the server is within it again.
  void ShedOutput();
  void Shutdown();  // loop thread: closes every handle so that uv_run returns
  void CloseLoop();

  HttpServerOptions options;
  ConnectionContext context;
  std::shared_ptr<LoopTaskQueue> tasks = std::make_shared<LoopTaskQueue>();

  absl::Mutex lifecycle_mu;  // serializes Start() and Stop()
  Phase phase = Phase::kNew;
  uv_loop_t loop{};
  bool loop_open = false;
  std::thread thread;
  std::vector<std::unique_ptr<ListenSocket>> listeners;
  std::vector<uint16_t> ports;  // written before the loop thread starts

  // Loop thread only.
  absl::flat_hash_map<Connection*, std::shared_ptr<Connection>> connections;
  std::vector<uint32_t> open_per_listener;  // sized before the loop runs
  std::atomic<size_t> connection_count{0};
};

HttpServer::Impl::Impl(HttpServerOptions opts, Handler handler) : options(std::move(opts)) {
  context.max_header_bytes = options.max_header_bytes;
  context.max_body_bytes = options.max_body_bytes;
  context.max_buffered_bytes = options.max_header_bytes + options.max_body_bytes;
  uint64_t idle_ms = options.idle_timeout.count() > 0 ? options.idle_timeout.count() : 0;
  context.idle_timeout_ms = idle_ms;
  context.linger_ms = idle_ms == 0 ? 2000 : std::min<uint64_t>(idle_ms, 2000);
  context.handler = std::move(handler);
  context.loop = tasks;
  context.max_queued_write_bytes_total = options.max_buffered_output_bytes;
  context.on_output_over_budget = [this] { ShedOutput(); };
  context.on_closed = [this](Connection* connection) {
    --open_per_listener[connection->origin().listener];
    connections.erase(connection);
    connection_count.fetch_sub(1);
  };
  open_per_listener.assign(options.listeners.size(), 0);
}

absl::Status HttpServer::Impl::Start() {
  absl::MutexLock lock(&lifecycle_mu);
  if (phase != Phase::kNew) return absl::FailedPreconditionError("HttpServer already started");
  phase = Phase::kStopped;  // a failed start leaves nothing for Stop() to do
  int rc = uv_loop_init(&loop);
  if (rc != 0) return absl::InternalError(absl::StrCat("uv_loop_init: ", uv_strerror(rc)));
  loop_open = true;
  absl::Status status = tasks->Init(&loop);
  for (size_t i = 0; status.ok() && i < options.listeners.size(); ++i) {
    auto listener = std::make_unique<ListenSocket>(
        &loop, [this, i](uv_stream_t* server) { Accept(server, i); });
    status = listener->Bind(options.listeners[i]);
    ports.push_back(listener->port());
    listeners.push_back(std::move(listener));
  }
  if (!status.ok()) {
    for (auto& listener : listeners) listener->Close();
    tasks->CloseHandle();
    CloseLoop();
    for (auto& listener : listeners) listener->RemoveSocketFile();
    listeners.clear();
    ports.clear();
    return status;
  }
  thread = std::thread([this] {
    // libuv writes with write(2): a peer that vanished would raise SIGPIPE and
    // end the process. The signal goes to the writing thread, so blocking it
    // here turns it into a plain EPIPE without touching process-wide state.
    sigset_t sigpipe;
    sigemptyset(&sigpipe);
    sigaddset(&sigpipe, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &sigpipe, nullptr);
    tasks->SetLoopThread(std::this_thread::get_id());
    uv_run(&loop, UV_RUN_DEFAULT);
    tasks->SetLoopThread(std::thread::id());
  });
  phase = Phase::kRunning;
  return absl::OkStatus();
}

void HttpServer::Impl::Accept(uv_stream_t* server, size_t listener_index) {
  const Listener& spec = options.listeners[listener_index];
  if (open_per_listener[listener_index] >= spec.max_connections) {
    // Accept and close at once: leaving it in the backlog would make the
    // client hang instead of failing fast. Other listeners keep their room.
    auto* rejected = new StreamHandle{};
    if (spec.kind == Listener::Kind::kTcp) {
      uv_tcp_init(server->loop, &rejected->tcp);
    } else {
      uv_pipe_init(server->loop, &rejected->pipe, 0);
    }
    uv_accept(server, &rejected->stream);
    uv_close(&rejected->handle,
             [](uv_handle_t* handle) { delete reinterpret_cast<StreamHandle*>(handle); });
    return;
  }
  auto connection = std::make_shared<Connection>(context);
  connections.emplace(connection.get(), connection);
  ++open_per_listener[listener_index];
  connection_count.fetch_add(1);
  connection->Open(server, spec, listener_index);
}

void HttpServer::Impl::ShedOutput() {
  while (context.queued_write_bytes_total > context.max_queued_write_bytes_total) {
    // The slowest reader is the one with the most bytes it has not read.
    Connection* slowest = nullptr;
    for (const auto& [raw, connection] : connections) {
      if (slowest == nullptr || raw->queued_write_bytes() > slowest->queued_write_bytes()) {
        slowest = raw;
      }
    }
    if (slowest == nullptr || slowest->queued_write_bytes() == 0) break;  // not expected
    slowest->DropSlowReader("server_output_budget");
  }
}

void HttpServer::Impl::Shutdown() {
  for (auto& listener : listeners) listener->Close();
  std::vector<std::shared_ptr<Connection>> open;
  open.reserve(connections.size());
  for (auto& [raw, connection] : connections) open.push_back(connection);
  for (auto& connection : open) connection->Close();
  tasks->CloseHandle();
}

void HttpServer::Impl::CloseLoop() {
  // Close callbacks still pending (a failed Start, or Shutdown's) run here.
  uv_run(&loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&loop) == UV_EBUSY) {
    // Not expected: every handle is closed by Shutdown(). Close stragglers
    // rather than leak the loop.
    uv_walk(
        &loop,
        [](uv_handle_t* handle, void*) {
          if (!uv_is_closing(handle)) uv_close(handle, nullptr);
        },
        nullptr);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
  }
  loop_open = false;
}

void HttpServer::Impl::Stop() {
  if (tasks->OnLoopThread()) {
    // Cannot join ourselves: ask the loop to wind down; ~HttpServer joins.
    tasks->PostLastAndClose([this] { Shutdown(); });
    return;
  }
  absl::MutexLock lock(&lifecycle_mu);
  if (phase != Phase::kRunning) return;
  tasks->PostLastAndClose([this] { Shutdown(); });
  thread.join();
  CloseLoop();
  for (auto& listener : listeners) listener->RemoveSocketFile();
  listeners.clear();
  phase = Phase::kStopped;
}

HttpServer::HttpServer(HttpServerOptions options, Handler handler)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(handler))) {}

HttpServer::~HttpServer() { Stop(); }

absl::Status HttpServer::Start() { return impl_->Start(); }

void HttpServer::Stop() { impl_->Stop(); }

void HttpServer::Post(std::function<void()> fn) { impl_->tasks->Post(std::move(fn)); }

uint16_t HttpServer::tcp_port(size_t listener_index) const {
  // No lock: ports are fixed before Start() returns, and a lock here could
  // deadlock a handler that asks while Stop() joins the loop.
  return listener_index < impl_->ports.size() ? impl_->ports[listener_index] : 0;
}

size_t HttpServer::connection_count() const { return impl_->connection_count.load(); }

uint64_t HttpServer::queued_output_bytes() const {
  return impl_->context.queued_write_bytes_total.load();
}

}  // namespace tokenmill::http
