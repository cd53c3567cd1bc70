#include "storage/usage_merge_operator.h"

#include <memory>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rocksdb/db.h"
#include "rocksdb/options.h"
#include "storage/meter_store.h"
#include "storage/rocks_status.h"
#include "tests/storage/temp_dir.h"

namespace tokenmill::storage {
namespace {

using ::testing::HasSubstr;

std::string Encoded(uint64_t requests, uint64_t cost) {
  UsageCounters c;
  c.requests = requests;
  c.cost_nusd = cost;
  return EncodeUsageCounters(c);
}

TEST(UsageAddOperatorTest, HasVersionedName) {
  EXPECT_STREQ(UsageAddOperator().Name(), "tokenmill.UsageAdd.v1");
}

TEST(UsageAddOperatorTest, AddsOperandToExistingValue) {
  UsageAddOperator op;
  const std::string existing = Encoded(2, 300);
  const rocksdb::Slice existing_slice(existing);
  std::string out;
  ASSERT_TRUE(op.Merge("k", &existing_slice, Encoded(1, 5), &out, nullptr));
  EXPECT_EQ(out, Encoded(3, 305));
}

TEST(UsageAddOperatorTest, OperandWithoutExistingValueIsTheValue) {
  UsageAddOperator op;
  std::string out;
  ASSERT_TRUE(op.Merge("k", nullptr, Encoded(7, 9), &out, nullptr));
  EXPECT_EQ(out, Encoded(7, 9));
}

TEST(UsageAddOperatorTest, RejectsMalformedOperand) {
  UsageAddOperator op;
  const std::string existing = Encoded(2, 300);
  const rocksdb::Slice existing_slice(existing);
  std::string out;
  EXPECT_FALSE(op.Merge("k", &existing_slice, "short", &out, nullptr));
  EXPECT_FALSE(op.Merge("k", nullptr, std::string(65, '\0'), &out, nullptr));
}

TEST(UsageAddOperatorTest, RejectsMalformedExistingValue) {
  UsageAddOperator op;
  const rocksdb::Slice existing_slice("bad");
  std::string out;
  EXPECT_FALSE(op.Merge("k", &existing_slice, Encoded(1, 1), &out, nullptr));
}

// RocksDB turns a false Merge into a corruption status on the read.
TEST(UsageAddOperatorTest, RocksDbReportsMalformedValuesAsCorruption) {
  testing::TempDir dir;
  rocksdb::Options options;
  options.create_if_missing = true;
  options.merge_operator = std::make_shared<UsageAddOperator>();
  rocksdb::DB* raw = nullptr;
  ASSERT_TRUE(rocksdb::DB::Open(options, (dir.path() / "db").string(), &raw).ok());
  std::unique_ptr<rocksdb::DB> db(raw);

  ASSERT_TRUE(db->Merge({}, "good", Encoded(1, 10)).ok());
  ASSERT_TRUE(db->Merge({}, "good", Encoded(2, 20)).ok());
  std::string value;
  ASSERT_TRUE(db->Get({}, "good", &value).ok());
  EXPECT_EQ(value, Encoded(3, 30));

  ASSERT_TRUE(db->Put({}, "bad_base", "xyz").ok());
  ASSERT_TRUE(db->Merge({}, "bad_base", Encoded(1, 1)).ok());
  rocksdb::Status s = db->Get({}, "bad_base", &value);
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
  EXPECT_EQ(FromRocks(s, "get_usage").code(), absl::StatusCode::kDataLoss);

  ASSERT_TRUE(db->Merge({}, "bad_operand", Encoded(1, 1)).ok());
  ASSERT_TRUE(db->Merge({}, "bad_operand", "nope").ok());
  s = db->Get({}, "bad_operand", &value);
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
  ASSERT_TRUE(db->Close().ok());
}

TEST(FromRocksTest, NamesTheOperationAndKeepsRocksDbsMessage) {
  const absl::Status s = FromRocks(rocksdb::Status::IOError("disk on fire"), "put_state");
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(s.message(), HasSubstr("put_state: "));
  EXPECT_THAT(s.message(), HasSubstr("disk on fire"));
}

TEST(FromRocksTest, MapsCodesToWhatTheCallerShouldDo) {
  EXPECT_TRUE(FromRocks(rocksdb::Status::OK(), "x").ok());
  EXPECT_EQ(FromRocks(rocksdb::Status::Corruption("c"), "x").code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(FromRocks(rocksdb::Status::NoSpace("full"), "x").code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(FromRocks(rocksdb::Status::Busy("b"), "x").code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(FromRocks(rocksdb::Status::ShutdownInProgress("s"), "x").code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(FromRocks(rocksdb::Status::InvalidArgument("i"), "x").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(FromRocks(rocksdb::Status::NotFound("n"), "x").code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace tokenmill::storage
