// HttpServer: requests, keep-alive, pipelining, later answers, streaming.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>

#include "tests/http/test_server.h"

namespace tokenmill::http::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr auto kTimeout = 5s;

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
