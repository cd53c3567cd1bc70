// The ledger export against the real daemon: `tokenmill ledger export` with a
// cursor file, stopped, killed and re-run across daemon restarts while
// requests finish, gets every record exactly once; and an export of 100k
// records streams through the daemon with bounded memory (the 1M run is
// tests/bench/ledger_export_bench.cc).
#include <curl/curl.h>
#include <sys/types.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/model/synth.h"
#include "runtime/tenants/tenant_registry.h"
#include "storage/meter_store.h"
#include "tests/integration/daemon_process.h"
#include "tests/support/temp_dir.h"
#include "tests/support/tiny_model.h"

namespace tokenmill::testing {
namespace {

using nlohmann::json;

constexpr char kKey[] = "ledger-export-key-0001";

// A record shaped like the daemon's (metering/metering.cc LedgerRecordJson).
std::string Record(const std::string& id) {
  return json{{"request_id", id},     {"tenant", "a"},
              {"model", "tiny"},      {"device", "cpu"},
              {"outcome", "stop"},    {"prompt_tokens", 12},
              {"cached_tokens", 0},   {"generated_tokens", 30},
              {"device_ns", 1234567}, {"energy_uj", 4242},
              {"cost_nusd", 987654},  {"revenue_nusd", 1234567},
              {"preemptions", 0},     {"finished_at_unix_ms", 1780000000000},
              {"duration_s", 0.25}}
      .dump();
}

// Writes records "old-000000".. into the store of a data dir no daemon holds.
void FillStore(const std::filesystem::path& data_dir, int count) {
  storage::MeterStoreOptions options;
  options.dir = data_dir;
  auto store = storage::MeterStore::Open(options);
  ASSERT_TRUE(store.ok()) << store.status();
  char id[32];
  for (int i = 0; i < count; ++i) {
    std::snprintf(id, sizeof(id), "old-%06d", i);
    auto done = (*store)->FinishRequest(id, Record(id), {});
    ASSERT_TRUE(done.ok() && *done);
  }
}

// "VmRSS" or "VmHWM" of a process, in KiB.
int64_t StatusKib(pid_t pid, const std::string& field) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::atoll(line.c_str() + field.size() + 1);
  }
  return -1;
}

class LedgerExportTest : public ::testing::Test {
 protected:
  std::unique_ptr<DaemonProcess> StartDaemon(bool with_model) {
    DaemonOptions options;
    if (with_model) {
      model_path_ = dir_.path() / "tiny.gguf";
      if (!std::filesystem::exists(model_path_)) {
        EXPECT_TRUE(model::WriteSynthGguf(TinyModelShape(), model_path_).ok());
      }
      options.api_toml = "tcp = \"127.0.0.1:0\"\n";
      options.extra_toml = absl::StrCat(
          "[[device]]\nmatch = \"cpu\"\nkv_memory = \"64MiB\"\n\n[[model]]\nid = \"tiny\"\npath = "
          "\"",
          model_path_.string(), "\"\n\n[[tenant]]\nname = \"a\"\napi_keys_sha256 = [\"",
          tenants::ApiKeySha256(kKey), "\"]\n");
    }
    auto d = std::make_unique<DaemonProcess>(dir_.path(), options);
    EXPECT_TRUE(d->Start()) << d->Stderr();
    if (with_model) {
      EXPECT_TRUE(d->WaitModelReady("tiny")) << d->Stderr();
      port_ = d->ApiTcpPort();
    }
    return d;
  }

  // One real request: its ledger record's client_request_id is `id`.
  void Complete(const std::string& id) {
    CurlResult r =
        CurlRequest(absl::StrCat("http://127.0.0.1:", port_, "/v1/completions"), "", "POST",
                    json{{"model", "tiny"}, {"prompt", "hello"}, {"max_tokens", 4}}.dump(),
                    {"Content-Type: application/json", std::string("Authorization: Bearer ") + kKey,
                     "X-Request-Id: " + id});
    ASSERT_EQ(r.status, 200) << r.body;
  }

