// The metering store against what an operator's machine does to it, through
// the real daemon: a write-ahead log damaged, cut short or deleted after a
// kill -9 stops the start (exit 1, the file and offset named) until the loss
// is accepted with --accept-store-loss, which records it; a torn tail is
// tolerated. A disk that fills while clients stream (a real ENOSPC on a small
// tmpfs) ends the streams with an error event and [DONE], refuses new
// generations with 503 naming the data dir, keeps the daemon up, sends no
// token unrecorded, and the node writes again by itself once space is freed.
//
// The disk-full test mounts a tmpfs, which needs root (CI runs the suite as
// root): without the permission it fails, it does not skip.
#include <signal.h>
#include <sys/mount.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/model/synth.h"
#include "storage/meter_store.h"
#include "tests/integration/daemon_process.h"
#include "tests/support/store_reads.h"
#include "tests/support/temp_dir.h"
#include "tests/support/tiny_model.h"

namespace tokenmill::testing {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

class StoreSafetyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model_path_ = dir_.path() / "tiny.gguf";
    ASSERT_TRUE(
        model::WriteSynthGguf(TinyModelShape(devices::TensorType::kF16, 512, 4096), model_path_)
            .ok());
    options_.api_toml = "tcp = \"127.0.0.1:0\"\n";
    options_.extra_toml = absl::StrCat(
        "[[device]]\nmatch = \"cpu\"\nkv_memory = \"64MiB\"\n\n"
        "[[model]]\nid = \"tiny\"\npath = \"",
        model_path_.string(), "\"\nmax_seqs = 16\n");
  }

  std::unique_ptr<DaemonProcess> StartDaemon(std::vector<std::string> extra_args = {}) {
    DaemonOptions o = options_;
    o.extra_args = std::move(extra_args);
    auto d = std::make_unique<DaemonProcess>(dir_.path(), o);
    EXPECT_TRUE(d->Start()) << d->Stderr();
    EXPECT_TRUE(d->WaitModelReady("tiny")) << d->Stderr();
    port_ = d->ApiTcpPort();
    return d;
  }

  CurlResult Post(const json& body, const std::string& request_id, long timeout_ms = 60000) {
    return CurlRequest(
        absl::StrCat("http://127.0.0.1:", port_, "/v1/completions"), "", "POST", body.dump(),
        {"Content-Type: application/json", "X-Request-Id: " + request_id}, timeout_ms);
  }

  std::filesystem::path DataDir() const {
    return options_.data_dir.empty() ? dir_.path() / "data" : options_.data_dir;
  }

  // The WAL files of the data dir, largest number (the live one) last.
  std::vector<std::filesystem::path> WalFiles() const {
    std::vector<std::filesystem::path> out;
    for (const auto& e : std::filesystem::directory_iterator(DataDir() / "meter")) {
      if (e.path().extension() == ".log") out.push_back(e.path());
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  // Usage written by a daemon, then kill -9: the WAL holds it, no table does.
  void WriteUsageAndKill(int requests) {
    auto daemon = StartDaemon();
    for (int i = 0; i < requests; ++i) {
      auto r = Post({{"model", "tiny"},
                     {"prompt", absl::StrCat("usage ", i)},
                     {"max_tokens", 8},
                     {"ignore_eos", true}},
                    absl::StrCat("wal-", i));
      ASSERT_EQ(r.status, 200) << r.body;
    }
    ASSERT_TRUE(daemon->process().Signal(SIGKILL));
    daemon->process().Wait(std::chrono::seconds(10));
  }

  // Starts a daemon that must refuse to start; returns its stderr.
  std::string ExpectRefused() {
    DaemonProcess refused(dir_.path(), options_);
    EXPECT_FALSE(refused.Start()) << refused.Stderr();
    EXPECT_EQ(refused.process().Wait(std::chrono::seconds(30)), 1);
    const std::string err = refused.Stderr();
    const size_t line = err.find("tokenmilld: cannot start");
    std::printf("%s", line == std::string::npos ? err.c_str() : err.substr(line).c_str());
    return err;
  }

  // Starts with --accept-store-loss and checks the loss is in the log, the
  // counter and /control/v1/node; returns the node's store object.
  json ExpectAcceptedLoss(const std::string& file) {
    auto daemon = StartDaemon({"--accept-store-loss"});
    EXPECT_THAT(daemon->Stderr(), HasSubstr("store_loss_accepted"));
    EXPECT_THAT(daemon->Stderr(), HasSubstr(file));
    const json node = json::parse(daemon->Control("GET", "/control/v1/node").body);
    const json store = node["store"];
    EXPECT_EQ(store["accepted_losses"], 1) << store.dump();
    EXPECT_EQ(store["last_accepted_loss"]["file"], file) << store.dump();
    EXPECT_GT(store["last_accepted_loss"]["lost_writes"].get<uint64_t>(), 0u) << store.dump();
    const auto metrics =
        CurlRequest(absl::StrCat("http://", daemon->MetricsAddress(), "/metrics"), "");
    EXPECT_THAT(metrics.body, HasSubstr("tokenmill_store_accepted_losses_total 1"));
    // The node serves and meters again.
    EXPECT_EQ(Post({{"model", "tiny"}, {"prompt", "after"}, {"max_tokens", 4}}, "after").status,
              200);
    EXPECT_EQ(daemon->Stop(), 0);
    daemon.reset();  // frees its notify socket for the restart
    // The loss stays on record; a start without the flag now succeeds.
    auto again = StartDaemon();
    const json later = json::parse(again->Control("GET", "/control/v1/node").body)["store"];
    EXPECT_EQ(later["accepted_losses"], 1) << later.dump();
    EXPECT_EQ(later["last_accepted_loss"]["file"], file) << later.dump();
    EXPECT_EQ(again->Stop(), 0);
    return store;
  }

  TempDir dir_;
  std::filesystem::path model_path_;
  DaemonOptions options_;
  std::string port_;
};

TEST_F(StoreSafetyTest, GarbledWalNearItsStartStopsTheStartUntilTheLossIsAccepted) {
  WriteUsageAndKill(6);
  const auto wals = WalFiles();
  ASSERT_FALSE(wals.empty());
  const std::filesystem::path wal = wals.back();
  ASSERT_GT(std::filesystem::file_size(wal), 200u);
  {
    std::fstream f(wal, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(24);
    const std::string garbage(16, '\x5a');
    f.write(garbage.data(), static_cast<std::streamsize>(garbage.size()));
  }
  const std::string err = ExpectRefused();
  EXPECT_THAT(err, HasSubstr(wal.string()));
  EXPECT_THAT(err, HasSubstr("damaged at byte offset 0"));
  EXPECT_THAT(err, HasSubstr("--accept-store-loss"));
  const json store = ExpectAcceptedLoss(wal.string());
  EXPECT_EQ(store["last_accepted_loss"]["kind"], "damaged");
  EXPECT_EQ(store["last_accepted_loss"]["offset"], 0);
  // The damaged file is kept for a post-mortem.
  const std::string copy = store["last_accepted_loss"]["saved_copy"];
  EXPECT_TRUE(std::filesystem::exists(copy)) << copy;
}

TEST_F(StoreSafetyTest, WalCutToHalfStopsTheStartUntilTheLossIsAccepted) {
  WriteUsageAndKill(6);
  const auto wals = WalFiles();
  ASSERT_FALSE(wals.empty());
  const std::filesystem::path wal = wals.back();
  const uintmax_t size = std::filesystem::file_size(wal);
  ASSERT_GT(size, 200u);
  std::filesystem::resize_file(wal, size / 2);
  const std::string err = ExpectRefused();
  EXPECT_THAT(err, HasSubstr(wal.string()));
  EXPECT_THAT(err, HasSubstr("cut short"));
  EXPECT_THAT(err, HasSubstr("byte offset"));
  const json store = ExpectAcceptedLoss(wal.string());
  EXPECT_EQ(store["last_accepted_loss"]["kind"], "truncated");
  EXPECT_LE(store["last_accepted_loss"]["offset"].get<int64_t>(), static_cast<int64_t>(size / 2));
}

TEST_F(StoreSafetyTest, DeletedWalStopsTheStartUntilTheLossIsAccepted) {
  WriteUsageAndKill(6);
  const auto wals = WalFiles();
  ASSERT_FALSE(wals.empty());
  const std::filesystem::path wal = wals.back();
  ASSERT_GT(std::filesystem::file_size(wal), 200u);
  std::filesystem::remove(wal);
  const std::string err = ExpectRefused();
  EXPECT_THAT(err, HasSubstr(wal.string()));
  EXPECT_THAT(err, HasSubstr("is missing"));
  const json store = ExpectAcceptedLoss(wal.string());
  EXPECT_EQ(store["last_accepted_loss"]["kind"], "missing");
}

TEST_F(StoreSafetyTest, TornTailIsTolerated) {
  WriteUsageAndKill(6);
  const auto wals = WalFiles();
  ASSERT_FALSE(wals.empty());
  const std::filesystem::path wal = wals.back();
  const uintmax_t size = std::filesystem::file_size(wal);
  ASSERT_GT(size, 200u);
  std::filesystem::resize_file(wal, size - 3);
  auto daemon = StartDaemon();
  EXPECT_THAT(daemon->Stderr(), HasSubstr("store_wal_torn_tail"));
  EXPECT_THAT(daemon->Stderr(), ::testing::Not(HasSubstr("store_loss_accepted")));
  const json store = json::parse(daemon->Control("GET", "/control/v1/node").body)["store"];
  EXPECT_EQ(store["accepted_losses"], 0) << store.dump();
  EXPECT_EQ(daemon->Stop(), 0);
}

// A tmpfs mounted for one test, unmounted (lazily) when it goes.
class SmallFilesystem {
 public:
  SmallFilesystem(const std::filesystem::path& dir, const std::string& size) : dir_(dir) {
    std::filesystem::create_directories(dir);
    const std::string options = "size=" + size + ",mode=0700";
    if (::mount("tokenmill-test", dir.c_str(), "tmpfs", 0, options.c_str()) != 0) {
      error_ = std::strerror(errno);
      return;
    }
    mounted_ = true;
  }
  ~SmallFilesystem() {
    if (mounted_) ::umount2(dir_.c_str(), MNT_DETACH);
  }
  bool mounted() const { return mounted_; }
  const std::string& error() const { return error_; }

 private:
  std::filesystem::path dir_;
  bool mounted_ = false;
  std::string error_;
};

// Writes to path until the filesystem is full; returns the bytes written.
uintmax_t FillDisk(const std::filesystem::path& path) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return 0;
  std::setvbuf(f, nullptr, _IONBF, 0);
  const std::string chunk(64 << 10, 'x');
  uintmax_t written = 0;
  for (;;) {
    const size_t n = std::fwrite(chunk.data(), 1, chunk.size(), f);
    written += n;
    if (n < chunk.size()) break;
  }
  // Single bytes into the last partial page.
  while (std::fwrite("x", 1, 1, f) == 1) ++written;
  std::fclose(f);
  return written;
}

// Tokens a streamed completion delivered (one logprobs entry per token).
int64_t TokensReceived(const std::string& body) {
  int64_t n = 0;
  size_t pos = 0;
  while ((pos = body.find("data: ", pos)) != std::string::npos) {
    const size_t end = body.find("\n\n", pos);
    if (end == std::string::npos) break;
    const json j = json::parse(body.substr(pos + 6, end - pos - 6), nullptr, false);
    pos = end + 2;
    if (j.is_discarded() || !j.contains("choices") || j["choices"].empty()) continue;
    const json& lp = j["choices"][0]["logprobs"];
    if (lp.is_object() && lp.contains("tokens")) n += static_cast<int64_t>(lp["tokens"].size());
  }
  return n;
}

std::string StreamId(const std::string& body) {
  const size_t pos = body.find("data: ");
  if (pos == std::string::npos) return "";
  const size_t end = body.find("\n\n", pos);
  if (end == std::string::npos) return "";
  const json j = json::parse(body.substr(pos + 6, end - pos - 6), nullptr, false);
  if (j.is_discarded() || !j.contains("id")) return "";
  const std::string id = j["id"];
  return id.starts_with("cmpl-") ? id.substr(5) : "";
}

TEST_F(StoreSafetyTest, FullDiskEndsStreamsWithAnErrorRefusesNewWorkAndRecovers) {
  const std::filesystem::path mount_dir = dir_.path() / "small-disk";
  SmallFilesystem disk(mount_dir, "8m");
  ASSERT_TRUE(disk.mounted()) << "mount -t tmpfs on " << mount_dir << " failed: " << disk.error()
                              << ". This test needs root (CI runs it as root) for a real ENOSPC.";
  options_.data_dir = mount_dir / "data";
  auto daemon = StartDaemon();

  constexpr int kClients = 8;
  std::vector<std::string> bodies(kClients);
  std::vector<std::thread> threads;
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&, i] {
      bodies[i] = Post({{"model", "tiny"},
                        {"prompt", absl::StrCat("fill ", i)},
                        {"max_tokens", 4000},
                        {"ignore_eos", true},
                        {"logprobs", 1},
                        {"stream", true}},
                       absl::StrCat("full-", i), 120000)
                      .body;
    });
  }
  ASSERT_TRUE(WaitUntil(
      [&] {
        const json j =
            json::parse(daemon->Control("GET", "/control/v1/models/tiny").body, nullptr, false);
        return !j.is_discarded() && j["stats"].value("generated_tokens", 0) >= 200;
      },
      std::chrono::seconds(60)));

  const std::filesystem::path filler = mount_dir / "filler";
  ASSERT_GT(FillDisk(filler), 0u);
  for (auto& t : threads) t.join();

  // Every stream ended: with an error event naming the disk, then [DONE].
  int failed_streams = 0;
  for (int i = 0; i < kClients; ++i) {
    const std::string& body = bodies[i];
    ASSERT_TRUE(body.ends_with("data: [DONE]\n\n"))
        << "stream " << i << " ends: " << body.substr(body.size() > 300 ? body.size() - 300 : 0);
    if (body.find("\"error\"") != std::string::npos) {
      ++failed_streams;
      EXPECT_THAT(body, HasSubstr(options_.data_dir.string()));
      EXPECT_THAT(body, HasSubstr("full"));
    }
  }
  EXPECT_GT(failed_streams, 0) << "the disk filled after every stream had finished";
  std::printf("%d of %d streams ended with the store's error event and [DONE]\n", failed_streams,
              kClients);

  // While full: the daemon stays up and says why it refuses new work.
  EXPECT_TRUE(daemon->process().running());
  EXPECT_EQ(daemon->Control("GET", "/healthz").status, 200);
  const auto refused =
      Post({{"model", "tiny"}, {"prompt", "no room"}, {"max_tokens", 4}}, "no-room");
  EXPECT_EQ(refused.status, 503) << refused.body;
  EXPECT_THAT(refused.body, HasSubstr(options_.data_dir.string()));
  EXPECT_THAT(refused.body, HasSubstr("full"));
  std::printf("while full: %ld %s\n", refused.status, refused.body.c_str());
  const json full_store = json::parse(daemon->Control("GET", "/control/v1/node").body)["store"];
  EXPECT_EQ(full_store["writable"], false) << full_store.dump();
  EXPECT_THAT(daemon->Stderr(), HasSubstr("store_unwritable"));

  // Space freed: the store resumes by itself and new work is served and metered.
  std::filesystem::remove(filler);
  ASSERT_TRUE(WaitUntil(
      [&] {
        const json j = json::parse(daemon->Control("GET", "/control/v1/node").body, nullptr, false);
        return !j.is_discarded() && j["store"]["writable"] == true;
      },
      std::chrono::seconds(30)))
      << daemon->Stderr();
  EXPECT_THAT(daemon->Stderr(), HasSubstr("store_writable_again"));
  const auto after =
      Post({{"model", "tiny"}, {"prompt", "room again"}, {"max_tokens", 6}, {"ignore_eos", true}},
           "room-again");
  ASSERT_EQ(after.status, 200) << after.body;
  const std::string after_id = json::parse(after.body)["id"].get<std::string>().substr(5);
  EXPECT_TRUE(daemon->process().running());
  ASSERT_EQ(daemon->Stop(), 0) << daemon->Stderr();
  EXPECT_THAT(daemon->Stderr(), HasSubstr("ledger_writes_retried"));
  daemon.reset();

  // The ledger records the full disk held back were written once it had
  // room: every token a client received is in the ledger, without a restart.
  storage::MeterStoreOptions o;
  o.dir = options_.data_dir;
  auto store = storage::MeterStore::Open(o);
  ASSERT_TRUE(store.ok()) << store.status();
  std::map<std::string, json> ledger;
  ASSERT_TRUE(::tokenmill::testing::ForEachLedgerRecord(*(*store), [&](std::string_view id,
                                                                       std::string_view record) {
                ledger[std::string(id)] = json::parse(record);
                return true;
              }).ok());
  for (int i = 0; i < kClients; ++i) {
    const int64_t received = TokensReceived(bodies[i]);
    if (received == 0) continue;
    const std::string id = StreamId(bodies[i]);
    ASSERT_TRUE(ledger.contains(id)) << "full-" << i << " (" << id << ") is not in the ledger";
    EXPECT_GE(ledger.at(id)["generated_tokens"].get<int64_t>(), received) << id;
  }
  ASSERT_TRUE(ledger.contains(after_id));
  EXPECT_EQ(ledger.at(after_id)["generated_tokens"], 6);
}

}  // namespace
}  // namespace tokenmill::testing
