// GET /control/v1/ledger over a real HttpServer on a unix socket, backed by a
// real MeterStore: formats, parameters, and consumers that stop and resume
// while requests keep finishing.
#include <curl/curl.h>

#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "daemon/http/http_server.h"
#include "daemon/ledger_api.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "storage/meter_store.h"
#include "tests/daemon/fake_response.h"
#include "tests/support/store_reads.h"
#include "tests/support/temp_dir.h"

namespace tokenmill::daemon {
namespace {

using nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr absl::Duration kDeadline = absl::Seconds(20);

// One GET read piece by piece: lines go to on_line, which may stop the
// transfer by returning false (the consumer "dies" mid-stream).
struct StreamResult {
  long status = 0;
  std::map<std::string, std::string> headers;  // lowercased names
  std::string error_body;
  bool complete = false;  // the whole body arrived (chunked end seen)
};

struct StreamState {
  std::function<bool(const std::string&)> on_line;
  std::string partial;
  StreamResult* result = nullptr;
  CURL* curl = nullptr;
};

size_t OnBody(char* data, size_t size, size_t count, void* user) {
  auto* s = static_cast<StreamState*>(user);
  const size_t n = size * count;
  long status = 0;
  curl_easy_getinfo(s->curl, CURLINFO_RESPONSE_CODE, &status);
  if (status != 200) {
    s->result->error_body.append(data, n);
    return n;
  }
  s->partial.append(data, n);
  size_t start = 0;
  for (size_t eol; (eol = s->partial.find('\n', start)) != std::string::npos; start = eol + 1) {
    if (!s->on_line(s->partial.substr(start, eol - start))) return 0;
  }
  s->partial.erase(0, start);
  return n;
}

size_t OnHeader(char* data, size_t size, size_t count, void* user) {
  auto* s = static_cast<StreamState*>(user);
  std::string line(data, size * count);
  const size_t colon = line.find(':');
  if (colon != std::string::npos) {
    std::string name = line.substr(0, colon);
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    std::string value = line.substr(colon + 1);
    value.erase(0, value.find_first_not_of(' '));
    value.erase(value.find_last_not_of("\r\n ") + 1);
    s->result->headers[name] = value;
  }
  return size * count;
}

StreamResult Stream(const std::string& socket, const std::string& path,
                    std::function<bool(const std::string&)> on_line) {
  StreamResult result;
  StreamState state;
  state.on_line = std::move(on_line);
  state.result = &result;
  CURL* curl = curl_easy_init();
  state.curl = curl;
  const std::string url = "http://localhost" + path;
  curl_easy_setopt(curl, CURLOPT_UNIX_SOCKET_PATH, socket.c_str());
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 60000L);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, OnBody);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &state);
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, OnHeader);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &state);
  const CURLcode code = curl_easy_perform(curl);
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &result.status);
  result.complete = code == CURLE_OK && state.partial.empty();
  curl_easy_cleanup(curl);
  return result;
}

class LedgerApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    storage::MeterStoreOptions options;
    options.dir = tmp_.path() / "data";
    options.before_ledger_write = [this](std::string_view id) {
      if (hook_) hook_(id);
    };
    auto store = storage::MeterStore::Open(options);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    socket_ = (tmp_.path() / "api.sock").string();
    http::HttpServerOptions server_options;
    server_options.listeners.push_back({http::Listener::Kind::kUnix, socket_, 0600});
    server_ = std::make_unique<http::HttpServer>(
        server_options, [this](http::HttpRequest request, http::ResponseWriterPtr response) {
          if (!api_->Handle(request, response)) response->Send(404, "text/plain", "no");
        });
    http::HttpServer* server = server_.get();
    api_ = std::make_unique<LedgerApi>(
        *store_, "node-1", [server](std::function<void()> fn) { server->Post(std::move(fn)); },
        /*page_records=*/5);
    ASSERT_TRUE(server_->Start().ok());
  }
  void TearDown() override {
    server_->Stop();
    api_.reset();
    server_.reset();
    store_.reset();
  }

  // A metering-shaped record (metering/metering.cc LedgerRecordJson).
  void Finish(const std::string& id, const std::string& tenant = "acme",
              const std::string& model = "llama", int64_t finished_ms = 1'780'000'000'000) {
    json record = {{"request_id", id},   {"tenant", tenant},
                   {"model", model},     {"device", "cpu"},
                   {"outcome", "stop"},  {"prompt_tokens", 3},
                   {"cached_tokens", 0}, {"generated_tokens", 5},
                   {"device_ns", 100},   {"energy_uj", 7},
                   {"cost_nusd", 12},    {"revenue_nusd", 40},
                   {"preemptions", 0},   {"finished_at_unix_ms", finished_ms}};
    auto done = store_->FinishRequest(id, record.dump(), {});
    ASSERT_TRUE(done.ok() && *done) << id;
  }

  StreamResult Get(const std::string& path, std::vector<std::string>* lines) {
    return Stream(socket_, path, [lines](const std::string& line) {
      lines->push_back(line);
      return true;
    });
  }

  ::tokenmill::testing::TempDir tmp_;
  std::function<void(std::string_view)> hook_;
  storage::MeterStorePtr store_;
  std::string socket_;
  std::unique_ptr<http::HttpServer> server_;
  std::unique_ptr<LedgerApi> api_;
};

TEST_F(LedgerApiTest, JsonLinesCarryTheirCursorAndTheAnswerTheNextOne) {
  for (int i = 0; i < 12; ++i) Finish(absl::StrCat("r", i));
  std::vector<std::string> lines;
  StreamResult r = Get("/control/v1/ledger", &lines);
  ASSERT_EQ(r.status, 200);
  EXPECT_TRUE(r.complete);
  EXPECT_EQ(r.headers["content-type"], "application/x-ndjson");
  EXPECT_EQ(r.headers["transfer-encoding"], "chunked");
  EXPECT_EQ(r.headers["x-tokenmill-next-cursor"], "12");
  EXPECT_EQ(r.headers["x-tokenmill-complete"], "true");
  ASSERT_EQ(lines.size(), 12u);
  for (int i = 0; i < 12; ++i) {
    json j = json::parse(lines[i]);
    EXPECT_EQ(j["request_id"], absl::StrCat("r", i));
    EXPECT_EQ(j["cursor"], absl::StrCat(i + 1));
    EXPECT_EQ(j["generated_tokens"], 5);
  }
  lines.clear();
  r = Get("/control/v1/ledger?cursor=12", &lines);
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(lines.empty());
  EXPECT_EQ(r.headers["x-tokenmill-next-cursor"], "12");
}

TEST_F(LedgerApiTest, CloudEventsHaveTheRequiredAttributes) {
  Finish("0190a3b4-0000-7000-8000-000000000001", "acme", "llama", 1'780'000'000'123);
  std::vector<std::string> lines;
  StreamResult r = Get("/control/v1/ledger?format=cloudevents", &lines);
  ASSERT_EQ(r.status, 200);
  ASSERT_EQ(lines.size(), 1u);
  json e = json::parse(lines[0]);
  EXPECT_EQ(e["specversion"], "1.0");
  EXPECT_EQ(e["id"], "0190a3b4-0000-7000-8000-000000000001");
  EXPECT_EQ(e["source"], "tokenmill://node-1");
  EXPECT_EQ(e["type"], "io.tokenmill.request.metered");
  EXPECT_EQ(e["time"], "2026-05-28T20:26:40.123Z");
  EXPECT_EQ(e["subject"], "acme");
  EXPECT_EQ(e["datacontenttype"], "application/json");
  EXPECT_EQ(e["tokenmillcursor"], "1");
  ASSERT_TRUE(e["data"].is_object());
  EXPECT_EQ(e["data"]["cost_nusd"], 12);
  // CloudEvents 1.0: extension names are lowercase letters and digits.
  for (const auto& [name, value] : e.items()) {
    EXPECT_TRUE(std::all_of(name.begin(), name.end(), [](char c) {
      return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    })) << name;
  }
}

