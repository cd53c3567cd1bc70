// MeterStore: the ledger in commit order (the `ledger_seq` family), its
// sequence numbers and watermark, and the per-id locks of ledger writers.
#include <algorithm>
#include <chrono>
#include <functional>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "rocksdb/iterator.h"
#include "storage/meter_store.h"
#include "storage/meter_store_impl.h"
#include "storage/store_layout.h"

namespace tokenmill::storage {
namespace {

// Index entries written per batch when indexing an old store.
constexpr size_t kIndexBatchRecords = 4096;

std::string EncodeU64(uint64_t v) {
  std::string out(8, '\0');
  for (int i = 7; i >= 0; --i) {
    out[static_cast<size_t>(i)] = static_cast<char>(v & 0xff);
    v >>= 8;
  }
  return out;
}

uint64_t DecodeU64(std::string_view bytes) {
  uint64_t v = 0;
  for (size_t i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(bytes[i]);
  return v;
}

std::string IndexValue(uint64_t unix_ms, std::string_view request_id) {
  std::string value = EncodeU64(unix_ms);
  value.append(request_id);
  return value;
}

// Releases a snapshot when it goes out of scope.
class SnapshotHold {
 public:
  explicit SnapshotHold(rocksdb::DB& db) : db_(db), snapshot_(db.GetSnapshot()) {}
  ~SnapshotHold() { db_.ReleaseSnapshot(snapshot_); }
  SnapshotHold(const SnapshotHold&) = delete;
  SnapshotHold& operator=(const SnapshotHold&) = delete;
  const rocksdb::Snapshot* get() const { return snapshot_; }

 private:
  rocksdb::DB& db_;
  const rocksdb::Snapshot* snapshot_;
};

}  // namespace

absl::Mutex& MeterStore::Impl::LedgerStripe(std::string_view request_id) {
  return ledger_stripes[std::hash<std::string_view>{}(request_id) % kLedgerStripes];
}

absl::Status MeterStore::Impl::CommitLedger(std::string_view request_id, std::string_view record,
                                            rocksdb::WriteBatch& batch, std::string_view op) {
  uint64_t seq = 0;
  {
    absl::MutexLock hold(&seq_mu);
    seq = next_seq++;
    writing_seqs.insert(seq);
  }
  rocksdb::Status s = batch.Put(ledger, ToSlice(request_id), ToSlice(record));
  if (s.ok()) {
    s = batch.Put(ledger_seq, EncodeU64(seq),
                  IndexValue(static_cast<uint64_t>(NowUnixMs()), request_id));
  }
  if (s.ok()) {
    if (options.before_ledger_write) options.before_ledger_write(request_id);
    s = db->Write(write_options, &batch);
  }
  {
    absl::MutexLock hold(&seq_mu);
    writing_seqs.erase(seq);
    if (s.ok()) {
      // Retired once visible to readers; failed ones below it are now safe
      // to pass: a restart starts above this one.
      failed_seqs.erase(failed_seqs.begin(), failed_seqs.lower_bound(seq));
    } else {
      failed_seqs.insert(seq);  // holds the watermark (see failed_seqs)
    }
  }
  return Written(s, op);
}

absl::Status MeterStore::Impl::OpenLedgerIndex() {
  rocksdb::ColumnFamilyHandle* defaults = db->DefaultColumnFamily();
  std::string marker;
  const rocksdb::Status found =
      db->Get(rocksdb::ReadOptions(), defaults, ToSlice(kLedgerIndexedKey), &marker);
  if (!found.ok() && !found.IsNotFound()) return Check(found, "open");
  if (found.IsNotFound()) {
    // A store from before ledger_seq, a new one, or an indexing cut short by
    // a crash: (re)index every record, in id order, with the marker in the
    // last batch. Nothing else writes during Open.
    const std::string all_keys_end(9, '\xff');
    if (absl::Status s = Check(
            db->DeleteRange(write_options, ledger_seq, rocksdb::Slice(), ToSlice(all_keys_end)),
            "open");
        !s.ok()) {
      return s;
    }
    const auto now_ms = static_cast<uint64_t>(NowUnixMs());
    uint64_t seq = 0;
    rocksdb::WriteBatch batch;
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions(), ledger));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      rocksdb::Status s =
          batch.Put(ledger_seq, EncodeU64(++seq), IndexValue(now_ms, ToView(it->key())));
      if (s.ok() && batch.Count() >= kIndexBatchRecords) {
        s = db->Write(write_options, &batch);
        batch.Clear();
      }
      if (!s.ok()) return Check(s, "open");
    }
    if (absl::Status s = Check(it->status(), "open"); !s.ok()) return s;
    rocksdb::Status s = batch.Put(defaults, ToSlice(kLedgerIndexedKey), "1");
    if (s.ok()) s = db->Write(write_options, &batch);
    if (absl::Status written = Check(s, "open"); !written.ok()) return written;
  }
  std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions(), ledger_seq));
  it->SeekToLast();
  if (absl::Status s = Check(it->status(), "open"); !s.ok()) return s;
  uint64_t last = 0;
  if (it->Valid()) {
    if (it->key().size() != 8) {
      return Fail(absl::DataLossError("ledger_seq: a key is not 8 bytes"), "open");
    }
    last = DecodeU64(ToView(it->key()));
  }
  absl::MutexLock hold(&seq_mu);
  next_seq = last + 1;
  return absl::OkStatus();
}

