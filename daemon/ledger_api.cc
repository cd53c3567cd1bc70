#include "daemon/ledger_api.h"

#include <algorithm>
#include <atomic>
#include <deque>
#include <map>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "daemon/api_errors.h"
#include "daemon/usage_api.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"

namespace tokenmill::daemon {
namespace {

using nlohmann::json;

constexpr std::string_view kLedgerPath = "/control/v1/ledger";
constexpr uint64_t kMaxLimit = 10'000'000;
// The next page is read once the peer's queue is at most this long.
constexpr uint64_t kLowWaterBytes = 1 << 20;
constexpr std::string_view kEventType = "io.tokenmill.request.metered";

enum class Format { kJsonl, kCsv, kCloudEvents };

struct ExportQuery {
  uint64_t after = 0;  // the cursor
  std::optional<uint64_t> limit;
  std::string tenant;
  std::string model;
  std::optional<uint64_t> from_ms;  // inclusive
  std::optional<uint64_t> to_ms;    // exclusive
  Format format = Format::kJsonl;
  bool head = false;
};

std::string Cursor(uint64_t seq) { return absl::StrCat(seq); }

// Decimal digits only (no sign, no spaces), at most max.
std::optional<uint64_t> ParseCount(const std::string& text, uint64_t max) {
  uint64_t value = 0;
  const bool digits =
      !text.empty() && text.size() <= 20 &&
      std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
  if (!digits || !absl::SimpleAtoi(text, &value) || value > max) return std::nullopt;
  return value;
}

absl::StatusOr<ExportQuery> ParseExportQuery(const http::HttpRequest& request) {
  auto params = ParseQueryParams(request.query,
                                 {"cursor", "limit", "tenant", "model", "from", "to", "format"});
  if (!params.ok()) return params.status();
  auto param = [&](const char* name) -> const std::string* {
    auto it = params->find(name);
    return it == params->end() ? nullptr : &it->second;
  };
  ExportQuery q;
  q.head = request.method == "HEAD";
  if (const std::string* v = param("cursor")) {
    std::optional<uint64_t> seq = ParseCount(*v, UINT64_MAX);
    if (!seq) {
      return BadParam("cursor",
                      absl::StrCat("must be a cursor this endpoint returned "
                                   "(X-Tokenmill-Next-Cursor or a record's cursor), not '",
                                   v->substr(0, 64), "'"));
    }
    q.after = *seq;
  }
  if (const std::string* v = param("limit")) {
    std::optional<uint64_t> limit = ParseCount(*v, kMaxLimit);
    if (!limit || *limit == 0) {
      return BadParam("limit", absl::StrCat("must be an integer from 1 to ", kMaxLimit, ", not '",
                                            v->substr(0, 64), "'"));
    }
    q.limit = *limit;
  }
  for (const char* filter : {"tenant", "model"}) {
    const std::string* value = param(filter);
    if (value == nullptr) continue;
    if (value->empty()) return BadParam(filter, "must not be empty (leave it out to match all)");
    if (value->find('\0') != std::string::npos) return BadParam(filter, "must not contain NUL");
    (std::string_view(filter) == "tenant" ? q.tenant : q.model) = *value;
  }
  if (const std::string* v = param("from")) {
    auto t = ParseUsageTime(*v, "from");
    if (!t.ok()) return t.status();
    q.from_ms = *t * 1000;
  }
  if (const std::string* v = param("to")) {
    auto t = ParseUsageTime(*v, "to");
    if (!t.ok()) return t.status();
    q.to_ms = *t * 1000;
  }
  if (q.from_ms && q.to_ms && *q.from_ms >= *q.to_ms) {
    return BadParam("from", "must be before 'to'");
  }
  if (const std::string* v = param("format")) {
    if (*v == "jsonl") {
      q.format = Format::kJsonl;
    } else if (*v == "csv") {
      q.format = Format::kCsv;
    } else if (*v == "cloudevents") {
      q.format = Format::kCloudEvents;
    } else {
      return BadParam("format", absl::StrCat("must be jsonl, csv or cloudevents, not '",
                                             v->substr(0, 64), "'"));
    }
  }
  return q;
}

std::string_view ContentType(Format format) {
  switch (format) {
    case Format::kCsv:
      return "text/csv; charset=utf-8";
    case Format::kCloudEvents:
    case Format::kJsonl:
      return "application/x-ndjson";
  }
  return "application/x-ndjson";
}

constexpr const char* kCsvColumns[] = {"cursor",        "request_id",
                                       "time",          "tenant",
                                       "model",         "device",
                                       "outcome",       "prompt_tokens",
                                       "cached_tokens", "generated_tokens",
                                       "device_ns",     "energy_uj",
                                       "cost_nusd",     "revenue_nusd",
                                       "preemptions",   "duration_s",
                                       "ttft_s",        "client_request_id",
                                       "user",          "error"};

std::string CsvHeader() {
  std::string out;
  for (const char* column : kCsvColumns) absl::StrAppend(&out, out.empty() ? "" : ",", column);
  return out + "\r\n";
}

std::string Rfc3339Ms(uint64_t unix_ms) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ",
                          absl::FromUnixMillis(static_cast<int64_t>(unix_ms)), absl::UTCTimeZone());
}

