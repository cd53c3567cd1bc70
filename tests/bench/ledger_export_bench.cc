// An export of 1M ledger records (default) through the production path: a
// real MeterStore, the LedgerApi behind a real HttpServer on a unix socket,
// read by a libcurl client that counts each record once (a bitmap, no copy
// of the body). All in this process, so the RSS figure is an upper bound of
// what the daemon would hold.
//
//   ledger_export_bench [RECORDS] [FORMAT]   (default 1000000 jsonl)
//
// Prints the fill time, the export's records/s and MB/s, the process's RSS
// before the export and its peak during it (VmHWM reset through
// /proc/self/clear_refs), and whether every record arrived exactly once.
#include <curl/curl.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "daemon/http/http_server.h"
#include "daemon/ledger_api.h"
#include "storage/meter_store.h"

namespace {

using Clock = std::chrono::steady_clock;
using tokenmill::storage::MeterStore;
using tokenmill::storage::MeterStoreOptions;

long long StatusKib(const char* field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  const std::string prefix = std::string(field) + ":";
  while (std::getline(in, line)) {
    if (line.rfind(prefix, 0) == 0) return std::atoll(line.c_str() + prefix.size());
  }
  return -1;
}

std::string Record(const char* id) {
  return std::string("{\"request_id\":\"") + id +
         "\",\"tenant\":\"alpha\",\"model\":\"llama\",\"device\":\"cuda:0\",\"outcome\":\"stop\","
         "\"prompt_tokens\":512,\"cached_tokens\":128,\"generated_tokens\":256,\"device_ns\":"
         "812345678,\"energy_uj\":91234567,\"cost_nusd\":123456,\"revenue_nusd\":345678,"
         "\"preemptions\":0,\"finished_at_unix_ms\":1780000000000,\"duration_s\":4.25}";
}

struct Consumed {
  std::vector<bool> seen;
  size_t lines = 0, duplicates = 0, strangers = 0, bytes = 0;
  std::string partial;
};

size_t Consume(char* data, size_t size, size_t count, void* user) {
  auto* c = static_cast<Consumed*>(user);
  c->bytes += size * count;
  c->partial.append(data, size * count);
  size_t start = 0;
  for (size_t eol; (eol = c->partial.find('\n', start)) != std::string::npos; start = eol + 1) {
    ++c->lines;
    const size_t at = c->partial.find("\"request_id\":\"r", start);
    if (at == std::string::npos || at > eol) {
      ++c->strangers;
      continue;
    }
    const size_t index = std::strtoul(c->partial.c_str() + at + 15, nullptr, 10);
    if (index >= c->seen.size()) {
      ++c->strangers;
    } else if (c->seen[index]) {
      ++c->duplicates;
    } else {
      c->seen[index] = true;
    }
  }
  c->partial.erase(0, start);
  return size * count;
}

}  // namespace

int main(int argc, char** argv) {
  const size_t records = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 1'000'000;
  const std::string format = argc > 2 ? argv[2] : "jsonl";
  char tmpl[] = "/tmp/tokenmill-ledger-bench-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) return 1;
  const std::filesystem::path dir(tmpl);
  MeterStoreOptions options;
  options.dir = dir / "data";

  const auto fill_start = Clock::now();
  {
    auto store = MeterStore::Open(options);
    if (!store.ok()) return std::fprintf(stderr, "%s\n", store.status().ToString().c_str()), 1;
    std::vector<std::thread> writers;
    std::atomic<bool> failed{false};
    const size_t kWriters = 4;
    for (size_t w = 0; w < kWriters; ++w) {
      writers.emplace_back([&, w] {
        char id[32];
        for (size_t i = w; i < records; i += kWriters) {
          std::snprintf(id, sizeof(id), "r%09zu", i);
          auto done = (*store)->FinishRequest(id, Record(id), {});
          if (!done.ok() || !*done) failed = true;
        }
      });
    }
    for (auto& t : writers) t.join();
    if (failed) return std::fprintf(stderr, "fill failed\n"), 1;
  }
  const double fill_s = std::chrono::duration<double>(Clock::now() - fill_start).count();

  auto store = MeterStore::Open(options);
  if (!store.ok()) return std::fprintf(stderr, "%s\n", store.status().ToString().c_str()), 1;
  const std::string socket = (dir / "api.sock").string();
  tokenmill::http::HttpServerOptions server_options;
  server_options.listeners.push_back({tokenmill::http::Listener::Kind::kUnix, socket, 0600});
  std::unique_ptr<tokenmill::daemon::LedgerApi> api;
  tokenmill::http::HttpServer server(
      server_options,
      [&api](tokenmill::http::HttpRequest request, tokenmill::http::ResponseWriterPtr response) {
        if (!api->Handle(request, response)) response->Send(404, "text/plain", "no");
      });
  api = std::make_unique<tokenmill::daemon::LedgerApi>(
      **store, "bench", [&server](std::function<void()> fn) { server.Post(std::move(fn)); });
  if (!server.Start().ok()) return 1;

  { std::ofstream("/proc/self/clear_refs") << "5"; }
  const long long rss_before = StatusKib("VmRSS");
  Consumed consumed;
  consumed.seen.assign(records, false);
  const std::string url = "http://localhost/control/v1/ledger?format=" + format;
  CURL* curl = curl_easy_init();
  curl_easy_setopt(curl, CURLOPT_UNIX_SOCKET_PATH, socket.c_str());
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, Consume);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &consumed);
  const auto start = Clock::now();
  const CURLcode code = curl_easy_perform(curl);
  const double export_s = std::chrono::duration<double>(Clock::now() - start).count();
  long status = 0;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_cleanup(curl);
  const long long hwm = StatusKib("VmHWM");
  server.Stop();
  api.reset();
  store->reset();
  std::filesystem::remove_all(dir);

  size_t seen = 0;
  for (bool b : consumed.seen) seen += b ? 1 : 0;
  std::printf("fill: %zu records in %.1f s (FinishRequest, 4 threads, durability=process)\n",
              records, fill_s);
  std::printf(
      "export (%s): status %ld, curl %s, %zu lines, %.1f MB in %.2f s: %.0f records/s, "
      "%.1f MB/s\n",
      format.c_str(), status, curl_easy_strerror(code), consumed.lines, consumed.bytes / 1e6,
      export_s, consumed.lines / export_s, consumed.bytes / 1e6 / export_s);
  std::printf("exactly once: %s (%zu distinct of %zu, %zu duplicates, %zu strangers)\n",
              seen == records && consumed.duplicates == 0 && consumed.strangers == 0 ? "yes" : "NO",
              seen, records, consumed.duplicates, consumed.strangers);
  std::printf("RSS: %lld KiB before the export, peak %lld KiB during it (+%lld KiB)\n", rss_before,
              hwm, hwm - rss_before);
  return 0;
}
