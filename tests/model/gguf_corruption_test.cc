// Corrupt, truncated and hostile GGUF files are refused with a message that
// names the file and the item at fault; random damage never crashes (this
// suite also runs under ASan/UBSan).
#include <string>

#include "gtest/gtest.h"
#include "runtime/model/gguf_file.h"
#include "runtime/model/model_loader.h"
#include "runtime/model/synth.h"
#include "tests/model/model_test_util.h"
#include "tests/support/temp_dir.h"

namespace tokenmill::model {
namespace {

using testing::FindTensorInfo;
using testing::Peek;
using testing::Poke;
using testing::ReadBytes;
using testing::WriteBytes;

class GgufCorruptionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SynthOptions o;
    o.dim = 64;
    o.n_layers = 2;
    o.n_heads = 4;
    o.n_kv_heads = 2;
    o.ffn_dim = 128;
    o.vocab_size = 300;
    o.weight_type = devices::TensorType::kQ8_0;
    good_ = dir_.path() / "good.gguf";
    ASSERT_TRUE(WriteSynthGguf(o, good_).ok());
    bytes_ = ReadBytes(good_);
    auto file = GgufFile::Open(good_);
    ASSERT_TRUE(file.ok());
    header_end_ = (*file)->data_offset();
  }

  // Loads `bytes` from bad.gguf and expects failure with `code` and a message
  // naming the file and containing every part of `parts`.
  void ExpectRefused(const std::string& bytes, absl::StatusCode code,
                     std::initializer_list<std::string> parts) {
    const auto path = dir_.path() / "bad.gguf";
    WriteBytes(path, bytes);
    auto model = LoadModel(path);
    ASSERT_FALSE(model.ok()) << "accepted a corrupt file";
    EXPECT_EQ(model.status().code(), code) << model.status();
    const std::string message(model.status().message());
    EXPECT_NE(message.find(path.string()), std::string::npos) << message;
    for (const std::string& part : parts) {
      EXPECT_NE(message.find(part), std::string::npos) << "'" << part << "' not in: " << message;
    }
  }

  tokenmill::testing::TempDir dir_;
  std::filesystem::path good_;
  std::string bytes_;
  size_t header_end_ = 0;
};

TEST_F(GgufCorruptionTest, GoodFileLoads) { EXPECT_TRUE(LoadModel(good_).ok()); }

TEST_F(GgufCorruptionTest, TruncatedAnywhereIsRefused) {
  std::vector<size_t> cuts;
  for (size_t k = 0; k < 64; ++k) cuts.push_back(bytes_.size() * k / 64);
  for (size_t k = 1; k < 160; ++k) cuts.push_back(k);  // the fixed header and first keys
  cuts.push_back(header_end_ - 1);
  cuts.push_back(bytes_.size() - 1);
  for (size_t cut : cuts) {
    SCOPED_TRACE(cut);
    const auto path = dir_.path() / "cut.gguf";
    WriteBytes(path, bytes_.substr(0, cut));
    auto model = LoadModel(path);
    ASSERT_FALSE(model.ok());
    EXPECT_NE(std::string(model.status().message()).find(path.string()), std::string::npos)
        << model.status();
  }
}

