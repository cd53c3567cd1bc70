// GgufWriter -> GgufFile round trip of every metadata value type, and
// hand-made hostile headers the synthetic writer cannot produce.
#include <string>

#include "gtest/gtest.h"
#include "runtime/model/gguf_file.h"
#include "runtime/model/gguf_writer.h"
#include "tests/model/model_test_util.h"
#include "tests/support/temp_dir.h"

namespace tokenmill::model {
namespace {

absl::Status FillZeros(size_t, GgufTensorSink& sink, uint64_t bytes) {
  std::string zeros(bytes, '\0');
  return sink.Append(zeros.data(), zeros.size());
}

TEST(GgufFile, EveryValueTypeRoundTrips) {
  GgufWriter writer;
  GgufValue v;
  auto scalar = [](GgufType type, uint64_t u, int64_t i, double f) {
    GgufValue value;
    value.type = type;
    value.u = u;
    value.i = i;
    value.f = f;
    return value;
  };
  writer.AddMetadata("u8", scalar(GgufType::kU8, 200, 0, 0));
  writer.AddMetadata("i8", scalar(GgufType::kI8, 0, -100, 0));
  writer.AddMetadata("u16", scalar(GgufType::kU16, 60000, 0, 0));
  writer.AddMetadata("i16", scalar(GgufType::kI16, 0, -30000, 0));
  writer.AddMetadata("u32", GgufValue::U32(4000000000u));
  writer.AddMetadata("i32", GgufValue::I32(-2000000000));
  writer.AddMetadata("f32", GgufValue::F32(0.25f));
  writer.AddMetadata("bool", GgufValue::Bool(true));
  writer.AddMetadata("string", GgufValue::String("héllo"));
  writer.AddMetadata("u64", GgufValue::U64(~uint64_t{0}));
  writer.AddMetadata("i64", scalar(GgufType::kI64, 0, -(int64_t{1} << 50), 0));
  writer.AddMetadata("f64", scalar(GgufType::kF64, 0, 0, 1e-300));
  writer.AddMetadata("strings", GgufValue::StringArray({"a", "", "c c"}));
  writer.AddMetadata("i32s", GgufValue::IntArray(GgufType::kI32, {1, -2, 3}));
  writer.AddMetadata("bools", GgufValue::IntArray(GgufType::kBool, {1, 0}));
  writer.AddMetadata("f32s", GgufValue::FloatArray(GgufType::kF32, {0.5, -1.5}));
  writer.AddTensor("t", /*f32*/ 0, {3, 4});
  writer.AddTensor("u", /*q8_0*/ 8, {2, 64});
  tokenmill::testing::TempDir dir;
  const auto path = dir.path() / "all.gguf";
  ASSERT_TRUE(writer
                  .Write(path,
                         [](size_t index, GgufTensorSink& sink) {
                           return FillZeros(index, sink, index == 0 ? 48 : 2 * 68);
                         })
                  .ok());
  auto file = GgufFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  const GgufFile& f = **file;
  EXPECT_EQ(f.Find("u8")->AsInt(), 200);
  EXPECT_EQ(f.Find("i8")->AsInt(), -100);
  EXPECT_EQ(f.Find("u16")->AsInt(), 60000);
  EXPECT_EQ(f.Find("i16")->AsInt(), -30000);
  EXPECT_EQ(f.Find("u32")->AsInt(), 4000000000);
  EXPECT_EQ(f.Find("i32")->AsInt(), -2000000000);
  EXPECT_EQ(f.Find("f32")->AsDouble(), 0.25);
  EXPECT_EQ(f.Find("bool")->type, GgufType::kBool);
  EXPECT_TRUE(f.Find("bool")->b);
  EXPECT_EQ(f.Find("string")->s, "héllo");
  EXPECT_EQ(f.Find("u64")->u, ~uint64_t{0});
  EXPECT_EQ(f.Find("u64")->AsInt(), std::nullopt);  // does not fit
  EXPECT_EQ(f.Find("i64")->AsInt(), -(int64_t{1} << 50));
  EXPECT_EQ(f.Find("f64")->AsDouble(), 1e-300);
  EXPECT_EQ(f.Find("strings")->strings, (std::vector<std::string>{"a", "", "c c"}));
  EXPECT_EQ(f.Find("i32s")->ints, (std::vector<int64_t>{1, -2, 3}));
  EXPECT_EQ(f.Find("bools")->ints, (std::vector<int64_t>{1, 0}));
  EXPECT_EQ(f.Find("f32s")->floats, (std::vector<double>{0.5, -1.5}));
  EXPECT_EQ(f.Find("f32s")->AsText(), std::nullopt);
  EXPECT_EQ(f.Find("bool")->AsText(), "true");
  EXPECT_EQ(f.Find("nope"), nullptr);
  ASSERT_EQ(f.tensors().size(), 2u);
  EXPECT_EQ(f.FindTensor("t")->Shape(), (std::vector<int64_t>{3, 4}));
  EXPECT_EQ(f.FindTensor("t")->bytes, 48u);
  EXPECT_EQ(f.FindTensor("u")->bytes, 2u * 68);
  EXPECT_EQ(f.FindTensor("u")->offset, 64u);  // 48 rounded up to 32
  EXPECT_EQ(f.FindTensor("u")->data, f.FindTensor("t")->data + 64);
}

TEST(GgufFile, WriterChecksTensorSizes) {
  GgufWriter writer;
  writer.AddTensor("t", 0, {4});
  tokenmill::testing::TempDir dir;
  const auto path = dir.path() / "short.gguf";
  absl::Status s =
      writer.Write(path, [](size_t i, GgufTensorSink& sink) { return FillZeros(i, sink, 8); });
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_FALSE(std::filesystem::exists(path.string() + ".tmp"));
}

class HostileHeaderTest : public ::testing::Test {
 protected:
  absl::Status Parse(const std::string& bytes) {
    const auto path = dir_.path() / "h.gguf";
    testing::WriteBytes(path, bytes);
    auto file = GgufFile::Open(path);
    return file.status();
  }
  static std::string Header(uint64_t tensors, uint64_t kvs) {
    std::string b = "GGUF";
    Put<uint32_t>(b, 3);
    Put<uint64_t>(b, tensors);
    Put<uint64_t>(b, kvs);
    return b;
  }
  template <typename T>
  static void Put(std::string& b, T v) {
    b.append(reinterpret_cast<const char*>(&v), sizeof(T));
  }
  static void PutString(std::string& b, const std::string& s) {
    Put<uint64_t>(b, s.size());
    b += s;
  }
  tokenmill::testing::TempDir dir_;
};

TEST_F(HostileHeaderTest, NestedArraysDuplicateKeysAndBadAlignment) {
  std::string b = Header(0, 1);
  PutString(b, "nested");
  Put<uint32_t>(b, 9);
  Put<uint32_t>(b, 9);
  Put<uint64_t>(b, 1);
  b += std::string(32, '\0');
  absl::Status s = Parse(b);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(s.message()).find("nested"), std::string::npos) << s;

