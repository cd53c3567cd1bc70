// Byte layout of usage keys and values (declared in meter_store.h). Written
// byte by byte so that the encoding does not depend on the host's byte order.
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "storage/meter_store.h"

namespace tokenmill::storage {
namespace {

constexpr char kSeparator = '\0';
constexpr size_t kHourBytes = 8;
constexpr size_t kFields = kUsageValueBytes / 8;

// The fields in struct order; the value encoding follows this order.
std::array<uint64_t*, kFields> Fields(UsageCounters& c) {
  return {&c.prompt_tokens, &c.cached_tokens, &c.generated_tokens, &c.requests,
          &c.device_ns,     &c.energy_uj,     &c.cost_nusd,        &c.revenue_nusd};
}

std::array<const uint64_t*, kFields> Fields(const UsageCounters& c) {
  return {&c.prompt_tokens, &c.cached_tokens, &c.generated_tokens, &c.requests,
          &c.device_ns,     &c.energy_uj,     &c.cost_nusd,        &c.revenue_nusd};
}

void AppendLittleEndian(uint64_t v, std::string& out) {
  for (size_t i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

void AppendBigEndian(uint64_t v, std::string& out) {
  for (size_t i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * (7 - i))) & 0xff));
}

uint64_t ReadLittleEndian(std::string_view bytes) {
  uint64_t v = 0;
  for (size_t i = 0; i < 8; ++i) v |= uint64_t{static_cast<unsigned char>(bytes[i])} << (8 * i);
  return v;
}

uint64_t ReadBigEndian(std::string_view bytes) {
  uint64_t v = 0;
  for (size_t i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(bytes[i]);
  return v;
}

// Takes the name up to the next separator off the front of rest.
bool TakeName(std::string_view& rest, std::string& name) {
  const size_t end = rest.find(kSeparator);
  if (end == std::string_view::npos) return false;
  name.assign(rest.substr(0, end));
  rest.remove_prefix(end + 1);
  return true;
}

}  // namespace

UsageCounters& UsageCounters::operator+=(const UsageCounters& other) {
  const auto mine = Fields(*this);
  const auto theirs = Fields(other);
  for (size_t i = 0; i < kFields; ++i) *mine[i] += *theirs[i];
  return *this;
}

UsageCounters& UsageCounters::SubtractSaturating(const UsageCounters& other) {
  const auto mine = Fields(*this);
  const auto theirs = Fields(other);
  for (size_t i = 0; i < kFields; ++i) *mine[i] -= std::min(*mine[i], *theirs[i]);
  return *this;
}

std::string EncodeUsageKey(const UsageKey& key) {
  std::string out;
  out.reserve(key.tenant.size() + key.model.size() + key.device.size() + 3 + kHourBytes);
  out.append(key.tenant).push_back(kSeparator);
  out.append(key.model).push_back(kSeparator);
  out.append(key.device).push_back(kSeparator);
  AppendBigEndian(key.hour, out);
  return out;
}

absl::StatusOr<UsageKey> DecodeUsageKey(std::string_view bytes) {
  // The hour is last and fixed-size; it may contain 0x00 bytes, so the names
  // are split only in what precedes it.
  if (bytes.size() < 3 + kHourBytes) {
    return absl::DataLossError(absl::StrCat(
        "usage key of ", bytes.size(), " bytes is shorter than the minimum of ", 3 + kHourBytes));
  }
  std::string_view names = bytes.substr(0, bytes.size() - kHourBytes);
  UsageKey key;
  if (!TakeName(names, key.tenant) || !TakeName(names, key.model) || !TakeName(names, key.device) ||
      !names.empty()) {
    return absl::DataLossError(
        "usage key does not have the form tenant 0x00 model 0x00 device 0x00 hour");
  }
  key.hour = ReadBigEndian(bytes.substr(bytes.size() - kHourBytes));
  return key;
}

std::string EncodeUsageCounters(const UsageCounters& counters) {
  std::string out;
  out.reserve(kUsageValueBytes);
  for (const uint64_t* field : Fields(counters)) AppendLittleEndian(*field, out);
  return out;
}

absl::StatusOr<UsageCounters> DecodeUsageCounters(std::string_view bytes) {
  if (bytes.size() != kUsageValueBytes) {
    return absl::DataLossError(
        absl::StrCat("usage value has ", bytes.size(), " bytes, expected ", kUsageValueBytes));
  }
  UsageCounters counters;
  size_t offset = 0;
  for (uint64_t* field : Fields(counters)) {
    *field = ReadLittleEndian(bytes.substr(offset, 8));
    offset += 8;
  }
  return counters;
}

}  // namespace tokenmill::storage
