// Conversion of RocksDB statuses into absl::Status, the one error type that
// crosses module boundaries.
#pragma once

#include <string_view>

#include "absl/status/status.h"
#include "rocksdb/status.h"

namespace tokenmill::storage {

// Maps a RocksDB status to the absl code that tells the caller what to do
// (corruption -> kDataLoss, out of space -> kResourceExhausted, busy or
// shutting down -> kUnavailable, other I/O -> kInternal) with a message
// "<op>: <RocksDB's message>". An ok status maps to OkStatus().
absl::Status FromRocks(const rocksdb::Status& status, std::string_view op);

}  // namespace tokenmill::storage
