// The inflight value encoding and its merge operator.
#include "storage/inflight_entry.h"

#include <string>

#include "gtest/gtest.h"

namespace tokenmill::storage {
namespace {

UsageCounters Counters(uint64_t base) {
  return {.prompt_tokens = base,
          .cached_tokens = base + 1,
          .generated_tokens = base + 2,
          .requests = base + 3,
          .device_ns = base + 4,
          .energy_uj = base + 5,
          .cost_nusd = base + 6,
          .revenue_nusd = (uint64_t{1} << 40) + base};
}

TEST(InflightEntryTest, RoundTrips) {
  std::string bytes;
  EncodeInflightEntry(Counters(10), 480'000, "acme", "llama-3", "cuda:0", "", "", bytes);
  EXPECT_EQ(bytes.size(), kInflightFixedBytes + 4 + 1 + 7 + 1 + 6);
  auto entry = DecodeInflightEntry(bytes);
  ASSERT_TRUE(entry.ok()) << entry.status();
  EXPECT_EQ(entry->counters, Counters(10));
  EXPECT_EQ(entry->hour, 480'000u);
  EXPECT_EQ(entry->tenant, "acme");
  EXPECT_EQ(entry->model, "llama-3");
  EXPECT_EQ(entry->device, "cuda:0");
  // Empty names are representable.
  EncodeInflightEntry({}, 1, "", "", "", "", "", bytes);
  entry = DecodeInflightEntry(bytes);
  ASSERT_TRUE(entry.ok()) << entry.status();
  EXPECT_EQ(entry->tenant, "");
  EXPECT_EQ(entry->device, "");
}

TEST(InflightEntryTest, MalformedBytesAreDataLoss) {
  std::string bytes;
  EncodeInflightEntry(Counters(1), 2, "t", "m", "d", "", "", bytes);
  EXPECT_EQ(DecodeInflightEntry(bytes.substr(0, kInflightFixedBytes - 1)).status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(DecodeInflightEntry(bytes.substr(0, kInflightFixedBytes + 2)).status().code(),
            absl::StatusCode::kDataLoss);  // one separator only
  EXPECT_EQ(DecodeInflightEntry(bytes + std::string(1, '\0')).status().code(),
            absl::StatusCode::kDataLoss);  // a third separator with no client id after it
}

// The client's X-Request-Id and end-user id travel with the entry (the user
// may hold any bytes, NUL too), so a request a crash interrupts keeps them in
// its ledger record; an entry without them (as written before the fields
// existed) decodes as before.
TEST(InflightEntryTest, KeepsTheClientRequestIdAndUser) {
  std::string bytes;
  const std::string user = std::string("user\0-17", 9);
  EncodeInflightEntry(Counters(3), 7, "acme", "llama", "cpu", "order-17", user, bytes);
  auto entry = DecodeInflightEntry(bytes);
  ASSERT_TRUE(entry.ok()) << entry.status();
  EXPECT_EQ(entry->device, "cpu");
  EXPECT_EQ(entry->client_request_id, "order-17");
  EXPECT_EQ(entry->user, user);
  EXPECT_EQ(entry->counters, Counters(3));

  EncodeInflightEntry(Counters(3), 7, "acme", "llama", "cpu", "order-17", "", bytes);
  entry = DecodeInflightEntry(bytes);
  ASSERT_TRUE(entry.ok()) << entry.status();
  EXPECT_EQ(entry->client_request_id, "order-17");
  EXPECT_EQ(entry->user, "");

  EncodeInflightEntry(Counters(3), 7, "acme", "llama", "cpu", "", user, bytes);
  entry = DecodeInflightEntry(bytes);
  ASSERT_TRUE(entry.ok()) << entry.status();
  EXPECT_EQ(entry->device, "cpu");
  EXPECT_EQ(entry->client_request_id, "");
  EXPECT_EQ(entry->user, user);

  EncodeInflightEntry(Counters(3), 7, "acme", "llama", "cpu", "", "", bytes);
  entry = DecodeInflightEntry(bytes);
  ASSERT_TRUE(entry.ok()) << entry.status();
  EXPECT_EQ(entry->device, "cpu");
  EXPECT_EQ(entry->client_request_id, "");
  EXPECT_EQ(entry->user, "");
}

TEST(InflightEntryTest, MergeAddsCountersAndKeepsTheOlderIdentity) {
  InflightAddOperator op;
  std::string first, second, merged, twice;
  EncodeInflightEntry(Counters(1), 100, "acme", "llama", "cuda:0", "", "", first);
  EncodeInflightEntry(Counters(5), 101, "acme", "llama", "cuda:0", "", "", second);
  const rocksdb::Slice first_slice(first);
  ASSERT_TRUE(op.Merge("id", nullptr, first_slice, &merged, nullptr));
  EXPECT_EQ(merged, first);
  ASSERT_TRUE(op.Merge("id", &first_slice, rocksdb::Slice(second), &merged, nullptr));
  auto entry = DecodeInflightEntry(merged);
  ASSERT_TRUE(entry.ok()) << entry.status();
  UsageCounters want = Counters(1);
  want += Counters(5);
  EXPECT_EQ(entry->counters, want);
  EXPECT_EQ(entry->hour, 100u);
  EXPECT_EQ(entry->tenant, "acme");
  // Associative: (a + b) + b == a + (b + b).
  std::string left, right, b_plus_b;
  const rocksdb::Slice merged_slice(merged);
  ASSERT_TRUE(op.Merge("id", &merged_slice, rocksdb::Slice(second), &left, nullptr));
  const rocksdb::Slice second_slice(second);
  ASSERT_TRUE(op.Merge("id", &second_slice, rocksdb::Slice(second), &b_plus_b, nullptr));
  ASSERT_TRUE(op.Merge("id", &first_slice, rocksdb::Slice(b_plus_b), &right, nullptr));
  EXPECT_EQ(left, right);
}

TEST(InflightEntryTest, MergeRejectsShortValues) {
  InflightAddOperator op;
  std::string good, out;
  EncodeInflightEntry(Counters(1), 1, "t", "m", "d", "", "", good);
  const rocksdb::Slice good_slice(good);
  const rocksdb::Slice short_slice("abc");
  EXPECT_FALSE(op.Merge("id", &good_slice, short_slice, &out, nullptr));
  EXPECT_FALSE(op.Merge("id", &short_slice, good_slice, &out, nullptr));
  EXPECT_EQ(std::string(op.Name()), "tokenmill.InflightAdd.v1");
}

}  // namespace
}  // namespace tokenmill::storage
