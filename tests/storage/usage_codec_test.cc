#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/meter_store.h"

namespace tokenmill::storage {
namespace {

using ::testing::HasSubstr;

UsageCounters Sample() {
  return {.prompt_tokens = 1,
          .cached_tokens = 2,
          .generated_tokens = 3,
          .requests = 4,
          .device_ns = 0x0102030405060708ULL,
          .energy_uj = 6,
          .cost_nusd = UINT64_MAX,
          .revenue_nusd = 8};
}

TEST(UsageCodecTest, KeyRoundTrips) {
  const UsageKey key{"acme", "llama-3-8b", "cuda:0", 0x0000000100000000ULL};
  auto decoded = DecodeUsageKey(EncodeUsageKey(key));
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(*decoded, key);
}

TEST(UsageCodecTest, KeyWithEmptyNamesAndZeroHourRoundTrips) {
  const UsageKey key{"", "", "", 0};
  auto decoded = DecodeUsageKey(EncodeUsageKey(key));
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(*decoded, key);
}

TEST(UsageCodecTest, KeyLayoutIsNamesSeparatedByZeroThenBigEndianHour) {
  const std::string bytes = EncodeUsageKey({"t", "m", "d", 0x0102});
  EXPECT_EQ(bytes, std::string("t\0m\0d\0\0\0\0\0\0\0\x01\x02", 14));
}

TEST(UsageCodecTest, KeysSortByHourNumerically) {
  EXPECT_LT(EncodeUsageKey({"t", "m", "d", 255}), EncodeUsageKey({"t", "m", "d", 256}));
  EXPECT_LT(EncodeUsageKey({"t", "m", "d", 1}), EncodeUsageKey({"t", "m", "d", UINT64_MAX}));
}

TEST(UsageCodecTest, KeysSortByTenantThenModelThenDevice) {
  // "a" must sort before "ab" whatever the later fields hold.
  EXPECT_LT(EncodeUsageKey({"a", "zzz", "zzz", UINT64_MAX}), EncodeUsageKey({"ab", "", "", 0}));
  EXPECT_LT(EncodeUsageKey({"a", "m", "zzz", UINT64_MAX}), EncodeUsageKey({"a", "mm", "", 0}));
  EXPECT_LT(EncodeUsageKey({"a", "m", "d", UINT64_MAX}), EncodeUsageKey({"a", "m", "dd", 0}));
}

TEST(UsageCodecTest, DecodeKeyRejectsShortInput) {
  auto decoded = DecodeUsageKey(std::string("t\0m\0d\0\x01", 7));
  EXPECT_EQ(decoded.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(decoded.status().message(), HasSubstr("shorter"));
}

TEST(UsageCodecTest, DecodeKeyRejectsMissingSeparators) {
  auto decoded = DecodeUsageKey(std::string("tenant-model\0\0\0\0\0\0\0\0\x01", 21));
  EXPECT_EQ(decoded.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(decoded.status().message(), HasSubstr("tenant 0x00 model 0x00 device 0x00 hour"));
}

TEST(UsageCodecTest, DecodeKeyRejectsExtraSeparators) {
  auto decoded = DecodeUsageKey(std::string("t\0m\0d\0x\0\0\0\0\0\0\0\0\x01", 16));
  EXPECT_EQ(decoded.status().code(), absl::StatusCode::kDataLoss);
}

TEST(UsageCodecTest, CountersRoundTrip) {
  auto decoded = DecodeUsageCounters(EncodeUsageCounters(Sample()));
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(*decoded, Sample());
}

TEST(UsageCodecTest, CountersLayoutIsLittleEndianInFieldOrder) {
  const std::string bytes = EncodeUsageCounters(Sample());
  ASSERT_EQ(bytes.size(), kUsageValueBytes);
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x01\0\0\0\0\0\0\0", 8));   // prompt_tokens
  EXPECT_EQ(bytes.substr(24, 8), std::string("\x04\0\0\0\0\0\0\0", 8));  // requests
  EXPECT_EQ(bytes.substr(32, 8), "\x08\x07\x06\x05\x04\x03\x02\x01");    // device_ns
  EXPECT_EQ(bytes.substr(48, 8), std::string(8, '\xff'));                // cost_nusd
  EXPECT_EQ(bytes.substr(56, 8), std::string("\x08\0\0\0\0\0\0\0", 8));  // revenue_nusd
}

TEST(UsageCodecTest, DecodeCountersRejectsWrongSizes) {
  for (size_t size : {size_t{0}, size_t{63}, size_t{65}, size_t{128}}) {
    auto decoded = DecodeUsageCounters(std::string(size, '\0'));
    EXPECT_EQ(decoded.status().code(), absl::StatusCode::kDataLoss) << size;
    EXPECT_THAT(decoded.status().message(), HasSubstr("expected 64")) << size;
  }
}

TEST(UsageCodecTest, PlusEqualsAddsEveryField) {
  UsageCounters sum = Sample();
  sum += UsageCounters{1, 1, 1, 1, 1, 1, 0, 1};
  EXPECT_EQ(sum, (UsageCounters{2, 3, 4, 5, 0x0102030405060709ULL, 7, UINT64_MAX, 9}));
}

}  // namespace
}  // namespace tokenmill::storage
