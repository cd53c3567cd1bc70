#include "storage/rocks_status.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace tokenmill::storage {
namespace {

absl::StatusCode CodeOf(const rocksdb::Status& status) {
  using Code = rocksdb::Status::Code;
  switch (status.code()) {
    case Code::kOk:
      return absl::StatusCode::kOk;
    case Code::kNotFound:
      return absl::StatusCode::kNotFound;
    case Code::kCorruption:
      return absl::StatusCode::kDataLoss;
    case Code::kNotSupported:
      return absl::StatusCode::kUnimplemented;
    case Code::kInvalidArgument:
      return absl::StatusCode::kInvalidArgument;
    case Code::kIOError:
      // A full disk is something an operator can fix; other I/O errors leave
      // RocksDB read-only until reopened, so retrying does not help.
      return status.IsNoSpace() ? absl::StatusCode::kResourceExhausted
                                : absl::StatusCode::kInternal;
    case Code::kAborted:
      return status.IsMemoryLimit() ? absl::StatusCode::kResourceExhausted
                                    : absl::StatusCode::kAborted;
    case Code::kBusy:
    case Code::kTimedOut:
    case Code::kTryAgain:
    case Code::kIncomplete:
    case Code::kShutdownInProgress:
      return absl::StatusCode::kUnavailable;
    case Code::kExpired:
      return absl::StatusCode::kDeadlineExceeded;
    case Code::kColumnFamilyDropped:
      return absl::StatusCode::kFailedPrecondition;
    default:
      return absl::StatusCode::kInternal;
  }
}

}  // namespace

absl::Status FromRocks(const rocksdb::Status& status, std::string_view op) {
  if (status.ok()) return absl::OkStatus();
  // Debian's Abseil has its own string_view type, not std::string_view.
  const absl::string_view op_name(op.data(), op.size());
  return absl::Status(CodeOf(status), absl::StrCat(op_name, ": ", status.ToString()));
}

}  // namespace tokenmill::storage
