// MeterStore: opening the database, the check of its write-ahead log against
// the WAL marker (meter_store.h, "Integrity at open") and accepted losses.
#include <algorithm>
#include <chrono>
#include <string>
#include <system_error>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "rocksdb/memtablerep.h"
#include "rocksdb/transaction_log.h"
#include "storage/inflight_entry.h"
#include "storage/meter_store.h"
#include "storage/meter_store_impl.h"
#include "storage/store_integrity.h"
#include "storage/store_layout.h"
#include "storage/usage_merge_operator.h"

namespace tokenmill::storage {
namespace {

using nlohmann::json;

constexpr std::string_view kLossPrefix = "store/loss/";

rocksdb::DBOptions MakeDbOptions(std::shared_ptr<rocksdb::Logger> logger,
                                 std::shared_ptr<rocksdb::EventListener> listener,
                                 rocksdb::WALRecoveryMode mode) {
  rocksdb::DBOptions options;
  options.create_if_missing = true;
  options.create_missing_column_families = true;
  // One node's meter: a few hundred SST files at most.
  options.max_open_files = 256;
  // RocksDB's info log goes to the daemon's log, never to a LOG file in the
  // data dir: on a full disk Debian's RocksDB asserts on its own failed log
  // write (its build keeps assertions).
  options.info_log = std::move(logger);
  options.listeners = {std::move(listener)};
  // The store's resumer is the one recovery from background errors; it
  // checks its success with a write (StoreEventListener turns off the other).
  options.max_bgerror_resume_count = 0;
  // The ledger and state families are written rarely; without a cap their
  // small memtables would keep old WAL files alive for a long time.
  options.max_total_wal_size = 128 << 20;
  // A crash leaves at most a torn tail in the WAL: recover up to it, but
  // refuse to open past damage before the tail (kPointInTimeRecovery, the
  // default, would stop there silently). The WAL marker catches what this
  // cannot see: a WAL cut at a record boundary or deleted.
  options.wal_recovery_mode = mode;
  // The inflight family's vector memtable does not take concurrent inserts;
  // writers still group-commit, one of them applying the group's batches.
  options.allow_concurrent_memtable_write = false;
  return options;
}

std::vector<rocksdb::ColumnFamilyDescriptor> Families() {
  rocksdb::ColumnFamilyOptions usage_options;
  usage_options.merge_operator = std::make_shared<UsageAddOperator>();
  rocksdb::ColumnFamilyOptions inflight_options;
  inflight_options.merge_operator = std::make_shared<InflightAddOperator>();
  // Every step appends one merge operand per running request, and the family
  // is read only at start-up (recovery): a vector memtable appends in O(1)
  // and sorts once at flush, where a skip list would pay a search of a
  // memtable of ~10^5 operands per request per step.
  inflight_options.memtable_factory = std::make_shared<rocksdb::VectorRepFactory>();
  return {
      {rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions()},
      {std::string(kUsageFamily), usage_options},
      {std::string(kLedgerFamily), rocksdb::ColumnFamilyOptions()},
      {std::string(kStateFamily), rocksdb::ColumnFamilyOptions()},
      {std::string(kInflightFamily), inflight_options},
      {std::string(kLedgerSeqFamily), rocksdb::ColumnFamilyOptions()},
  };
}

// The latest sequence number the database would recover, learnt from a
// read-only open that changes no file.
rocksdb::Status ProbeSequence(const rocksdb::DBOptions& options, const std::string& path,
                              uint64_t* sequence) {
  // A read-only open must name exactly the families the database has: a
  // store from before a family was added lacks it until the next Open.
  std::vector<std::string> present;
  rocksdb::Status s = rocksdb::DB::ListColumnFamilies(options, path, &present);
  if (!s.ok()) return s;
  std::vector<rocksdb::ColumnFamilyDescriptor> families;
  for (rocksdb::ColumnFamilyDescriptor& d : Families()) {
    if (std::find(present.begin(), present.end(), d.name) != present.end()) {
      families.push_back(std::move(d));
    }
  }
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  s = rocksdb::DB::OpenForReadOnly(options, path, families, &handles, &raw);
  if (!s.ok()) return s;
  *sequence = raw->GetLatestSequenceNumber();
  for (auto* h : handles) (void)raw->DestroyColumnFamilyHandle(h);
  s = raw->Close();
  delete raw;
  return s;
}

std::string LossJson(const StoreLoss& l) {
  return json{{"at_unix_ms", l.at_unix_ms},
              {"file", l.file},
              {"offset", l.offset},
              {"kind", l.kind},
              {"detail", l.detail},
              {"expected_sequence", l.expected_sequence},
              {"recovered_sequence", l.recovered_sequence},
              {"lost_writes", l.lost_writes},
              {"saved_copy", l.saved_copy}}
      .dump();
}

absl::StatusOr<StoreLoss> ParseLoss(std::string_view key, std::string_view text) {
  const json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::DataLossError(absl::StrCat("state ", std::string(key), " is not JSON"));
  }
  StoreLoss l;
  l.at_unix_ms = j.value("at_unix_ms", int64_t{0});
  l.file = j.value("file", "");
  l.offset = j.value("offset", int64_t{-1});
  l.kind = j.value("kind", "");
  l.detail = j.value("detail", "");
  l.expected_sequence = j.value("expected_sequence", uint64_t{0});
  l.recovered_sequence = j.value("recovered_sequence", uint64_t{0});
  l.lost_writes = j.value("lost_writes", uint64_t{0});
  l.saved_copy = j.value("saved_copy", "");
  return l;
}

// Keeps a copy of a damaged WAL in the data dir for a post-mortem; "" when
// it could not (logged: the copy is a courtesy, not a condition).
std::string SaveCopy(const MeterStoreOptions& options, const std::filesystem::path& file,
                     int64_t at_ms) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(file, ec)) return "";
  const std::filesystem::path copy =
      options.dir / absl::StrCat("lost-", at_ms, "-", file.filename().string());
  std::filesystem::copy_file(file, copy, ec);
  if (ec) {
    if (options.log) {
      options.log(StoreLogLevel::kWarn, absl::StrCat("store_loss_copy_failed file=", file.string(),
                                                     " error=\"", ec.message(), "\""));
    }
    return "";
  }
  return copy.string();
}

}  // namespace