  // `tokenmill ledger export ARGS >> out` (stdout a regular file).
  CommandResult Export(const DaemonProcess& d, const std::string& args) {
    return RunCommand(
        {"/bin/sh", "-c",
         absl::StrCat("exec '", TokenmillCliPath(), "' --socket '", d.socket_path().string(),
                      "' ledger export --cursor-file '", cursor_file().string(), "' ", args,
                      " >> '", out_file().string(), "'")});
  }

  std::filesystem::path cursor_file() const { return dir_.path() / "ledger.cursor"; }
  std::filesystem::path out_file() const { return dir_.path() / "ledger.jsonl"; }

  // Every line's id: the daemon's records by client_request_id, the others by request_id.
  std::multiset<std::string> OutputIds() {
    std::multiset<std::string> ids;
    const std::string text = ReadFile(out_file());
    for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
      json j = json::parse(line.begin(), line.end());
      ids.insert(j.value("client_request_id", j.value("request_id", std::string())));
    }
    return ids;
  }

  TempDir dir_;
  std::filesystem::path model_path_;
  std::string port_;
};

TEST_F(LedgerExportTest, CliGetsEveryRecordOnceAcrossStopsKillsAndRestarts) {
  FillStore(dir_.path() / "data", 2500);
  auto daemon = StartDaemon(/*with_model=*/true);

  // A run that stops after 1200 records (two and a half pages).
  CommandResult first = Export(*daemon, "--limit 1200 --page-records 500");
  ASSERT_EQ(first.exit_code, 0) << first.err;
  EXPECT_EQ(OutputIds().size(), 1200u);
  EXPECT_EQ(ReadFile(cursor_file()),
            absl::StrCat("1200 ", std::filesystem::file_size(out_file()), "\n"));

  // Requests finish while the consumer is away; then the daemon restarts.
  Complete("live-1");
  Complete("live-2");
  ASSERT_EQ(daemon->Stop(), 0);
  daemon.reset();
  daemon = StartDaemon(/*with_model=*/true);
  Complete("live-3");

  // A run killed after writing a page but before saving its cursor leaves
  // that page in the file past the saved length: the next run cuts it off.
  {
    std::ofstream out(out_file(), std::ios::app);
    out << Record("old-001200") << "\n" << Record("old-001201") << "\n{\"trunc";
  }
  CommandResult second = Export(*daemon, "--page-records 700");
  ASSERT_EQ(second.exit_code, 0) << second.err;

  std::multiset<std::string> expected = {"live-1", "live-2", "live-3"};
  char id[32];
  for (int i = 0; i < 2500; ++i) {
    std::snprintf(id, sizeof(id), "old-%06d", i);
    expected.insert(id);
  }
  EXPECT_EQ(OutputIds(), expected);

  // Nothing new: an empty run; then one more request, and only it.
  CommandResult idle = Export(*daemon, "");
  ASSERT_EQ(idle.exit_code, 0) << idle.err;
  Complete("live-4");
  CommandResult last = Export(*daemon, "");
  ASSERT_EQ(last.exit_code, 0) << last.err;
  expected.insert("live-4");
  EXPECT_EQ(OutputIds(), expected);
}

TEST_F(LedgerExportTest, CliCsvHasOneHeaderAndBadCursorIsAnError) {
  FillStore(dir_.path() / "data", 7);
  auto daemon = StartDaemon(/*with_model=*/false);
  CommandResult csv = RunCommand({TokenmillCliPath(), "--socket", daemon->socket_path().string(),
                                  "ledger", "export", "--format", "csv", "--page-records", "2"});
  ASSERT_EQ(csv.exit_code, 0) << csv.err;
  std::vector<std::string> lines = absl::StrSplit(csv.out, "\r\n", absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 8u) << csv.out;
  EXPECT_EQ(lines[0].rfind("cursor,request_id,time,tenant,", 0), 0u);
  EXPECT_EQ(lines[1].rfind("1,old-000000,2026-05-28T20:26:40.000Z,a,tiny,", 0), 0u);

  WriteFile(cursor_file(), "not-a-cursor\n");
  CommandResult bad = RunCommand({TokenmillCliPath(), "--socket", daemon->socket_path().string(),
                                  "ledger", "export", "--cursor-file", cursor_file().string()});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("HTTP 400: parameter 'cursor' must be a cursor"), std::string::npos)
      << bad.err;
}

