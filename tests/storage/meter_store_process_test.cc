// MeterStore across processes: data dir ownership and recovery after a
// SIGKILL in the middle of writing usage, or steps and request ends.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "gtest/gtest.h"
#include "storage/meter_store.h"
#include "tests/storage/crash_writer.h"
#include "tests/storage/ledger_json.h"
#include "tests/storage/temp_dir.h"
#include "tests/support/store_reads.h"

namespace tokenmill::storage {
namespace {

// A pipe whose ends close themselves.
struct Pipe {
  Pipe() { EXPECT_EQ(::pipe2(fds, O_CLOEXEC), 0); }
  ~Pipe() {
    CloseRead();
    CloseWrite();
  }
  void CloseRead() {
    if (fds[0] >= 0) ::close(fds[0]);
    fds[0] = -1;
  }
  void CloseWrite() {
    if (fds[1] >= 0) ::close(fds[1]);
    fds[1] = -1;
  }
  int fds[2] = {-1, -1};
};

std::string ReadAll(int fd) {
  std::string out;
  char buf[256];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof(buf))) != 0) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

int WaitForExit(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return status;
}

TEST(MeterStoreProcessTest, SecondProcessIsRefusedWithTheOwnersPid) {
  testing::TempDir tmp;
  MeterStoreOptions options;
  options.dir = tmp.path() / "data";
  auto owner = MeterStore::Open(options);
  ASSERT_TRUE(owner.ok()) << owner.status();

  Pipe pipe;
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // The child only takes the lock (and fails), so it never starts RocksDB
    // threads in a forked copy of this multithreaded process.
    auto second = MeterStore::Open(options);
    const std::string message(second.status().message());
    (void)!::write(pipe.fds[1], message.data(), message.size());
    ::_exit(second.ok()                                                       ? 1
            : second.status().code() == absl::StatusCode::kFailedPrecondition ? 0
                                                                              : 2);
  }
  pipe.CloseWrite();
  const std::string message = ReadAll(pipe.fds[0]);
  const int status = WaitForExit(child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << message;
  EXPECT_EQ(message, "data dir " + options.dir.string() + " is in use by another tokenmilld (pid " +
                         std::to_string(::getpid()) + ")");
  EXPECT_TRUE((*owner)->PutState("still", "mine").ok());
}

UsageCounters Times(const UsageCounters& c, uint64_t n) {
  UsageCounters sum;
  for (uint64_t i = 0; i < n; ++i) sum += c;
  return sum;
}

// Runs the crash writer (crash_writer_main.cc) in mode on dir until it has
// reported kill_after acknowledged batches, SIGKILLs it and returns how many
// batches it reported in all (0 after a failed assertion). The child runs in
// a fresh exec'ed process: RocksDB's thread pools do not survive fork(), and
// a forked child would inherit their locks.
void RunWriterUntilKilled(const std::filesystem::path& dir, Durability durability, const char* mode,
                          uint64_t kill_after, uint64_t* reported_out) {
  *reported_out = 0;
  const bool power = durability == Durability::kPower;
  Pipe pipe;
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    constexpr int kReportFd = 3;
    if (pipe.fds[1] == kReportFd) {
      ::fcntl(kReportFd, F_SETFD, 0);
    } else if (::dup2(pipe.fds[1], kReportFd) < 0) {
      ::_exit(126);
    }
    const std::string dir_arg = dir.string();
    const char* args[] = {STORE_CRASH_WRITER,
                          dir_arg.c_str(),
                          power ? "power" : "process",
                          "3",
                          "100000000",
                          mode,
                          nullptr};
    ::execv(STORE_CRASH_WRITER, const_cast<char* const*>(args));
    ::_exit(127);
  }
  pipe.CloseWrite();

  uint64_t reported = 0;
  auto read_report = [&]() {
    uint64_t value = 0;
    size_t got = 0;
    while (got < sizeof(value)) {
      const ssize_t n =
          ::read(pipe.fds[0], reinterpret_cast<char*>(&value) + got, sizeof(value) - got);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      got += static_cast<size_t>(n);
    }
    reported = value;
    return true;
  };
  while (reported < kill_after) {
    pollfd pfd{pipe.fds[0], POLLIN, 0};
    if (::poll(&pfd, 1, 30'000) <= 0 || !read_report()) break;
  }
  ::kill(child, SIGKILL);
  while (read_report()) {  // reports already in the pipe were acknowledged too
  }
  const int status = WaitForExit(child);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
      << "writer exited on its own with status " << status;
  ASSERT_GE(reported, kill_after);
  *reported_out = reported;
}

class CrashRecoveryTest : public ::testing::TestWithParam<Durability> {};

TEST_P(CrashRecoveryTest, KilledWriterLosesNoAcknowledgedBatch) {
  testing::TempDir tmp;
  const std::filesystem::path dir = tmp.path() / "data";
  // Enough batches that the kill lands mid-stream, few enough for fsync'ing disks.
  const uint64_t kill_after = GetParam() == Durability::kPower ? 100 : 400;
  uint64_t reported = 0;
  ASSERT_NO_FATAL_FAILURE(RunWriterUntilKilled(dir, GetParam(), "usage", kill_after, &reported));

  MeterStoreOptions options;
  options.dir = dir;
  auto store = MeterStore::Open(options);
  ASSERT_TRUE(store.ok()) << store.status();
  std::vector<UsageDelta> all;
  for (const UsageKey& key : testing::CrashWriterKeys()) {
    auto usage = ::tokenmill::testing::UsageAt(*(*store), key);
    ASSERT_TRUE(usage.ok() && usage->has_value()) << usage.status();
    const uint64_t batches = (*usage)->requests;
    // Every key of a batch or none (atomic batch), whole deltas only, and at
    // least what was acknowledged (at most one more: written, not reported).
    EXPECT_EQ(**usage, Times(testing::kBatchDelta, batches));
    EXPECT_GE(batches, reported);
    EXPECT_LE(batches, reported + 1);
    all.push_back({key, **usage});
  }
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].counters, all[1].counters);
  EXPECT_EQ(all[0].counters, all[2].counters);
}