absl::StatusOr<std::unique_ptr<MeterStore>> MeterStore::Open(const MeterStoreOptions& options) {
  if (options.dir.empty()) return absl::InvalidArgumentError("MeterStore needs a data dir");
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->write_options.sync = options.durability == Durability::kPower;
  impl->write_options.disableWAL = false;

  auto lock = DataDirLock::Acquire(options.dir);
  if (!lock.ok()) return impl->Fail(lock.status(), "open");
  impl->lock = *std::move(lock);

  impl->logger = std::make_shared<RocksLogger>(
      options.log,
      options.log_debug ? rocksdb::InfoLogLevel::DEBUG_LEVEL : rocksdb::InfoLogLevel::WARN_LEVEL);
  impl->listener = std::make_shared<StoreEventListener>();
  Impl* raw_impl = impl.get();
  impl->listener->on_error = [raw_impl](const rocksdb::Status& s) { raw_impl->EnterUnwritable(s); };
  impl->listener->on_wal_switch = [raw_impl] { raw_impl->wal_switched = true; };

  // What the last run acknowledged, and what the WAL files hold.
  const std::filesystem::path db_path = options.dir / kDbDirName;
  const std::filesystem::path marker_path = options.dir / kWalMarkerFileName;
  std::optional<WalFinding> finding;
  std::optional<WalMarker> expected;
  if (auto marker = ReadWalMarker(marker_path); !marker.ok()) {
    if (marker.status().code() != absl::StatusCode::kDataLoss) {
      return impl->Fail(marker.status(), "open");
    }
    finding = WalFinding{"damaged", marker_path, 0,
                         absl::StrCat(marker.status().message(),
                                      ": the store cannot tell whether its write-ahead log is "
                                      "complete")};
  } else {
    expected = *marker;
  }
  auto wals = ScanWalFiles(db_path);
  if (!wals.ok()) return impl->Fail(wals.status(), "open");
  for (const WalFile& w : *wals) {
    if (w.scan.end != WalScan::End::kIncomplete) continue;
    impl->Log(StoreLogLevel::kWarn,
              absl::StrCat("store_wal_torn_tail file=", w.path.string(),
                           " offset=", w.scan.problem_offset,
                           " bytes=", w.scan.file_size - w.scan.problem_offset,
                           " reason=\"a record cut off at the end, as a crash leaves\""));
  }
  if (!finding) finding = FindWalDamage(*wals);
  std::error_code ec;
  if (!finding && expected && expected->sequence > 0 &&
      !std::filesystem::exists(db_path / "CURRENT", ec)) {
    finding = WalFinding{"missing", db_path, -1,
                         absl::StrCat("the database ", db_path.string(),
                                      " is missing (no CURRENT file), but the store had "
                                      "acknowledged writes up to sequence ",
                                      expected->sequence)};
  }
  if (!finding && expected && MaxWalSequence(*wals) < expected->previous_sequence) {
    // The WAL files do not reach what was acknowledged: either it is flushed
    // into tables, or lost. Ask the database without changing it.
    uint64_t recovered = 0;
    const rocksdb::Status probed =
        ProbeSequence(MakeDbOptions(impl->logger, impl->listener,
                                    rocksdb::WALRecoveryMode::kTolerateCorruptedTailRecords),
                      db_path.string(), &recovered);
    if (probed.IsCorruption()) {
      finding = WalFinding{
          "damaged", db_path, -1,
          absl::StrCat("RocksDB cannot recover ", db_path.string(), ": ", probed.ToString(),
                       " (RocksDB names no offset, and the scan of the WAL "
                       "files found no damaged record)")};
    } else if (!probed.ok()) {
      return impl->Fail(FromRocks(probed, "open"), "open");
    } else if (recovered < expected->previous_sequence) {
      finding = DescribeWalLoss(db_path, *wals, *expected, recovered);
    }
  }
  if (finding && !options.accept_loss) {
    return impl->Fail(absl::DataLossError(absl::StrCat(
                          "the metering store lost acknowledged writes: ", finding->message)),
                      "open");
  }

  const int64_t now_ms = NowUnixMs();
  std::string saved_copy;
  if (finding && finding->kind == "damaged") saved_copy = SaveCopy(options, finding->file, now_ms);
  // Accepting a loss recovers up to the damage; failing that, around it.
  std::vector<rocksdb::WALRecoveryMode> modes = {
      rocksdb::WALRecoveryMode::kTolerateCorruptedTailRecords};
  if (options.accept_loss) {
    modes = {rocksdb::WALRecoveryMode::kPointInTimeRecovery,
             rocksdb::WALRecoveryMode::kSkipAnyCorruptedRecords};
    if (!finding)
      modes.insert(modes.begin(), rocksdb::WALRecoveryMode::kTolerateCorruptedTailRecords);
  }
  const auto families = Families();
  rocksdb::DB* raw_db = nullptr;
  rocksdb::Status opened;
  for (rocksdb::WALRecoveryMode mode : modes) {
    impl->handles.clear();
    opened = rocksdb::DB::Open(MakeDbOptions(impl->logger, impl->listener, mode), db_path.string(),
                               families, &impl->handles, &raw_db);
    if (!opened.IsCorruption()) break;
    if (!finding) {
      finding = WalFinding{
          "damaged", db_path, -1,
          absl::StrCat("RocksDB cannot recover ", db_path.string(), ": ", opened.ToString(),
                       " (RocksDB names no offset, and the scan of the WAL "
                       "files found no damaged record)")};
      if (!options.accept_loss) {
        return impl->Fail(absl::DataLossError(absl::StrCat(
                              "the metering store lost acknowledged writes: ", finding->message)),
                          "open");
      }
    }
  }
  if (!opened.ok()) {
    // Our flock is held, so whoever holds RocksDB's LOCK bypassed it (a tool,
    // or a raw DB in this process); its pid is unknown.
    if (opened.IsIOError() && absl::StrContains(opened.ToString(), "/LOCK")) {
      return impl->Fail(
          absl::FailedPreconditionError(absl::StrCat(DataDirInUseError(options.dir, 0).message(),
                                                     " (", opened.ToString(), ")")),
          "open");
    }
    return impl->Fail(FromRocks(opened, "open"), "open");
  }
  impl->db.reset(raw_db);
  impl->usage = impl->handles[1];
  impl->ledger = impl->handles[2];
  impl->state = impl->handles[3];
  impl->inflight = impl->handles[4];
  impl->ledger_seq = impl->handles[5];

  const uint64_t recovered = impl->db->GetLatestSequenceNumber();
  if (!finding && expected && recovered < expected->previous_sequence) {
    // The scan saw the sequences but RocksDB did not replay them.
    finding = DescribeWalLoss(db_path, *wals, *expected, recovered);
    if (!options.accept_loss) {
      return impl->Fail(absl::DataLossError(absl::StrCat(
                            "the metering store lost acknowledged writes: ", finding->message)),
                        "open");
    }
  }
  if (!finding && expected && recovered < expected->sequence) {
    impl->Log(StoreLogLevel::kWarn,
              absl::StrCat("store_wal_tail_dropped expected_sequence=", expected->sequence,
                           " recovered_sequence=", recovered,
                           " reason=\"the last write was torn by a crash\""));
  }

  // The marker starts from what the database holds now.
  auto marker_file = WalMarkerFile::Open(marker_path);
  if (!marker_file.ok()) return impl->Fail(marker_file.status(), "open");
  {
    absl::MutexLock hold(&impl->marker_mu);
    impl->marker_file = *std::move(marker_file);
    std::unique_ptr<rocksdb::LogFile> current;
    if (impl->db->GetCurrentWalFile(&current).ok() && current) {
      impl->marker.wal_number = current->LogNumber();
    }
    impl->marker.previous_sequence = recovered;
    impl->marker.sequence = recovered;
    if (absl::Status s = impl->marker_file->WriteAndSync(impl->marker); !s.ok()) {
      return impl->Fail(s, "open");
    }
  }

  if (finding) {
    StoreLoss loss;
    loss.at_unix_ms = now_ms;
    loss.file = finding->file.string();
    loss.offset = finding->offset;
    loss.kind = finding->kind;
    loss.detail = finding->message;
    loss.expected_sequence = expected ? expected->sequence : 0;
    loss.recovered_sequence = recovered;
    loss.lost_writes = loss.expected_sequence > recovered ? loss.expected_sequence - recovered : 0;
    loss.saved_copy = saved_copy;
    char key[64];
    std::snprintf(key, sizeof(key), "%s%020lld", std::string(kLossPrefix).c_str(),
                  static_cast<long long>(now_ms));
    const rocksdb::Status put =
        impl->db->Put(impl->write_options, impl->state, key, LossJson(loss));
    if (!put.ok()) return impl->Fail(FromRocks(put, "open"), "open");
    impl->MarkWritten();
    impl->accepted_loss = std::move(loss);
  }
  // The ledger in commit order: indexes a ledger from before ledger_seq
  // once, and recovers the next sequence.
  if (absl::Status indexed = impl->OpenLedgerIndex(); !indexed.ok()) return indexed;
  // Entries a crash left (until recovery turns them into ledger records)
  // start the running in-flight total. A malformed one is recovery's to
  // report (kDataLoss); it is left out of the total.
  {
    absl::MutexLock hold(&impl->inflight_total_mu);
    absl::Status scanned = impl->ScanInflight(
        /*skip_malformed=*/true,
        [&](std::string_view id, const UsageCounters& counters) ABSL_NO_THREAD_SAFETY_ANALYSIS {
          impl->inflight_total += counters;
          impl->inflight_by_request[std::string(id)] += counters;
        });
    if (!scanned.ok()) return scanned;
  }
  impl->resumer = std::thread([raw_impl] { raw_impl->ResumeLoop(); });
  return std::unique_ptr<MeterStore>(new MeterStore(std::move(impl)));
}

absl::StatusOr<std::vector<StoreLoss>> MeterStore::AcceptedLosses() {
  auto pairs = ListState(kLossPrefix);
  if (!pairs.ok()) return pairs.status();
  std::vector<StoreLoss> out;
  for (const auto& [key, value] : *pairs) {
    auto loss = ParseLoss(key, value);
    if (!loss.ok()) return impl_->Fail(loss.status(), "list_state");
    out.push_back(*std::move(loss));
  }
  return out;
}

}  // namespace tokenmill::storage
