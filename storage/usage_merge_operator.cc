#include "storage/usage_merge_operator.h"

#include <string_view>

#include "rocksdb/env.h"
#include "storage/meter_store.h"

namespace tokenmill::storage {

bool UsageAddOperator::Merge(const rocksdb::Slice& key, const rocksdb::Slice* existing_value,
                             const rocksdb::Slice& value, std::string* new_value,
                             rocksdb::Logger* logger) const {
  (void)key;
  auto operand = DecodeUsageCounters(std::string_view(value.data(), value.size()));
  if (!operand.ok()) {
    rocksdb::Log(rocksdb::InfoLogLevel::ERROR_LEVEL, logger, "%s: bad operand: %s", kName,
                 std::string(operand.status().message()).c_str());
    return false;
  }
  if (existing_value != nullptr) {
    auto existing =
        DecodeUsageCounters(std::string_view(existing_value->data(), existing_value->size()));
    if (!existing.ok()) {
      rocksdb::Log(rocksdb::InfoLogLevel::ERROR_LEVEL, logger, "%s: bad existing value: %s", kName,
                   std::string(existing.status().message()).c_str());
      return false;
    }
    *operand += *existing;
  }
  *new_value = EncodeUsageCounters(*operand);
  return true;
}

}  // namespace tokenmill::storage