// Steps and request ends, killed mid-stream: after recovery every request
// is in the ledger once and the ledger sums to usage.
TEST_P(CrashRecoveryTest, KilledStepWriterRecoversEveryRequestOnce) {
  testing::TempDir tmp;
  const std::filesystem::path dir = tmp.path() / "data";
  const uint64_t kill_after = GetParam() == Durability::kPower ? 40 : 300;
  uint64_t reported = 0;
  ASSERT_NO_FATAL_FAILURE(RunWriterUntilKilled(dir, GetParam(), "steps", kill_after, &reported));

  MeterStoreOptions options;
  options.dir = dir;
  auto opened = MeterStore::Open(options);
  ASSERT_TRUE(opened.ok()) << opened.status();
  MeterStore& store = **opened;
  auto recovered = store.RecoverInterrupted([](const InterruptedRequest& r) {
    return testing::LedgerJson(r.request_id, r.counters, "interrupted");
  });
  ASSERT_TRUE(recovered.ok()) << recovered.status();
  RecordProperty("recovered", static_cast<int>(*recovered));
  RecordProperty("reported_steps", static_cast<int>(reported));
  // At most the requests of one step were in flight (the sums below fail
  // if recovery missed any of them).
  EXPECT_LE(*recovered, testing::kStepRequests);

  UsageCounters usage;
  auto rows = ::tokenmill::testing::UsageDeltas(store, {});
  ASSERT_TRUE(rows.ok()) << rows.status();
  for (const UsageDelta& row : *rows) usage += row.counters;
  UsageCounters ledger;
  size_t records = 0;
  size_t interrupted = 0;
  ASSERT_TRUE(::tokenmill::testing::ForEachLedgerRecord(store, [&](std::string_view id,
                                                                   std::string_view record) {
                const UsageCounters c = testing::LedgerCounters(record);
                EXPECT_EQ(c.requests, 1u) << id << ": " << record;
                // A request's tokens never exceed its length: none counted twice.
                const uint64_t n = std::stoull(std::string(id.substr(4)));
                EXPECT_LE(c.generated_tokens, testing::StepRequestLength(n)) << id;
                EXPECT_GE(c.generated_tokens, 1u) << id;
                if (record.find("interrupted") != std::string_view::npos) ++interrupted;
                ledger += c;
                ++records;
                return true;
              }).ok());
  EXPECT_EQ(interrupted, *recovered);
  EXPECT_EQ(usage.requests, records);
  EXPECT_EQ(testing::LedgerFields(usage), ledger);
  // Every step carries kStepRequests tokens; acknowledged steps are all there
  // (at most one more: written, not reported).
  EXPECT_GE(usage.generated_tokens, reported * testing::kStepRequests);
  EXPECT_LE(usage.generated_tokens, (reported + 1) * testing::kStepRequests);
  EXPECT_EQ(store.InflightTotal(), UsageCounters{});
  auto again = store.RecoverInterrupted([](const InterruptedRequest&) { return "{}"; });
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(*again, 0u);
}

INSTANTIATE_TEST_SUITE_P(Durabilities, CrashRecoveryTest,
                         ::testing::Values(Durability::kProcess, Durability::kPower),
                         [](const ::testing::TestParamInfo<Durability>& info) {
                           return info.param == Durability::kPower ? "Power" : "Process";
                         });

}  // namespace
}  // namespace tokenmill::storage
