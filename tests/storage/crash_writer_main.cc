// Child process of the crash-recovery tests: writes to a store until it is
// killed, reporting each write that the store acknowledged.
//
//   store_crash_writer DIR process|power REPORT_FD MAX_BATCHES [usage|steps]
//
// usage (default): every batch adds kBatchDelta to each of the keys of
// CrashWriterKeys() in one step of usage only (RecordStep).
// steps: every batch is a RecordStep of kStepRequests requests (crash_writer.h),
// then a FinishRequest for each request that reached its length, whose ledger
// record holds its totals (ledger_json.h).
// After a batch is acknowledged, the batch count (u64, host order) is written
// to REPORT_FD. Exit codes: 0 all batches written, 2 usage, 3 store error,
// 4 report pipe error.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "storage/meter_store.h"
#include "tests/storage/crash_writer.h"
#include "tests/storage/ledger_json.h"
#include "tests/support/store_reads.h"

namespace {

using namespace tokenmill::storage;

int Fail(const char* what, const absl::Status& status) {
  std::fprintf(stderr, "%s: %s\n", what, std::string(status.message()).c_str());
  return 3;
}

bool Report(int fd, uint64_t written) {
  return ::write(fd, &written, sizeof(written)) == sizeof(written);
}

int WriteUsage(MeterStore& store, int report_fd, uint64_t max_batches) {
  std::vector<UsageDelta> batch;
  for (const UsageKey& key : testing::CrashWriterKeys())
    batch.push_back({key, testing::kBatchDelta});
  for (uint64_t written = 1; written <= max_batches; ++written) {
    if (absl::Status s = ::tokenmill::testing::AddUsage(store, batch); !s.ok())
      return Fail("record_step", s);
    if (!Report(report_fd, written)) return 4;
  }
  return 0;
}

// A request in flight in the steps mode.
struct Running {
  uint64_t n = 0;
  uint64_t steps = 0;
  UsageCounters totals;
};

int WriteSteps(MeterStore& store, int report_fd, uint64_t max_batches) {
  std::vector<Running> running;
  uint64_t next = 0;
  for (uint64_t written = 1; written <= max_batches; ++written) {
    while (running.size() < testing::kStepRequests) running.push_back({next++, 0, {}});
    StepRecord step;
    for (Running& r : running) {
      RequestProgress p;
      p.request_id = testing::StepRequestId(r.n);
      p.tenant = testing::StepRequestTenant(r.n);
      p.model = "llama";
      p.device = "cuda:0";
      p.delta = testing::StepRequestDelta(r.n, r.steps);
      r.totals += p.delta;
      ++r.steps;
      UsageDelta* usage = nullptr;  // the step's usage is aggregated per tenant
      for (UsageDelta& d : step.usage) {
        if (d.key.tenant == p.tenant) usage = &d;
      }
      if (usage == nullptr) {
        step.usage.push_back({{p.tenant, p.model, p.device, testing::kStepHour}, {}});
        usage = &step.usage.back();
        usage->counters.device_ns = 20'000'000;
      }
      usage->counters += p.delta;
      step.requests.push_back(std::move(p));
    }
    if (absl::Status s = store.RecordStep(step); !s.ok()) return Fail("record_step", s);
    std::vector<Running> still;
    for (Running& r : running) {
      if (r.steps < testing::StepRequestLength(r.n)) {
        still.push_back(r);
        continue;
      }
      UsageCounters one;
      one.requests = 1;
      const std::string id = testing::StepRequestId(r.n);
      const std::string tenant = testing::StepRequestTenant(r.n);
      auto done = store.FinishRequest(id, testing::LedgerJson(id, r.totals, "length"),
                                      {{{tenant, "llama", "cuda:0", testing::kStepHour}, one}});
      if (!done.ok()) return Fail("finish_request", done.status());
      if (!*done) return Fail("finish_request", absl::InternalError(id + " already in the ledger"));
    }
    running.swap(still);
    if (!Report(report_fd, written)) return 4;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5 && argc != 6) {
    std::fprintf(stderr, "usage: %s DIR process|power REPORT_FD MAX_BATCHES [usage|steps]\n",
                 argv[0]);
    return 2;
  }
  MeterStoreOptions options;
  options.dir = argv[1];
  options.durability =
      std::string_view(argv[2]) == "power" ? Durability::kPower : Durability::kProcess;
  const int report_fd = std::atoi(argv[3]);
  const uint64_t max_batches = std::strtoull(argv[4], nullptr, 10);
  const std::string_view mode = argc == 6 ? argv[5] : "usage";
  if (mode != "usage" && mode != "steps") return 2;

  auto store = MeterStore::Open(options);
  if (!store.ok()) return Fail("open", store.status());
  return mode == "steps" ? WriteSteps(**store, report_fd, max_batches)
                         : WriteUsage(**store, report_fd, max_batches);
}
