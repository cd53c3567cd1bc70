// Names of the files and column families inside a MeterStore data dir. Shared
// by the store and by tests that inspect or damage the database directly.
#pragma once

#include <string_view>

namespace tokenmill::storage {

// flock'ed by the owning process; holds its pid for the error message of the
// process that is refused.
inline constexpr std::string_view kLockFileName = "tokenmilld.lock";
// The RocksDB database, a subdirectory so that the data dir can hold more later.
inline constexpr std::string_view kDbDirName = "meter";

inline constexpr std::string_view kUsageFamily = "usage";
inline constexpr std::string_view kLedgerFamily = "ledger";
inline constexpr std::string_view kStateFamily = "state";
// Progress of requests not yet in the ledger (meter_store.h, RecordStep).
inline constexpr std::string_view kInflightFamily = "inflight";
// The ledger in commit order: u64 BE sequence -> u64 BE commit unix ms +
// request id (meter_store.h, ReadLedgerPage).
inline constexpr std::string_view kLedgerSeqFamily = "ledger_seq";
// Default-family key written once every ledger record of a store older than
// ledger_seq has been indexed.
inline constexpr std::string_view kLedgerIndexedKey = "ledger_seq/indexed";

}  // namespace tokenmill::storage