TEST_F(LedgerApiTest, CsvHasAHeaderAndQuotesFields) {
  Finish("plain", "acme");
  Finish("with,comma", "say \"hi\"", "m\nx");
  std::vector<std::string> lines;
  StreamResult r = Get("/control/v1/ledger?format=csv", &lines);
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.headers["content-type"], "text/csv; charset=utf-8");
  ASSERT_EQ(lines.size(), 4u) << absl::StrJoin(lines, "|");  // the model's LF splits a line
  EXPECT_EQ(lines[0],
            "cursor,request_id,time,tenant,model,device,outcome,prompt_tokens,cached_tokens,"
            "generated_tokens,device_ns,energy_uj,cost_nusd,revenue_nusd,preemptions,"
            "duration_s,ttft_s,client_request_id,user,error\r");
  EXPECT_EQ(lines[1],
            "1,plain,2026-05-28T20:26:40.000Z,acme,llama,cpu,stop,3,0,5,100,7,12,40,0,,,,,\r");
  EXPECT_EQ(lines[2], "2,\"with,comma\",2026-05-28T20:26:40.000Z,\"say \"\"hi\"\"\",\"m");
  EXPECT_EQ(lines[3], "x\",cpu,stop,3,0,5,100,7,12,40,0,,,,,\r");
}

TEST_F(LedgerApiTest, FiltersByTenantModelAndTime) {
  Finish("a1", "a", "m1", 1'000'000);
  Finish("b1", "b", "m1", 2'000'000);
  Finish("a2", "a", "m2", 3'000'000);
  Finish("a3", "a", "m1", 4'000'000);
  auto ids = [&](const std::string& query) {
    std::vector<std::string> lines, out;
    StreamResult r = Get("/control/v1/ledger?" + query, &lines);
    EXPECT_EQ(r.status, 200) << r.error_body;
    for (const std::string& line : lines) out.push_back(json::parse(line)["request_id"]);
    return out;
  };
  EXPECT_THAT(ids("tenant=a"), ElementsAre("a1", "a2", "a3"));
  EXPECT_THAT(ids("tenant=a&model=m1"), ElementsAre("a1", "a3"));
  EXPECT_THAT(ids("from=2000&to=4000"), ElementsAre("b1", "a2"));  // unix seconds; to exclusive
  EXPECT_THAT(ids("from=1970-01-01T00:50:00Z"), ElementsAre("a2", "a3"));
}

TEST_F(LedgerApiTest, BadParametersAre400WithAMessage) {
  Finish("one");
  auto error = [&](const std::string& query) {
    std::vector<std::string> lines;
    StreamResult r = Get("/control/v1/ledger?" + query, &lines);
    EXPECT_EQ(r.status, 400) << query;
    return r.error_body;
  };
  EXPECT_THAT(error("cursor=abc"), HasSubstr("parameter 'cursor' must be a cursor"));
  EXPECT_THAT(error("cursor=-1"), HasSubstr("'cursor'"));
  EXPECT_THAT(error("cursor=99999999999999999999999"), HasSubstr("'cursor'"));
  EXPECT_THAT(error("cursor=2"), HasSubstr("is ahead of this node's ledger (committed through 1)"));
  EXPECT_THAT(error("limit=0"), HasSubstr("'limit' must be an integer from 1 to 10000000"));
  EXPECT_THAT(error("limit=10000001"), HasSubstr("'limit'"));
  EXPECT_THAT(error("format=xml"), HasSubstr("must be jsonl, csv or cloudevents"));
  EXPECT_THAT(error("from=2026-01-02&to=2026-01-01"), HasSubstr("'from' must be before 'to'"));
  EXPECT_THAT(error("from=yesterday"), HasSubstr("'from'"));
  EXPECT_THAT(error("device=cpu"), HasSubstr("'device' is unknown"));
  EXPECT_THAT(error("tenant="), HasSubstr("'tenant' must not be empty"));
  EXPECT_THAT(error("cursor=1&cursor=1"), HasSubstr("more than once"));
}