// Streams the export of `records` records from the daemon, checks each
// arrives once, and returns the daemon's peak RSS growth in KiB.
struct Consumed {
  std::vector<bool> seen;
  size_t lines = 0;
  size_t duplicates = 0;
  size_t strangers = 0;
  std::string partial;
};

size_t Consume(char* data, size_t size, size_t count, void* user) {
  auto* c = static_cast<Consumed*>(user);
  c->partial.append(data, size * count);
  size_t start = 0;
  for (size_t eol; (eol = c->partial.find('\n', start)) != std::string::npos; start = eol + 1) {
    ++c->lines;
    // {"cursor":"N","request_id":"old-NNNNNN",...}: the id without parsing JSON.
    const size_t at = c->partial.find("\"request_id\":\"old-", start);
    if (at == std::string::npos || at > eol) {
      ++c->strangers;
      continue;
    }
    const size_t index = std::strtoul(c->partial.c_str() + at + 18, nullptr, 10);
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

TEST_F(LedgerExportTest, ExportOf100kRecordsKeepsDaemonMemoryBounded) {
  constexpr int kRecords = 100'000;
#if defined(__SANITIZE_ADDRESS__)
  // ASan's quarantine keeps freed pages resident (256 MiB by default); keep
  // it small so that RSS measures what the export holds.
  const char* asan = std::getenv("ASAN_OPTIONS");
  setenv("ASAN_OPTIONS", absl::StrCat(asan ? asan : "", ":quarantine_size_mb=4").c_str(), 1);
#endif
  FillStore(dir_.path() / "data", kRecords);
  auto daemon = StartDaemon(/*with_model=*/false);
  const pid_t pid = daemon->process().pid();
  {
    std::ofstream clear(absl::StrCat("/proc/", pid, "/clear_refs"));
    clear << "5";  // resets VmHWM to the current RSS
    ASSERT_TRUE(clear.good());
  }
  const int64_t rss_before = StatusKib(pid, "VmRSS");
  ASSERT_GT(rss_before, 0);

  Consumed consumed;
  consumed.seen.assign(kRecords, false);
  CURL* curl = curl_easy_init();
  const std::string socket = daemon->socket_path().string();
  curl_easy_setopt(curl, CURLOPT_UNIX_SOCKET_PATH, socket.c_str());
  curl_easy_setopt(curl, CURLOPT_URL, "http://localhost/control/v1/ledger");
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 120000L);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, Consume);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &consumed);
  const CURLcode code = curl_easy_perform(curl);
  long status = 0;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_cleanup(curl);
  ASSERT_EQ(code, CURLE_OK) << curl_easy_strerror(code);
  ASSERT_EQ(status, 200);

  const int64_t hwm = StatusKib(pid, "VmHWM");
  EXPECT_EQ(consumed.lines, static_cast<size_t>(kRecords));
  EXPECT_EQ(consumed.duplicates, 0u);
  EXPECT_EQ(consumed.strangers, 0u);
  EXPECT_EQ(std::count(consumed.seen.begin(), consumed.seen.end(), true), kRecords);
  const int64_t growth_kib = hwm - rss_before;
  std::printf(
      "ledger export of %d records: daemon RSS %lld KiB before, peak %lld KiB (+%lld KiB)\n",
      kRecords, static_cast<long long>(rss_before), static_cast<long long>(hwm),
      static_cast<long long>(growth_kib));
  EXPECT_LT(growth_kib, 64 * 1024);
}

}  // namespace
}  // namespace tokenmill::testing
