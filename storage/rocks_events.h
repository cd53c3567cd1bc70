// What RocksDB tells the store as it runs: its info log, forwarded to the
// owner's log sink instead of a LOG file in the data dir (a full disk must not
// take the log down with it), and its background errors and WAL switches.
// Internal to storage/: includes RocksDB.
#pragma once

#include <cstdarg>
#include <functional>
#include <string_view>

#include "rocksdb/env.h"
#include "rocksdb/listener.h"
#include "storage/meter_store.h"

namespace tokenmill::storage {

// Forwards RocksDB's info log to sink: DEBUG/INFO/HEADER lines at kDebug,
// WARN at kWarn, ERROR/FATAL at kError, each prefixed "rocksdb: ". With no
// sink, lines are dropped. Thread-safe as the sink is.
class RocksLogger final : public rocksdb::Logger {
 public:
  // min_level: the lowest RocksDB level formatted at all (INFO lines cost a
  // format each; pass WARN_LEVEL unless the sink shows debug lines).
  RocksLogger(StoreLogSink sink, rocksdb::InfoLogLevel min_level)
      : rocksdb::Logger(min_level), sink_(std::move(sink)) {}

  using rocksdb::Logger::Logv;
  void Logv(const char* format, va_list ap) override;
  void Logv(const rocksdb::InfoLogLevel level, const char* format, va_list ap) override;

 private:
  StoreLogSink sink_;
};

// Calls on_error for a background error that stops writes (severity hard or
// worse) and keeps RocksDB's own recovery from starting: the store resumes
// itself (MeterStore::Impl::ResumeLoop), so that one thread owns recovery
// and checks it with a write. Calls on_wal_switch when a memtable is sealed,
// which is when RocksDB starts a new WAL file.
class StoreEventListener final : public rocksdb::EventListener {
 public:
  std::function<void(const rocksdb::Status&)> on_error;
  std::function<void()> on_wal_switch;

  void OnBackgroundError(rocksdb::BackgroundErrorReason reason, rocksdb::Status* bg_error) override;
  void OnErrorRecoveryBegin(rocksdb::BackgroundErrorReason reason, rocksdb::Status bg_error,
                            bool* auto_recovery) override;
  void OnMemTableSealed(const rocksdb::MemTableInfo& info) override;
};

}  // namespace tokenmill::storage
