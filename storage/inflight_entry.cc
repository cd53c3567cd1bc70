#include "storage/inflight_entry.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "rocksdb/env.h"

namespace tokenmill::storage {
namespace {

constexpr char kSeparator = '\0';

void PutLittleEndian(uint64_t v, char* out) {
  for (size_t i = 0; i < 8; ++i) out[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}

uint64_t GetLittleEndian(const char* bytes) {
  uint64_t v = 0;
  for (size_t i = 0; i < 8; ++i) v |= uint64_t{static_cast<unsigned char>(bytes[i])} << (8 * i);
  return v;
}

// Adds the counters at `from` into those at `into`, both encoded.
void AddEncodedCounters(const char* from, char* into) {
  for (size_t offset = 0; offset < kUsageValueBytes; offset += 8) {
    PutLittleEndian(GetLittleEndian(into + offset) + GetLittleEndian(from + offset), into + offset);
  }
}

}  // namespace

void EncodeInflightEntry(const UsageCounters& counters, uint64_t hour, std::string_view tenant,
                         std::string_view model, std::string_view device,
                         std::string_view client_request_id, std::string_view user,
                         std::string& out) {
  out.resize(kInflightFixedBytes);
  const uint64_t fields[] = {counters.prompt_tokens,    counters.cached_tokens,
                             counters.generated_tokens, counters.requests,
                             counters.device_ns,        counters.energy_uj,
                             counters.cost_nusd,        counters.revenue_nusd};
  static_assert(sizeof(fields) == kUsageValueBytes);
  for (size_t i = 0; i < 8; ++i) PutLittleEndian(fields[i], out.data() + 8 * i);
  PutLittleEndian(hour, out.data() + kUsageValueBytes);
  out.append(tenant).push_back(kSeparator);
  out.append(model).push_back(kSeparator);
  out.append(device);
  if (!client_request_id.empty() || !user.empty()) {
    out.append(1, kSeparator).append(client_request_id);
  }
  if (!user.empty()) out.append(1, kSeparator).append(user);
}

absl::StatusOr<InflightEntry> DecodeInflightEntry(std::string_view bytes) {
  if (bytes.size() < kInflightFixedBytes) {
    return absl::DataLossError(absl::StrCat("inflight value of ", bytes.size(),
                                            " bytes is shorter than the minimum of ",
                                            kInflightFixedBytes));
  }
  auto counters = DecodeUsageCounters(bytes.substr(0, kUsageValueBytes));
  if (!counters.ok()) return counters.status();
  InflightEntry entry;
  entry.counters = *counters;
  entry.hour = GetLittleEndian(bytes.data() + kUsageValueBytes);
  std::string_view names = bytes.substr(kInflightFixedBytes);
  const size_t first = names.find(kSeparator);
  const size_t second = first == std::string_view::npos ? first : names.find(kSeparator, first + 1);
  if (second == std::string_view::npos) {
    return absl::DataLossError(
        "inflight value names do not have the form tenant 0x00 model 0x00 device");
  }
  const size_t third = names.find(kSeparator, second + 1);
  const size_t fourth = third == std::string_view::npos ? third : names.find(kSeparator, third + 1);
  if (third != std::string_view::npos && fourth == std::string_view::npos &&
      third + 1 == names.size()) {
    return absl::DataLossError("inflight value has an empty client request id");
  }
  if (fourth != std::string_view::npos && fourth + 1 == names.size()) {
    return absl::DataLossError("inflight value has an empty user");
  }
  entry.tenant.assign(names.substr(0, first));
  entry.model.assign(names.substr(first + 1, second - first - 1));
  if (third == std::string_view::npos) {
    entry.device.assign(names.substr(second + 1));
  } else {
    entry.device.assign(names.substr(second + 1, third - second - 1));
    const size_t id_end = fourth == std::string_view::npos ? names.size() : fourth;
    entry.client_request_id.assign(names.substr(third + 1, id_end - third - 1));
    if (fourth != std::string_view::npos) entry.user.assign(names.substr(fourth + 1));
  }
  return entry;
}

bool InflightAddOperator::Merge(const rocksdb::Slice& key, const rocksdb::Slice* existing_value,
                                const rocksdb::Slice& value, std::string* new_value,
                                rocksdb::Logger* logger) const {
  (void)key;
  if (value.size() < kInflightFixedBytes ||
      (existing_value != nullptr && existing_value->size() < kInflightFixedBytes)) {
    rocksdb::Log(rocksdb::InfoLogLevel::ERROR_LEVEL, logger, "%s: value shorter than %zu bytes",
                 kName, kInflightFixedBytes);
    return false;
  }
  if (existing_value == nullptr) {
    new_value->assign(value.data(), value.size());
    return true;
  }
  new_value->assign(existing_value->data(), existing_value->size());
  AddEncodedCounters(value.data(), new_value->data());
  return true;
}

}  // namespace tokenmill::storage
