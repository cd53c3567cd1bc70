// HttpServer: requests, keep-alive, pipelining, later answers, streaming.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>

#include "spdlog/sinks/ringbuffer_sink.h"
#include "spdlog/spdlog.h"

#include "tests/http/test_server.h"

namespace tokenmill::http::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

TEST_F(ServerTest, GetAndPostEchoOverUnixSocket) {
  StartServer();
  CurlResult get =
      CurlRequest("http://localhost/echo?a=1&b=%20", socket_path_, "GET", "", {"X-Test: hello"});
  ASSERT_EQ(get.code, 0);
  EXPECT_EQ(get.status, 200);
  EXPECT_EQ(get.body, "GET /echo a=1&b=%20|");  // the query stays undecoded
  EXPECT_THAT(get.headers, HasSubstr("X-Echo: hello"));

  // Over 1 KiB curl sends Expect: 100-continue and waits up to 1 s for it.
  std::string body(64 << 10, 'p');
  auto start = std::chrono::steady_clock::now();
  CurlResult post = CurlRequest("http://localhost/echo", socket_path_, "POST", body);
  auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_EQ(post.code, 0);
  EXPECT_EQ(post.status, 200);
  EXPECT_EQ(post.body, "POST /echo |" + body);
  EXPECT_LT(elapsed, 900ms) << "100 Continue was not sent";
}

TEST_F(ServerTest, GetAndPostEchoOverTcp) {
  StartServer();
  std::string base = "http://127.0.0.1:" + std::to_string(port_);
  CurlResult get = CurlRequest(base + "/echo", "");
  ASSERT_EQ(get.code, 0);
  EXPECT_EQ(get.status, 200);
  EXPECT_EQ(get.body, "GET /echo |");
  CurlResult post = CurlRequest(base + "/echo?x", "", "POST", "payload");
  EXPECT_EQ(post.body, "POST /echo x|payload");
  CurlResult missing = CurlRequest(base + "/nope", "");
  EXPECT_EQ(missing.status, 404);
}

TEST_F(ServerTest, KeepAliveServesTwoRequestsOnOneConnection) {
  StartServer();
  auto client = RawClient::ConnectTcp(port_);
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(client->Send("GET /echo?n=1 HTTP/1.1\r\nHost: x\r\n\r\n"));
  auto first = client->ReadResponse(kTimeout);
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->body, "GET /echo n=1|");
  EXPECT_EQ(first->Header("connection"), "keep-alive");
  ASSERT_TRUE(client->Send("POST /echo?n=2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"));
  auto second = client->ReadResponse(kTimeout);
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->body, "POST /echo n=2|abc");
  EXPECT_EQ(server_->connection_count(), 1u);
}