// A consumer reads pages with a limit; between pages requests finish, one of
// them held mid-write so that it commits after a later-numbered one. Each
// record arrives exactly once, the held one included.
TEST_F(LedgerApiTest, PagedConsumerGetsEveryRecordOnceWhileRequestsFinish) {
  for (int i = 0; i < 9; ++i) Finish(absl::StrCat("pre-", i));
  absl::Notification held_writing, release;
  hook_ = [&](std::string_view id) {
    if (id != "held") return;
    held_writing.Notify();
    release.WaitForNotification();
  };
  std::thread held;
  std::multiset<std::string> seen;
  std::string cursor;
  int pages = 0;
  // Ends once an answer that started after the release says it is complete.
  for (bool done = false; !done; ++pages) {
    ASSERT_LT(pages, 100);
    const bool released = release.HasBeenNotified();
    std::vector<std::string> lines;
    StreamResult r =
        Get(absl::StrCat("/control/v1/ledger?limit=4", cursor.empty() ? "" : "&cursor=" + cursor),
            &lines);
    ASSERT_EQ(r.status, 200) << r.error_body;
    ASSERT_TRUE(r.complete);
    for (const std::string& line : lines) seen.insert(json::parse(line)["request_id"]);
    cursor = r.headers["x-tokenmill-next-cursor"];
    done = released && r.headers["x-tokenmill-complete"] == "true";
    if (pages == 1) {
      held = std::thread([&] { Finish("held"); });  // takes the next sequence, stays uncommitted
      ASSERT_TRUE(held_writing.WaitForNotificationWithTimeout(kDeadline));
      Finish("after-held");  // a later sequence, committed first
    } else if (pages == 4) {
      release.Notify();
      held.join();
    } else if (pages == 2 || pages == 3) {
      Finish(absl::StrCat("during-", pages));
    }
  }
  std::multiset<std::string> expected = {"held", "after-held", "during-2", "during-3"};
  for (int i = 0; i < 9; ++i) expected.insert(absl::StrCat("pre-", i));
  EXPECT_EQ(seen, expected);
}

// A consumer that dies mid-stream resumes from the cursor of the last record
// it processed and misses nothing, repeats nothing.
TEST_F(LedgerApiTest, ConsumerCutMidStreamResumesFromItsLastRecord) {
  for (int i = 0; i < 23; ++i) Finish(absl::StrCat("r", i));
  std::vector<std::string> seen;
  std::string cursor;
  StreamResult first = Stream(socket_, "/control/v1/ledger", [&](const std::string& line) {
    json j = json::parse(line);
    seen.push_back(j["request_id"]);
    cursor = j["cursor"];
    return seen.size() < 8;  // dies after the 8th record, mid-page
  });
  EXPECT_FALSE(first.complete);
  ASSERT_EQ(cursor, "8");
  Finish("late");
  std::vector<std::string> lines;
  StreamResult rest = Get("/control/v1/ledger?cursor=" + cursor, &lines);
  ASSERT_TRUE(rest.complete);
  for (const std::string& line : lines) seen.push_back(json::parse(line)["request_id"]);
  ASSERT_EQ(seen.size(), 24u);
  for (int i = 0; i < 23; ++i) EXPECT_EQ(seen[i], absl::StrCat("r", i));
  EXPECT_EQ(seen[23], "late");
}

