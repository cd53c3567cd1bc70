// LedgerApi: the per-request ledger on the control socket, in commit order,
// for billing systems to consume exactly once.
//
//   GET /control/v1/ledger?cursor=&limit=&tenant=&model=&from=&to=&format=
//
// cursor: opaque, from X-Tokenmill-Next-Cursor or a record's cursor; absent:
// from the first record. The answer holds the records committed after it.
// limit: 1 to 10000000 positions of the ledger after the cursor (without
// filters, records); absent: all committed records. tenant, model: exact
// filters. from, to: as /control/v1/usage takes them (RFC 3339, a date or
// unix seconds), on the record's time (its finished_at_unix_ms, else when
// the store wrote it), from inclusive, to exclusive; no default. format:
// jsonl (default) | csv | cloudevents.
//
// Answer: 200, streamed (chunked), with headers X-Tokenmill-Next-Cursor (the
// cursor to pass next: every record up to it that matches the filters is in
// this answer) and X-Tokenmill-Complete (true when the answer reached the
// newest committed record). Both are known before the body, because the
// answer covers a window of the commit order fixed when it starts: (cursor,
// next cursor], all below the store's watermark, so the window's records can
// no longer change. A consumer stores the next cursor once it has processed
// the whole answer (a cut stream has no chunked end: do not store it then),
// or a record's cursor after that record; either way it reads every record
// exactly once across restarts of itself and of the daemon.
//
// jsonl: one record per line, the ledger record (JSON) with "cursor" added.
// csv (RFC 4180, CRLF): a header line, then one line per record: cursor,
// request_id, time (RFC 3339, ms), tenant, model, device, outcome, the token,
// time, energy and nano-currency integers, client_request_id, user, error.
// Fields are quoted as RFC 4180 says, not defused for spreadsheets: the
// client_request_id is the client's X-Request-Id text (printable ASCII) and
// user the request's OpenAI `user` (any text), so one starting with '=' reads
// as a formula if opened in a spreadsheet.
// cloudevents: one CloudEvents 1.0 structured-mode JSON event per line: id
// the request id (re-delivery is idempotent), source tokenmill://NODE, type
// io.tokenmill.request.metered, time, subject the tenant, datacontenttype
// application/json, extension tokenmillcursor, data the record.
//
// Errors (before the body): 400 naming the parameter (unknown or repeated
// parameter, bad cursor, limit, time or format, from >= to, a cursor ahead
// of this store); 405 for methods other than GET and HEAD. A store error
// mid-stream cuts the connection (no chunked end).
//
// Threads: Handle runs on the loop thread; the store is read off it, a page
// at a time, by one reader thread shared by all exports, and each page is
// formatted there and written back on the loop (post). The next page is read
// only once the connection's queue is below 1 MiB, so memory stays bounded
// however many records an answer holds and however slowly the peer reads.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "daemon/http/http_server.h"
#include "storage/meter_store.h"

namespace tokenmill::daemon {

class LedgerApi {
 public:
  // Runs a function on the HTTP loop thread (HttpServer::Post).
  using PostFn = std::function<void(std::function<void()>)>;

  // `store` outlives the API. node_name goes into CloudEvents' source.
  // page_records: records read from the store per page.
  LedgerApi(storage::MeterStore& store, std::string node_name, PostFn post,
            size_t page_records = 1000);
  // Stops the reader thread; exports still running are cut.
  ~LedgerApi();
  LedgerApi(const LedgerApi&) = delete;
  LedgerApi& operator=(const LedgerApi&) = delete;

  // Handles /control/v1/ledger and returns true; false for other paths.
  bool Handle(const http::HttpRequest& request, const http::ResponseWriterPtr& response);

 private:
  struct Shared;
  std::shared_ptr<Shared> shared_;
};

}  // namespace tokenmill::daemon
