// The merge operator of the usage column family: a usage value is the
// field-wise sum of every delta ever added under its key.
#pragma once

#include <string>

#include "rocksdb/merge_operator.h"
#include "rocksdb/slice.h"

namespace tokenmill::storage {

// Adds two encoded UsageCounters field by field. Associative, so RocksDB may
// combine operands in any grouping during compaction. A value or operand that
// is not kUsageValueBytes long makes Merge return false, which RocksDB reports
// as corruption on the read or compaction that hit it. Stateless and
// thread-safe.
class UsageAddOperator : public rocksdb::AssociativeMergeOperator {
 public:
  // Persisted in the database's OPTIONS file; change the version suffix if the
  // value encoding ever changes.
  static constexpr const char* kName = "tokenmill.UsageAdd.v1";

  bool Merge(const rocksdb::Slice& key, const rocksdb::Slice* existing_value,
             const rocksdb::Slice& value, std::string* new_value,
             rocksdb::Logger* logger) const override;

  const char* Name() const override { return kName; }
};

}  // namespace tokenmill::storage