TEST_F(GgufCorruptionTest, BadMagic) {
  std::string b = bytes_;
  b[0] = 'X';
  ExpectRefused(b, absl::StatusCode::kInvalidArgument, {"GGUF"});
  // The GGUF reader itself says so too (LoadModel checks the magic first).
  WriteBytes(dir_.path() / "m.gguf", b);
  auto file = GgufFile::Open(dir_.path() / "m.gguf");
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(GgufCorruptionTest, Version1And4AreUnsupported) {
  std::string b = bytes_;
  Poke<uint32_t>(b, 4, 1);
  ExpectRefused(b, absl::StatusCode::kUnimplemented, {"version 1"});
  Poke<uint32_t>(b, 4, 4);
  ExpectRefused(b, absl::StatusCode::kUnimplemented, {"version 4"});
  Poke<uint32_t>(b, 4, 0x03000000);
  ExpectRefused(b, absl::StatusCode::kUnimplemented, {"big-endian"});
}

TEST_F(GgufCorruptionTest, Version2IsAccepted) {
  std::string b = bytes_;
  Poke<uint32_t>(b, 4, 2);
  WriteBytes(dir_.path() / "v2.gguf", b);
  EXPECT_TRUE(LoadModel(dir_.path() / "v2.gguf").ok());
}

TEST_F(GgufCorruptionTest, AbsurdCounts) {
  std::string b = bytes_;
  Poke<uint64_t>(b, 8, uint64_t{1} << 60);  // tensor count
  ExpectRefused(b, absl::StatusCode::kInvalidArgument, {"tensor count"});
  b = bytes_;
  Poke<uint64_t>(b, 16, uint64_t{1} << 60);  // metadata count
  ExpectRefused(b, absl::StatusCode::kInvalidArgument, {"metadata count"});
}

TEST_F(GgufCorruptionTest, AbsurdStringLength) {
  std::string b = bytes_;
  const size_t at = testing::AfterGgufString(b, "general.name");
  ASSERT_NE(at, std::string::npos);
  // general.name's value: type u32 (string) then its u64 length.
  Poke<uint64_t>(b, at + 4, uint64_t{1} << 62);
  ExpectRefused(b, absl::StatusCode::kInvalidArgument, {"general.name", "string length"});
}

TEST_F(GgufCorruptionTest, AbsurdArrayLength) {
  std::string b = bytes_;
  const size_t at = testing::AfterGgufString(b, "tokenizer.ggml.tokens");
  ASSERT_NE(at, std::string::npos);
  Poke<uint64_t>(b, at + 8, uint64_t{1} << 61);  // after value type and item type
  ExpectRefused(b, absl::StatusCode::kInvalidArgument, {"tokenizer.ggml.tokens", "array"});
}

TEST_F(GgufCorruptionTest, UnknownValueType) {
  std::string b = bytes_;
  const size_t at = testing::AfterGgufString(b, "llama.block_count");
  Poke<uint32_t>(b, at, 77);
  ExpectRefused(b, absl::StatusCode::kInvalidArgument, {"llama.block_count", "unknown value type"});
}

TEST_F(GgufCorruptionTest, TensorOffsetPastTheEnd) {
  std::string b = bytes_;
  const auto at = FindTensorInfo(b, "blk.1.ffn_down.weight");
  Poke<uint64_t>(b, at.offset, uint64_t{1} << 40);
  ExpectRefused(b, absl::StatusCode::kInvalidArgument, {"blk.1.ffn_down.weight", "past the end"});
  Poke<uint64_t>(b, at.offset, ~uint64_t{0} - 31);  // offset + bytes would wrap
  ExpectRefused(b, absl::StatusCode::kInvalidArgument, {"blk.1.ffn_down.weight"});
}

TEST_F(GgufCorruptionTest, MisalignedAndOverlappingTensors) {
  std::string b = bytes_;
  const auto q = FindTensorInfo(b, "blk.0.attn_q.weight");
  const auto k = FindTensorInfo(b, "blk.0.attn_k.weight");
  Poke<uint64_t>(b, k.offset, Peek<uint64_t>(b, k.offset) + 1);
  ExpectRefused(b, absl::StatusCode::kInvalidArgument, {"blk.0.attn_k.weight", "alignment"});
  b = bytes_;
  Poke<uint64_t>(b, k.offset, Peek<uint64_t>(b, q.offset));
  ExpectRefused(b, absl::StatusCode::kInvalidArgument, {"overlaps", "blk.0.attn_q.weight"});
}

TEST_F(GgufCorruptionTest, UnknownAndUnsupportedGgmlTypes) {
  std::string b = bytes_;
  const auto at = FindTensorInfo(b, "blk.0.ffn_up.weight");
  Poke<uint32_t>(b, at.type, 99);
  ExpectRefused(b, absl::StatusCode::kInvalidArgument,
                {"blk.0.ffn_up.weight", "unknown ggml type 99"});
  Poke<uint32_t>(b, at.type, 16);  // iq2_xxs: a real type whose layout we do not carry
  ExpectRefused(b, absl::StatusCode::kUnimplemented, {"blk.0.ffn_up.weight", "iq2_xxs"});
}

TEST_F(GgufCorruptionTest, UnsupportedKQuantTypeIsUnimplemented) {
  // A file valid in itself whose weights use q3_K (256-element blocks).
  SynthOptions o;
  o.dim = 256;
  o.n_layers = 1;
  o.n_heads = 4;
  o.n_kv_heads = 4;
  o.ffn_dim = 256;
  o.vocab_size = 300;
  o.weight_type = devices::TensorType::kQ8_0;
  const auto path = dir_.path() / "k.gguf";
  ASSERT_TRUE(WriteSynthGguf(o, path).ok());
  std::string b = ReadBytes(path);
  const auto at = FindTensorInfo(b, "blk.0.ffn_up.weight");
  Poke<uint32_t>(b, at.type, 11);  // q3_K: 110 bytes per 256, fits in the q8_0 space
  ExpectRefused(b, absl::StatusCode::kUnimplemented, {"blk.0.ffn_up.weight", "q3_K"});
}

TEST_F(GgufCorruptionTest, TooManyDimsAndOverflowingSizes) {
  std::string b = bytes_;
  const auto at = FindTensorInfo(b, "output.weight");
  Poke<uint32_t>(b, at.n_dims, 5);
  ExpectRefused(b, absl::StatusCode::kInvalidArgument, {"output.weight", "n_dims 5"});
  b = bytes_;
  Poke<uint64_t>(b, at.ne + 8, uint64_t{1} << 62);  // rows
  ExpectRefused(b, absl::StatusCode::kInvalidArgument, {"output.weight"});
  b = bytes_;
  Poke<uint64_t>(b, at.ne, 33);  // row length not a multiple of the q8_0 block
  ExpectRefused(b, absl::StatusCode::kInvalidArgument, {"output.weight", "multiple"});
}

TEST_F(GgufCorruptionTest, WrongTensorShapeIsNamed) {
  std::string b = bytes_;
  const auto at = FindTensorInfo(b, "blk.1.attn_k.weight");
  Poke<uint64_t>(b, at.ne + 8, 16);  // 16 rows instead of kv_heads * head_dim = 32
  ExpectRefused(b, absl::StatusCode::kInvalidArgument,
                {"blk.1.attn_k.weight", "{16, 64}", "{32, 64}"});
}

TEST_F(GgufCorruptionTest, MissingTensorIsNamed) {
  std::string b = bytes_;
  const size_t at = testing::AfterGgufString(b, "blk.1.ffn_gate.weight");
  b[at - 1] = 'X';  // blk.1.ffn_gate.weighX
  const std::string message = "blk.1.ffn_gate.weight' is missing";
  ExpectRefused(b, absl::StatusCode::kInvalidArgument, {message});
}

TEST_F(GgufCorruptionTest, MissingKeyIsNamed) {
  std::string b = bytes_;
  const size_t at = testing::AfterGgufString(b, "llama.embedding_length");
  b[at - 1] = 'X';
  ExpectRefused(b, absl::StatusCode::kInvalidArgument, {"llama.embedding_length", "missing"});
}

TEST_F(GgufCorruptionTest, InconsistentHyperparameters) {
  std::string b = bytes_;
  size_t at = testing::AfterGgufString(b, "llama.rope.dimension_count");
  Poke<uint32_t>(b, at + 4, 8);
  ExpectRefused(b, absl::StatusCode::kUnimplemented, {"llama.rope.dimension_count", "partial"});
  b = bytes_;
  at = testing::AfterGgufString(b, "llama.attention.head_count_kv");
  Poke<uint32_t>(b, at + 4, 3);
  ExpectRefused(b, absl::StatusCode::kInvalidArgument,
                {"llama.attention.head_count_kv", "3 does not divide"});
  b = bytes_;
  at = testing::AfterGgufString(b, "tokenizer.ggml.eos_token_id");
  Poke<uint32_t>(b, at + 4, 5000);
  ExpectRefused(b, absl::StatusCode::kInvalidArgument, {"tokenizer.ggml.eos_token_id", "5000"});
  b = bytes_;
  at = testing::AfterGgufString(b, "general.architecture");
  b[at + 4 + 8] = 'X';  // "Xlama"
  ExpectRefused(b, absl::StatusCode::kUnimplemented, {"Xlama"});
}

TEST_F(GgufCorruptionTest, RandomHeaderBytesNeverCrash) {
  uint64_t state = 12345;
  auto next = [&] {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  };
  const auto path = dir_.path() / "fuzz.gguf";
  int refused = 0;
  for (int k = 0; k < 500; ++k) {
    std::string b = bytes_;
    const size_t pos = next() % header_end_;
    b[pos] = static_cast<char>(next() & 0xff);
    WriteBytes(path, b);
    auto model = LoadModel(path);
    if (!model.ok()) {
      ++refused;
      EXPECT_NE(std::string(model.status().message()).find(path.string()), std::string::npos)
          << model.status();
    }
  }
  // Most header bytes are token text, where any byte is valid; structural
  // bytes must still be caught often.
  EXPECT_GT(refused, 10);
}

}  // namespace
}  // namespace tokenmill::model
