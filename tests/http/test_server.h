// Test fixture: an HttpServer on a unix socket in a temp dir plus a TCP port
// on 127.0.0.1, with a small set of routes that exercise the writer API.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "daemon/http/http_server.h"
#include "tests/support/http_client.h"

namespace tokenmill::http::testing {

using ::tokenmill::testing::CurlRequest;
using ::tokenmill::testing::CurlResult;
using ::tokenmill::testing::RawClient;
using ::tokenmill::testing::RawResponse;

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// How long a test waits for a reply or a close before it fails.
inline constexpr auto kTimeout = 5s;

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/tokenmill-http-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
    socket_path_ = dir_ + "/api.sock";
  }

  void TearDown() override {
    // Stop first: no handler can then add workers; their late Post()s drop.
    if (server_) server_->Stop();
    for (std::thread& t : workers_) t.join();
    workers_.clear();
    {
      absl::MutexLock lock(&mu_);
      held_.clear();
    }
    server_.reset();
    std::filesystem::remove_all(dir_);
  }

  HttpServerOptions DefaultOptions() {
    HttpServerOptions options;
    options.listeners.push_back({Listener::Kind::kUnix, socket_path_, 0660});
    options.listeners.push_back({Listener::Kind::kTcp, "127.0.0.1:0", 0, Listener::Role::kClient});
    return options;
  }

  // Starts the server with the routes below; `tweak` adjusts the options.
  void StartServer(std::function<void(HttpServerOptions&)> tweak = nullptr) {
    HttpServerOptions options = DefaultOptions();
    if (tweak) tweak(options);
    server_ = std::make_unique<HttpServer>(options,
                                           [this](HttpRequest request, ResponseWriterPtr response) {
                                             Route(std::move(request), std::move(response));
                                           });
    absl::Status status = server_->Start();
    ASSERT_TRUE(status.ok()) << status;
    port_ = server_->tcp_port(1);
    ASSERT_NE(port_, 0);
  }

  void Route(HttpRequest request, ResponseWriterPtr response) {
    const std::string& path = request.path;
    if (path == "/echo") {
      std::vector<std::pair<std::string, std::string>> extra;
      if (!request.Header("x-test").empty()) {
        extra.emplace_back("X-Echo", std::string(request.Header("x-test")));
      }
      response->Send(200, "text/plain",
                     request.method + " " + path + " " + request.query + "|" + request.body, extra);
    } else if (path == "/origin") {
      // Where the server says the request came from.
      const RequestOrigin& o = request.origin;
      std::string body = "listener=" + std::to_string(o.listener) +
                         " role=" + std::string(ToString(o.role)) + " peer=" + o.peer;
      if (o.credentials) {
        body += " pid=" + std::to_string(o.credentials->pid) +
                " uid=" + std::to_string(o.credentials->uid) +
                " gid=" + std::to_string(o.credentials->gid);
      }
      response->Send(200, "text/plain", body);
    } else if (path == "/bulk") {
      // QUERY MiB in 1 MiB writes, then the end; stops early once cut off.
      response->Start(200, "application/octet-stream");
      std::string mib(1 << 20, 'b');
      const int wanted = std::atoi(request.query.c_str());
      for (int i = 0; i < wanted && !response->closed(); ++i) response->Write(mib);
      response->End();
      absl::MutexLock lock(&mu_);
      ++bulk_done_;
    } else if (path == "/later") {
      // Answered from another thread, which hands the work back with Post().
      workers_.emplace_back([this, response, query = request.query] {
        std::this_thread::sleep_for(30ms);
        server_->Post([response, query] { response->Send(200, "text/plain", "later " + query); });
      });
    } else if (path == "/stream") {
      response->Start(200, "text/event-stream", {{"Cache-Control", "no-cache"}});
      response->Write("data: 1\n\n");
      response->Write("");  // skipped
      response->Write("data: 2\n\n");
      response->Write("data: 3\n\n");
      response->End();
    } else if (path == "/hold" || path == "/stream-hold") {
      if (path == "/stream-hold") {
        response->Start(200, "text/event-stream");
        response->Write("data: first\n\n");
      }
      response->OnClose([this] {
        absl::MutexLock lock(&mu_);
        ++on_close_calls_;
      });
      absl::MutexLock lock(&mu_);
      held_.push_back(response);
    } else if (path == "/drop") {
      // Returns without answering: the server must answer 500.
    } else if (path == "/throw") {
      throw std::runtime_error("handler failed");
    } else if (path == "/flood") {
      // 40 MiB at a peer that reads nothing: cut off at the write queue bound.
      response->Start(200, "application/octet-stream");
      response->OnClose([this] {
        absl::MutexLock lock(&mu_);
        ++on_close_calls_;
      });
      std::string mib(1 << 20, 'x');
      int written = 0;
      while (!response->closed() && written < 40) {
        response->Write(mib);
        ++written;
      }
      absl::MutexLock lock(&mu_);
      flood_done_ = true;
      flood_chunks_ = written;
      flood_closed_ = response->closed();
    } else {
      response->Send(404, "application/json", R"({"error":{"type":"not_found"}})");
    }
  }

  // Waits until `count` writers are held.
  bool WaitHeld(size_t count, absl::Duration timeout = absl::Seconds(5)) {
    absl::MutexLock lock(&mu_);
    wanted_held_ = count;
    return mu_.AwaitWithTimeout(absl::Condition(this, &ServerTest::HeldReached), timeout);
  }

  // Waits until OnClose callbacks ran `count` times in all.
  bool WaitOnCloseCalls(int count, absl::Duration timeout = absl::Seconds(5)) {
    absl::MutexLock lock(&mu_);
    wanted_on_close_ = count;
    return mu_.AwaitWithTimeout(absl::Condition(this, &ServerTest::OnCloseReached), timeout);
  }

  // Waits until done() holds; done runs with mu_ held.
  bool WaitUntil(std::function<bool()> done, absl::Duration timeout = absl::Seconds(5)) {
    absl::MutexLock lock(&mu_);
    return mu_.AwaitWithTimeout(absl::Condition(&done), timeout);
  }

  // Runs fn on the loop thread and waits for it.
  void RunOnLoop(std::function<void()> fn) {
    absl::Notification done;
    server_->Post([&] {
      fn();
      done.Notify();
    });
    ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(5)));
  }

  std::string dir_;
  std::string socket_path_;
  uint16_t port_ = 0;
  std::unique_ptr<HttpServer> server_;
  std::vector<std::thread> workers_;  // loop thread appends; joined in TearDown

  absl::Mutex mu_;
  std::vector<ResponseWriterPtr> held_ ABSL_GUARDED_BY(mu_);
  int on_close_calls_ ABSL_GUARDED_BY(mu_) = 0;
  int wanted_on_close_ ABSL_GUARDED_BY(mu_) = 0;
  int flood_chunks_ ABSL_GUARDED_BY(mu_) = 0;
  bool flood_closed_ ABSL_GUARDED_BY(mu_) = false;
  bool flood_done_ ABSL_GUARDED_BY(mu_) = false;
  int bulk_done_ ABSL_GUARDED_BY(mu_) = 0;

 private:
  bool OnCloseReached() const ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    return on_close_calls_ >= wanted_on_close_;
  }
  bool HeldReached() const ABSL_SHARED_LOCKS_REQUIRED(mu_) { return held_.size() >= wanted_held_; }
  size_t wanted_held_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace tokenmill::http::testing