TEST_F(LedgerApiTest, LimitBoundsTheWindowAndOtherMethodsAre405) {
  Finish("x");
  Finish("y");
  StreamResult r =
      Stream(socket_, "/control/v1/ledger?limit=1", [](const std::string&) { return true; });
  EXPECT_EQ(r.headers["x-tokenmill-next-cursor"], "1");
  EXPECT_EQ(r.headers["x-tokenmill-complete"], "false");
  CURL* curl = curl_easy_init();
  curl_easy_setopt(curl, CURLOPT_UNIX_SOCKET_PATH, socket_.c_str());
  curl_easy_setopt(curl, CURLOPT_URL, "http://localhost/control/v1/ledger");
  curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, "DELETE");
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  std::string body;
  curl_easy_setopt(
      curl, CURLOPT_WRITEFUNCTION, +[](char* d, size_t s, size_t n, void* out) {
        static_cast<std::string*>(out)->append(d, s * n);
        return s * n;
      });
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &body);
  ASSERT_EQ(curl_easy_perform(curl), CURLE_OK);
  long status = 0;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_cleanup(curl);
  EXPECT_EQ(status, 405);
}

// A peer that does not read: the writer keeps OnWritable's callback instead
// of running it, as a connection with a full queue does.
class UnreadPeer : public testing::FakeResponse {
 public:
  void Write(std::string chunk) override {
    ++writes;
    FakeResponse::Write(std::move(chunk));
  }
  void OnWritable(uint64_t, std::function<void()> fn) override { waiting = std::move(fn); }
  int writes = 0;
  std::function<void()> waiting;
};

// The loop thread, played by the test: posted tasks run when it says so.
class ManualLoop {
 public:
  void Post(std::function<void()> fn) {
    absl::MutexLock hold(&mu_);
    tasks_.push_back(std::move(fn));
  }
  // Runs the next posted task; false when none came within the deadline.
  bool RunNext() {
    std::function<void()> task;
    {
      absl::MutexLock hold(&mu_);
      if (!mu_.AwaitWithTimeout(
              absl::Condition(
                  +[](std::deque<std::function<void()>>* t) { return !t->empty(); }, &tasks_),
              kDeadline)) {
        return false;
      }
      task = std::move(tasks_.front());
      tasks_.pop_front();
    }
    task();
    return true;
  }

 private:
  absl::Mutex mu_;
  std::deque<std::function<void()>> tasks_;
};

// Backpressure: once a page is written to a peer that does not read, the
// export reads no further page until the peer drains.
TEST(LedgerApiPacingTest, WaitsForThePeerBetweenPages) {
  ::tokenmill::testing::TempDir tmp;
  storage::MeterStoreOptions options;
  options.dir = tmp.path() / "data";
  auto store = storage::MeterStore::Open(options);
  ASSERT_TRUE(store.ok());
  for (int i = 0; i < 12; ++i) {
    ASSERT_TRUE(::tokenmill::testing::PutLedger(*(*store), absl::StrCat("r", i), "{\"n\":1}").ok());
  }
  ManualLoop loop;
  auto api = std::make_unique<LedgerApi>(
      **store, "n", [&loop](std::function<void()> fn) { loop.Post(std::move(fn)); }, 5);
  auto peer = std::make_shared<UnreadPeer>();
  http::HttpRequest request = testing::Request("GET", "/control/v1/ledger");
  ASSERT_TRUE(api->Handle(request, peer));
  ASSERT_TRUE(loop.RunNext());  // the head
  EXPECT_EQ(peer->status, 200);
  for (int page = 1; page <= 2; ++page) {
    ASSERT_TRUE(loop.RunNext());  // a page of 5
    EXPECT_EQ(peer->writes, page);
    ASSERT_TRUE(peer->waiting) << "page " << page << ": the export did not wait for the peer";
    EXPECT_FALSE(peer->ended);
    std::function<void()> drained = std::move(peer->waiting);
    peer->waiting = nullptr;
    drained();  // the peer read its queue
  }
  ASSERT_TRUE(loop.RunNext());  // the last 2 records, and the end
  EXPECT_EQ(peer->writes, 3);
  EXPECT_TRUE(peer->ended);
  EXPECT_EQ(std::count(peer->body.begin(), peer->body.end(), '\n'), 12);
  api.reset();
}

}  // namespace
}  // namespace tokenmill::daemon