uint64_t MeterStore::LedgerWatermark() {
  absl::MutexLock hold(&impl_->seq_mu);
  uint64_t lowest = impl_->next_seq;
  if (!impl_->writing_seqs.empty()) lowest = std::min(lowest, *impl_->writing_seqs.begin());
  if (!impl_->failed_seqs.empty()) lowest = std::min(lowest, *impl_->failed_seqs.begin());
  return lowest;
}

absl::StatusOr<LedgerPage> MeterStore::ReadLedgerPage(uint64_t after, uint64_t through,
                                                      size_t max_records) {
  LedgerPage page;
  page.last_seq = after;
  // The watermark first, the snapshot second: every sequence below the
  // watermark was committed before the snapshot was taken.
  const uint64_t watermark = LedgerWatermark();
  through = std::min(through, watermark - 1);
  if (after >= through || max_records == 0) return page;

  SnapshotHold snapshot(*impl_->db);
  rocksdb::ReadOptions read_options;
  read_options.snapshot = snapshot.get();
  const std::string upper = EncodeU64(through + 1);  // through < watermark <= UINT64_MAX
  const rocksdb::Slice upper_slice = ToSlice(upper);
  read_options.iterate_upper_bound = &upper_slice;
  std::unique_ptr<rocksdb::Iterator> it(impl_->db->NewIterator(read_options, impl_->ledger_seq));
  bool full = false;
  for (it->Seek(EncodeU64(after + 1)); it->Valid(); it->Next()) {
    if (page.entries.size() == max_records) {
      full = true;
      break;
    }
    if (it->key().size() != 8 || it->value().size() < 8) {
      return impl_->Fail(absl::DataLossError("ledger_seq: malformed index entry"), "scan_ledger");
    }
    LedgerEntry entry;
    entry.seq = DecodeU64(ToView(it->key()));
    entry.committed_unix_ms = DecodeU64(ToView(it->value()));
    entry.request_id.assign(it->value().data() + 8, it->value().size() - 8);
    page.entries.push_back(std::move(entry));
  }
  if (absl::Status s = impl_->Check(it->status(), "scan_ledger"); !s.ok()) return s;

  std::vector<rocksdb::Slice> keys;
  keys.reserve(page.entries.size());
  for (const LedgerEntry& entry : page.entries) keys.push_back(ToSlice(entry.request_id));
  std::vector<rocksdb::PinnableSlice> values(keys.size());
  std::vector<rocksdb::Status> statuses(keys.size());
  if (!keys.empty()) {
    impl_->db->MultiGet(read_options, impl_->ledger, keys.size(), keys.data(), values.data(),
                        statuses.data());
  }
  for (size_t i = 0; i < keys.size(); ++i) {
    if (statuses[i].IsNotFound()) {
      return impl_->Fail(absl::DataLossError(absl::StrCat(
                             "ledger_seq: sequence ", page.entries[i].seq, " names request '",
                             page.entries[i].request_id, "', which the ledger does not hold")),
                         "scan_ledger");
    }
    if (absl::Status s = impl_->Check(statuses[i], "scan_ledger"); !s.ok()) return s;
    page.entries[i].record.assign(values[i].data(), values[i].size());
  }
  page.last_seq = full ? page.entries.back().seq : through;
  return page;
}

}  // namespace tokenmill::storage