TEST_F(ServerTest, PipelinedRequestsAreAnsweredInOrder) {
  StartServer();
  auto client = RawClient::ConnectUnix(socket_path_);
  ASSERT_NE(client, nullptr);
  // The first is answered later from another thread; the second must wait.
  ASSERT_TRUE(
      client->Send("GET /later?id=1 HTTP/1.1\r\nHost: x\r\n\r\n"
                   "POST /echo?id=2 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
                   "GET /echo?id=3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
  auto first = client->ReadResponse(kTimeout);
  auto second = client->ReadResponse(kTimeout);
  auto third = client->ReadResponse(kTimeout);
  ASSERT_TRUE(first && second && third);
  EXPECT_EQ(first->body, "later id=1");
  EXPECT_EQ(second->body, "POST /echo id=2|hi");
  EXPECT_EQ(third->body, "GET /echo id=3|");
  EXPECT_EQ(third->Header("connection"), "close");
  EXPECT_TRUE(client->WaitClosed(kTimeout));
}

TEST_F(ServerTest, HandlerAnswersLaterThroughPost) {
  StartServer();
  CurlResult result = CurlRequest("http://localhost/later?q=7", socket_path_);
  ASSERT_EQ(result.code, 0);
  EXPECT_EQ(result.status, 200);
  EXPECT_EQ(result.body, "later q=7");
}

TEST_F(ServerTest, StreamingResponseIsChunked) {
  StartServer();
  CurlResult result = CurlRequest("http://localhost/stream", socket_path_);
  ASSERT_EQ(result.code, 0);
  EXPECT_EQ(result.status, 200);
  EXPECT_EQ(result.body, "data: 1\n\ndata: 2\n\ndata: 3\n\n");
  EXPECT_THAT(result.headers, HasSubstr("Transfer-Encoding: chunked"));
  EXPECT_THAT(result.headers, HasSubstr("Content-Type: text/event-stream"));
  EXPECT_THAT(result.headers, HasSubstr("Cache-Control: no-cache"));

  // The connection stays usable after the terminating chunk.
  auto client = RawClient::ConnectTcp(port_);
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(client->Send("GET /stream HTTP/1.1\r\n\r\nGET /echo HTTP/1.1\r\n\r\n"));
  auto streamed = client->ReadResponse(kTimeout);
  auto echoed = client->ReadResponse(kTimeout);
  ASSERT_TRUE(streamed && echoed);
  EXPECT_EQ(streamed->body, "data: 1\n\ndata: 2\n\ndata: 3\n\n");
  EXPECT_EQ(echoed->body, "GET /echo |");
}

TEST_F(ServerTest, StreamingToHttp10PeerIsUnchunkedAndClosed) {
  StartServer();
  auto client = RawClient::ConnectTcp(port_);
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(client->Send("GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
  std::string raw = client->ReadUntilClose(kTimeout);
  EXPECT_THAT(raw, StartsWith("HTTP/1.1 200 OK\r\n"));
  EXPECT_THAT(raw, HasSubstr("Connection: close\r\n"));
  EXPECT_THAT(raw, ::testing::Not(HasSubstr("Transfer-Encoding")));
  EXPECT_THAT(raw, ::testing::EndsWith("\r\n\r\ndata: 1\n\ndata: 2\n\ndata: 3\n\n"));
}

TEST_F(ServerTest, Http10KeepsAliveOnlyWhenAsked) {
  StartServer();
  auto client = RawClient::ConnectTcp(port_);
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(client->Send("GET /echo HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
  auto first = client->ReadResponse(kTimeout);
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->Header("connection"), "keep-alive");
  ASSERT_TRUE(client->Send("GET /echo?again HTTP/1.0\r\n\r\n"));
  auto second = client->ReadResponse(kTimeout);
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->body, "GET /echo again|");
  EXPECT_EQ(second->Header("connection"), "close");
  EXPECT_TRUE(client->WaitClosed(kTimeout));
}

TEST_F(ServerTest, HeadSendsHeadersOnly) {
  StartServer();
  auto client = RawClient::ConnectTcp(port_);
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(client->Send("HEAD /echo HTTP/1.1\r\n\r\n"));
  auto head = client->ReadResponse(kTimeout, /*head=*/true);
  ASSERT_TRUE(head.has_value());
  EXPECT_EQ(head->status, 200);
  EXPECT_EQ(head->Header("content-length"), "12");  // "HEAD /echo |"
  // No body bytes may precede the next response.
  ASSERT_TRUE(client->Send("GET /echo HTTP/1.1\r\n\r\n"));
  auto next = client->ReadResponse(kTimeout);
  ASSERT_TRUE(next.has_value());
  EXPECT_EQ(next->status, 200);
  EXPECT_EQ(next->body, "GET /echo |");
}

TEST_F(ServerTest, DroppedOrThrowingHandlerGets500) {
  StartServer();
  auto client = RawClient::ConnectTcp(port_);
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(
      client->Send("GET /drop HTTP/1.1\r\n\r\nGET /throw HTTP/1.1\r\n\r\n"
                   "GET /echo HTTP/1.1\r\n\r\n"));
  auto dropped = client->ReadResponse(kTimeout);
  auto thrown = client->ReadResponse(kTimeout);
  auto echoed = client->ReadResponse(kTimeout);
  ASSERT_TRUE(dropped && thrown && echoed);
  EXPECT_EQ(dropped->status, 500);
  EXPECT_EQ(dropped->Header("content-type"), "application/json");
  EXPECT_THAT(dropped->body, HasSubstr(R"({"error":{"type":"internal_error")"));
  EXPECT_EQ(thrown->status, 500);
  EXPECT_THAT(thrown->body, HasSubstr("handler failed"));
  EXPECT_EQ(echoed->status, 200);
}

TEST_F(ServerTest, OnCloseFiresWhenClientLeavesMidStream) {
  StartServer();
  auto client = RawClient::ConnectUnix(socket_path_);
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(client->Send("GET /stream-hold HTTP/1.1\r\n\r\n"));
  ASSERT_TRUE(client->ReadUntil("data: first", kTimeout));
  ASSERT_TRUE(WaitHeld(1));
  client->Close();
  ASSERT_TRUE(WaitOnCloseCalls(1));

  ResponseWriterPtr writer;
  {
    absl::MutexLock lock(&mu_);
    writer = held_[0];
  }
  bool closed = false;
  RunOnLoop([&] {
    writer->Write("data: late\n\n");  // harmless no-ops now
    writer->End();
    closed = writer->closed();
  });
  EXPECT_TRUE(closed);
  absl::MutexLock lock(&mu_);
  EXPECT_EQ(on_close_calls_, 1);
}

TEST_F(ServerTest, PeerThatDoesNotReadIsCutOff) {
  StartServer();
  auto client = RawClient::ConnectUnix(socket_path_);
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(client->Send("GET /flood HTTP/1.1\r\n\r\n"));
  ASSERT_TRUE(WaitUntil([this]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return flood_done_; }));
  ASSERT_TRUE(WaitOnCloseCalls(1));
  absl::MutexLock lock(&mu_);
  EXPECT_TRUE(flood_closed_);
  EXPECT_LT(flood_chunks_, 40);
}

// Issue 11: each connection may queue 16 MiB for a peer that does not read,
// so many such peers could hold gigabytes. The server bounds their sum and
// drops the connection with the most queued, saying so in the log.
TEST_F(ServerTest, ServerOutputBudgetDropsTheSlowestReader) {
  auto log = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(32);
  spdlog::default_logger()->sinks().push_back(log);
  StartServer([](HttpServerOptions& o) { o.max_buffered_output_bytes = 8 << 20; });
  auto done = [this](int n) {
    return WaitUntil([this, n]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return bulk_done_ >= n; });
  };
  // Three peers that read nothing: 6 MiB, then 1 MiB, are queued in full.
  // Unix sockets: their kernel buffers hold a few hundred KiB, where
  // loopback TCP may take megabytes before anything queues.
  auto big = RawClient::ConnectUnix(socket_path_);
  auto small = RawClient::ConnectUnix(socket_path_);
  auto late = RawClient::ConnectUnix(socket_path_);
  ASSERT_TRUE(big && small && late);
  ASSERT_TRUE(big->Send("GET /bulk?6 HTTP/1.1\r\n\r\n"));
  ASSERT_TRUE(done(1));
  ASSERT_TRUE(small->Send("GET /bulk?1 HTTP/1.1\r\n\r\n"));
  ASSERT_TRUE(done(2));
  EXPECT_GT(server_->queued_output_bytes(), uint64_t{5} << 20) << "both are held";
  // 4 MiB more would pass 8 MiB in all: the biggest queue goes, not the newest.
  ASSERT_TRUE(late->Send("GET /bulk?4 HTTP/1.1\r\n\r\n"));
  ASSERT_TRUE(done(3));
  EXPECT_LE(server_->queued_output_bytes(), uint64_t{8} << 20);
  EXPECT_TRUE(big->WaitClosed(kTimeout)) << "the slowest reader must be dropped";
  for (auto [client, mib] : {std::pair{small.get(), 1}, std::pair{late.get(), 4}}) {
    auto response = client->ReadResponse(kTimeout);
    ASSERT_TRUE(response.has_value()) << mib << " MiB response";
    EXPECT_EQ(response->status, 200);
    EXPECT_EQ(response->body.size(), static_cast<size_t>(mib) << 20);
  }
  server_->Stop();  // no more logging from the loop thread
  auto& sinks = spdlog::default_logger()->sinks();
  sinks.erase(std::remove(sinks.begin(), sinks.end(), log), sinks.end());
  std::vector<std::string> lines = log->last_formatted();
  auto dropped = std::find_if(lines.begin(), lines.end(), [](const std::string& line) {
    return line.find("slow_reader_dropped") != std::string::npos;
  });
  ASSERT_NE(dropped, lines.end()) << "the drop must be logged";
  EXPECT_THAT(*dropped, HasSubstr("reason=server_output_budget"));
  EXPECT_THAT(*dropped, HasSubstr("listener=unix:" + socket_path_));
  EXPECT_THAT(*dropped, HasSubstr("role=local"));
  EXPECT_THAT(*dropped, HasSubstr("peer=pid:" + std::to_string(getpid())));
  EXPECT_THAT(*dropped, HasSubstr("server_limit_bytes=8388608"));
  EXPECT_EQ(std::count_if(lines.begin(), lines.end(),
                          [](const std::string& line) {
                            return line.find("slow_reader_dropped") != std::string::npos;
                          }),
            1)
      << "only the slowest is dropped";
}

TEST_F(ServerTest, RequestsSayWhichListenerAndPeerTheyCameFrom) {
  StartServer();
  CurlResult local = CurlRequest("http://localhost/origin", socket_path_);
  ASSERT_EQ(local.code, 0);
  EXPECT_EQ(local.body, "listener=0 role=local peer= pid=" + std::to_string(getpid()) + " uid=" +
                            std::to_string(getuid()) + " gid=" + std::to_string(getgid()));
  CurlResult tcp = CurlRequest("http://127.0.0.1:" + std::to_string(port_) + "/origin", "");
  ASSERT_EQ(tcp.code, 0);
  EXPECT_THAT(tcp.body, StartsWith("listener=1 role=client peer=127.0.0.1:"));
  EXPECT_THAT(tcp.body, ::testing::Not(HasSubstr("pid=")));
}

TEST_F(ServerTest, FiftyClientsTimesTwentyRequests) {
  StartServer();
  constexpr int kClients = 50;
  constexpr int kRequests = 20;
  std::atomic<int> answered{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      auto client =
          c % 2 == 0 ? RawClient::ConnectUnix(socket_path_) : RawClient::ConnectTcp(port_);
      if (client == nullptr) return;
      for (int r = 0; r < kRequests; ++r) {
        std::string query = std::to_string(c) + "-" + std::to_string(r);
        if (!client->Send("GET /echo?" + query + " HTTP/1.1\r\nHost: x\r\n\r\n")) return;
        auto response = client->ReadResponse(kTimeout);
        if (response && response->body == "GET /echo " + query + "|") ++answered;
      }
    });
  }
  for (std::thread& t : clients) t.join();
  EXPECT_EQ(answered.load(), kClients * kRequests);
}

}  // namespace
}  // namespace tokenmill::http::testing