  b = Header(0, 2);
  for (int k = 0; k < 2; ++k) {
    PutString(b, "dup");
    Put<uint32_t>(b, 4);
    Put<uint32_t>(b, 1);
  }
  s = Parse(b);
  EXPECT_NE(std::string(s.message()).find("duplicate"), std::string::npos) << s;

  b = Header(0, 1);
  PutString(b, "general.alignment");
  Put<uint32_t>(b, 4);
  Put<uint32_t>(b, 24);
  s = Parse(b);
  EXPECT_NE(std::string(s.message()).find("general.alignment"), std::string::npos) << s;

  b = Header(0, 1);
  PutString(b, "flag");
  Put<uint32_t>(b, 7);
  Put<uint8_t>(b, 2);
  s = Parse(b);
  EXPECT_NE(std::string(s.message()).find("bool"), std::string::npos) << s;
}

TEST_F(HostileHeaderTest, HugeArraysAndTensorsAreBoundedByTheFileSize) {
  // A u8 array claiming 2^40 items in a tiny file: refused before allocating.
  std::string b = Header(0, 1);
  PutString(b, "big");
  Put<uint32_t>(b, 9);
  Put<uint32_t>(b, 0);
  Put<uint64_t>(b, uint64_t{1} << 40);
  b += "xyz";
  absl::Status s = Parse(b);
  EXPECT_NE(std::string(s.message()).find("'big'"), std::string::npos) << s;

  // A tensor whose byte size overflows u64.
  b = Header(1, 0);
  PutString(b, "huge");
  Put<uint32_t>(b, 2);
  Put<uint64_t>(b, uint64_t{1} << 32);
  Put<uint64_t>(b, uint64_t{1} << 31);
  Put<uint32_t>(b, 0);
  Put<uint64_t>(b, 0);
  s = Parse(b);
  EXPECT_NE(std::string(s.message()).find("'huge'"), std::string::npos) << s;

  // Two tensors with the same name.
  b = Header(2, 0);
  for (int k = 0; k < 2; ++k) {
    PutString(b, "twin");
    Put<uint32_t>(b, 1);
    Put<uint64_t>(b, 8);
    Put<uint32_t>(b, 0);
    Put<uint64_t>(b, 32 * k);
  }
  b += std::string(128, '\0');
  s = Parse(b);
  EXPECT_NE(std::string(s.message()).find("duplicate tensor"), std::string::npos) << s;
}

}  // namespace
}  // namespace tokenmill::model
