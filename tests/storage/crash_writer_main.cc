// Child process of the crash-recovery tests: writes usage batches to a store
// until it is killed, reporting each batch that AddUsage acknowledged.
//
//   store_crash_writer DIR process|power REPORT_FD MAX_BATCHES
//
// Every batch adds kBatchDelta to each of the keys of CrashWriterKeys() in one
// AddUsage call; after it returns ok, the batch count (u64, host order) is
// written to REPORT_FD. Exit codes: 0 all batches written, 2 usage, 3 store
// error, 4 report pipe error.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "storage/meter_store.h"
#include "tests/storage/crash_writer.h"

int main(int argc, char** argv) {
  using namespace tokenmill::storage;
  if (argc != 5) {
    std::fprintf(stderr, "usage: %s DIR process|power REPORT_FD MAX_BATCHES\n", argv[0]);
    return 2;
  }
  MeterStoreOptions options;
  options.dir = argv[1];
  options.durability =
      std::string_view(argv[2]) == "power" ? Durability::kPower : Durability::kProcess;
  const int report_fd = std::atoi(argv[3]);
  const uint64_t max_batches = std::strtoull(argv[4], nullptr, 10);

  auto store = MeterStore::Open(options);
  if (!store.ok()) {
    std::fprintf(stderr, "open: %s\n", std::string(store.status().message()).c_str());
    return 3;
  }
  std::vector<UsageDelta> batch;
  for (const UsageKey& key : testing::CrashWriterKeys())
    batch.push_back({key, testing::kBatchDelta});
  for (uint64_t written = 1; written <= max_batches; ++written) {
    if (absl::Status s = (*store)->AddUsage(batch); !s.ok()) {
      std::fprintf(stderr, "add_usage: %s\n", std::string(s.message()).c_str());
      return 3;
    }
    if (::write(report_fd, &written, sizeof(written)) != sizeof(written)) return 4;
  }
  return 0;
}