std::string CsvValue(const json& record, const char* name) {
  auto it = record.find(name);
  if (it == record.end() || it->is_null()) return "";
  if (it->is_string()) return CsvField(it->get_ref<const std::string&>());
  return CsvField(it->dump());
}

std::string StringField(const json& record, const char* name) {
  auto it = record.find(name);
  return it != record.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// Appends entry's line to out when it matches the query.
void AppendRecord(const ExportQuery& q, const std::string& source,
                  const storage::LedgerEntry& entry, std::string& out) {
  const bool filtered = !q.tenant.empty() || !q.model.empty() || q.from_ms || q.to_ms;
  const std::string_view raw = entry.record;
  if (q.format == Format::kJsonl && !filtered) {
    // The common case without parsing: the object with "cursor" spliced in.
    const size_t open = raw.find_first_not_of(" \t\r\n");
    const size_t next =
        open == std::string_view::npos ? open : raw.find_first_not_of(" \t\r\n", open + 1);
    if (next != std::string_view::npos && raw[open] == '{' && raw[next] != '}' &&
        raw.find('\n') == std::string_view::npos) {
      absl::StrAppend(&out, "{\"cursor\":\"", Cursor(entry.seq), "\",",
                      absl::string_view(raw.data() + open + 1, raw.size() - open - 1), "\n");
      return;
    }
  }
  json record = json::parse(raw, nullptr, /*allow_exceptions=*/false);
  if (!record.is_object()) record = json{{"record", std::string(raw)}};  // not the contract's
  if (!q.tenant.empty() && StringField(record, "tenant") != q.tenant) return;
  if (!q.model.empty() && StringField(record, "model") != q.model) return;
  uint64_t time_ms = entry.committed_unix_ms;
  if (auto it = record.find("finished_at_unix_ms");
      it != record.end() && it->is_number_integer() && it->get<int64_t>() >= 0) {
    time_ms = it->get<uint64_t>();
  }
  if ((q.from_ms && time_ms < *q.from_ms) || (q.to_ms && time_ms >= *q.to_ms)) return;

  switch (q.format) {
    case Format::kJsonl:
      record["cursor"] = Cursor(entry.seq);
      absl::StrAppend(&out, record.dump(-1, ' ', false, json::error_handler_t::replace), "\n");
      return;
    case Format::kCsv: {
      absl::StrAppend(&out, Cursor(entry.seq), ",", CsvField(entry.request_id), ",",
                      Rfc3339Ms(time_ms));
      for (size_t i = 3; i < std::size(kCsvColumns); ++i) {
        absl::StrAppend(&out, ",", CsvValue(record, kCsvColumns[i]));
      }
      out += "\r\n";
      return;
    }
    case Format::kCloudEvents: {
      nlohmann::ordered_json event = {{"specversion", "1.0"},
                                      {"id", entry.request_id},
                                      {"source", source},
                                      {"type", std::string(kEventType)},
                                      {"time", Rfc3339Ms(time_ms)}};
      const std::string tenant = StringField(record, "tenant");
      if (!tenant.empty()) event["subject"] = tenant;
      event["datacontenttype"] = "application/json";
      event["tokenmillcursor"] = Cursor(entry.seq);
      event["data"] = std::move(record);
      absl::StrAppend(&out, event.dump(-1, ' ', false, json::error_handler_t::replace), "\n");
      return;
    }
  }
}

// One thread that reads the store for every export, a job at a time.
class Reader {
 public:
  Reader() : thread_([this] { Loop(); }) {}
  ~Reader() { Stop(); }

  void Run(std::function<void()> job) {
    absl::MutexLock hold(&mu_);
    if (!stopping_) jobs_.push_back(std::move(job));
  }
  // Drops queued jobs and joins the thread. Not from the thread itself.
  void Stop() {
    {
      absl::MutexLock hold(&mu_);
      stopping_ = true;
      jobs_.clear();
    }
    if (thread_.joinable()) thread_.join();
  }

 private:
  void Loop() {
    for (;;) {
      std::function<void()> job;
      {
        absl::MutexLock hold(&mu_);
        mu_.Await(absl::Condition(
            +[](Reader* r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(r->mu_) {
              return r->stopping_ || !r->jobs_.empty();
            },
            this));
        if (stopping_) return;
        job = std::move(jobs_.front());
        jobs_.pop_front();
      }
      job();
    }
  }

  absl::Mutex mu_;
  std::deque<std::function<void()>> jobs_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace

struct LedgerApi::Shared : std::enable_shared_from_this<LedgerApi::Shared> {
  Shared(storage::MeterStore& store, std::string source, PostFn post, size_t page_records)
      : store(store),
        source(std::move(source)),
        post(std::move(post)),
        page_records(std::max<size_t>(1, page_records)) {}

  storage::MeterStore& store;
  const std::string source;
  const PostFn post;
  const size_t page_records;
  Reader reader;

  // One answer in progress. The reader thread and the loop take turns: each
  // hands over through Run() or post, so no field is touched by both at once.
  struct Export {
    ExportQuery query;
    http::ResponseWriterPtr response;  // loop thread only
    uint64_t through = 0;
    std::atomic<bool> gone{false};
  };

  // Reader thread: fixes the answer's window, then starts it on the loop.
  void Begin(const std::shared_ptr<Export>& exp) {
    const uint64_t committed = store.LedgerWatermark() - 1;
    const ExportQuery& q = exp->query;
    if (q.after > committed) {
      post([exp, committed] {
        SendError(*exp->response, absl::InvalidArgumentError(absl::StrCat(
                                      "parameter 'cursor' ", exp->query.after,
                                      " is ahead of this node's ledger (committed through ",
                                      committed, "): it was not issued by this node's store")));
      });
      return;
    }
    exp->through = committed;
    if (q.limit && committed - q.after > *q.limit) exp->through = q.after + *q.limit;
    const bool complete = exp->through == committed;
    auto self = shared_from_this();
    post([self, exp, complete] {
      if (exp->gone) return;
      exp->response->Start(200, ContentType(exp->query.format),
                           {{"X-Tokenmill-Next-Cursor", Cursor(exp->through)},
                            {"X-Tokenmill-Complete", complete ? "true" : "false"},
                            {"Cache-Control", "no-store"}});
      if (exp->query.head) return exp->response->End();
      if (exp->query.format == Format::kCsv) exp->response->Write(CsvHeader());
      self->Continue(exp, exp->query.after);
    });
  }

  // Loop thread: the next page, or the end.
  void Continue(const std::shared_ptr<Export>& exp, uint64_t after) {
    if (after >= exp->through) return exp->response->End();
    auto self = shared_from_this();
    reader.Run([self, exp, after] { self->ReadPage(exp, after); });
  }

  // Reader thread: reads and formats one page, then writes it on the loop.
  void ReadPage(const std::shared_ptr<Export>& exp, uint64_t after) {
    if (exp->gone) return;
    absl::StatusOr<storage::LedgerPage> page =
        store.ReadLedgerPage(after, exp->through, page_records);
    if (!page.ok()) {
      spdlog::error("ledger_export_failed cursor={} error=\"{}\"", after, page.status().ToString());
      // Dropped mid-stream, the writer cuts the connection: no chunked end,
      // so the consumer does not take the answer as whole.
      post([exp] { exp->response.reset(); });
      return;
    }
    std::string chunk;
    for (const storage::LedgerEntry& entry : page->entries) {
      AppendRecord(exp->query, source, entry, chunk);
    }
    const uint64_t next = page->last_seq;
    auto self = shared_from_this();
    post([self, exp, next, chunk = std::move(chunk)]() mutable {
      if (exp->gone) return;
      exp->response->Write(std::move(chunk));
      if (next >= exp->through) return exp->response->End();
      exp->response->OnWritable(kLowWaterBytes, [self, exp, next] { self->Continue(exp, next); });
    });
  }
};

LedgerApi::LedgerApi(storage::MeterStore& store, std::string node_name, PostFn post,
                     size_t page_records)
    : shared_(std::make_shared<Shared>(store, absl::StrCat("tokenmill://", node_name),
                                       std::move(post), page_records)) {}

LedgerApi::~LedgerApi() { shared_->reader.Stop(); }

bool LedgerApi::Handle(const http::HttpRequest& request, const http::ResponseWriterPtr& response) {
  if (request.path != kLedgerPath) return false;
  if (request.method != "GET" && request.method != "HEAD") {
    SendMethodNotAllowedError(*response, {"GET", "HEAD"});
    return true;
  }
  absl::StatusOr<ExportQuery> query = ParseExportQuery(request);
  if (!query.ok()) return SendError(*response, query.status()), true;
  auto exp = std::make_shared<Shared::Export>();
  exp->query = *std::move(query);
  exp->response = response;
  std::weak_ptr<Shared::Export> weak = exp;
  response->OnClose([weak] {
    if (auto live = weak.lock()) live->gone = true;
  });
  auto shared = shared_;
  shared_->reader.Run([shared, exp] { shared->Begin(exp); });
  return true;
}

}  // namespace tokenmill::daemon
