// The CPU executor refuses bad models, options and batches, and a refused
// batch changes nothing.
#include <vector>

#include "devices/cpu/cpu_executor.h"
#include "gtest/gtest.h"
#include "tests/executor/executor_test_util.h"

namespace tokenmill::devices::cpu::testing {
namespace {

class CpuExecutorValidationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model::SynthOptions o = TinyModel(Architecture::kLlama, TensorType::kF16);
    o.context_length = 32;
    model_ = Synthesize(o);
    ASSERT_FALSE(model_.spec.layers.empty());
  }
  model::LoadedModel model_;
};

TEST_F(CpuExecutorValidationTest, CreateRefusesBadOptionsAndSpecs) {
  ExecutorOptions o;
  o.kv_blocks = 8;
  o.threads = 1;
  EXPECT_TRUE(CreateCpuExecutor(model_.spec, o).ok());

  ExecutorOptions bad = o;
  bad.kv_blocks = 0;
  EXPECT_EQ(CreateCpuExecutor(model_.spec, bad).status().code(),
            absl::StatusCode::kInvalidArgument);
  bad = o;
  bad.block_tokens = 0;
  EXPECT_EQ(CreateCpuExecutor(model_.spec, bad).status().code(),
            absl::StatusCode::kInvalidArgument);
  bad = o;
  bad.max_batch_tokens = 0;
  EXPECT_EQ(CreateCpuExecutor(model_.spec, bad).status().code(),
            absl::StatusCode::kInvalidArgument);

  ModelSpec spec = model_.spec;
  spec.layers[1].wk.shape = {spec.layers[1].wk.shape[0] / 2, spec.layers[1].wk.shape[1]};
  absl::StatusOr<ExecutorPtr> e = CreateCpuExecutor(spec, o);
  EXPECT_EQ(e.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(e.status().message()).find("wk"), std::string::npos) << e.status();

  spec = model_.spec;
  spec.layers[0].ffn_norm = TensorView();
  EXPECT_EQ(CreateCpuExecutor(spec, o).status().code(), absl::StatusCode::kInvalidArgument);

  spec = model_.spec;
  spec.hp.n_kv_heads = 3;
  EXPECT_EQ(CreateCpuExecutor(spec, o).status().code(), absl::StatusCode::kInvalidArgument);

  spec = model_.spec;
  spec.layers.pop_back();
  EXPECT_EQ(CreateCpuExecutor(spec, o).status().code(), absl::StatusCode::kInvalidArgument);

  spec = model_.spec;
  spec.layers[0].wq.type = static_cast<TensorType>(99);  // no such GGML type
  EXPECT_EQ(CreateCpuExecutor(spec, o).status().code(), absl::StatusCode::kUnimplemented);
}

TEST_F(CpuExecutorValidationTest, InvalidBatchesAreRefusedAndLeaveTheCacheAlone) {
  constexpr int32_t kBlockTokens = 4;
  constexpr uint32_t kBlocks = 16;
  auto e = MakeExecutor(model_.spec, kBlockTokens, KvType::kF16, kBlocks, 2,
                        /*max_batch_tokens=*/24);
  ASSERT_NE(e, nullptr);
  const std::vector<uint32_t> ids = ShuffledBlocks(kBlocks, 1);
  const std::vector<uint32_t> table_a(ids.begin(), ids.begin() + 8);
  const std::vector<uint32_t> table_b(ids.begin() + 8, ids.end());
  const std::vector<int32_t> prompt = Prompt(10, model_.spec.hp.vocab_size, 2);
  RunAlone(*e, 1, prompt, 0, table_a, LogitsWanted::kNone);
  const std::vector<uint8_t> kv_before(e->kv_bytes_for_testing().begin(),
                                       e->kv_bytes_for_testing().end());

  const std::vector<int32_t> one = {5}, bad_token = {300}, negative = {-1}, empty;
  const std::vector<int32_t> too_many(25, 3);
  const std::vector<uint32_t> bad_block = {0, 1, kBlocks};
  const std::vector<uint32_t> short_table(table_a.begin(), table_a.begin() + 2);
  const std::vector<uint32_t> table_b_reads_a = {table_b[0], table_a[2], table_b[2]};
  std::vector<uint32_t> table_b_writes_a(table_b.begin(), table_b.begin() + 3);
  table_b_writes_a[2] = table_a[2];  // the block A writes at position 10

  struct BadBatch {
    const char* what;
    std::vector<SequenceStep> seqs;
  };
  const BadBatch cases[] = {
      {"token outside vocab", {Step(1, bad_token, 10, table_a, LogitsWanted::kLast)}},
      {"negative token", {Step(1, negative, 10, table_a, LogitsWanted::kLast)}},
      {"no tokens", {Step(1, empty, 10, table_a, LogitsWanted::kLast)}},
      {"block id out of range", {Step(2, one, 9, bad_block, LogitsWanted::kLast)}},
      {"too few blocks", {Step(1, one, 10, short_table, LogitsWanted::kLast)}},
      {"position past context", {Step(1, one, 32, table_a, LogitsWanted::kLast)}},
      {"negative position", {Step(1, one, -1, table_a, LogitsWanted::kLast)}},
      {"more than max_batch_tokens", {Step(2, too_many, 0, table_b, LogitsWanted::kLast)}},
      {"duplicate sequence",
       {Step(1, one, 10, table_a, LogitsWanted::kLast),
        Step(1, one, 11, table_a, LogitsWanted::kLast)}},
      {"reads a block another writes",
       {Step(1, one, 10, table_a, LogitsWanted::kLast),
        Step(2, one, 8, table_b_reads_a, LogitsWanted::kLast)}},
      {"two write one block",
       {Step(1, one, 10, table_a, LogitsWanted::kLast),
        Step(2, one, 8, table_b_writes_a, LogitsWanted::kLast)}},
  };
  for (const BadBatch& c : cases) {
    Batch batch;
    batch.seqs = c.seqs;
    absl::StatusOr<StepOutput> out = e->Forward(batch);
    EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument) << c.what;
    const auto kv = e->kv_bytes_for_testing();
    EXPECT_TRUE(std::equal(kv.begin(), kv.end(), kv_before.begin(), kv_before.end())) << c.what;
  }

  // The refusals left no state behind: the next valid steps still work.
  const std::vector<float> logits = RunAlone(*e, 1, one, 10, table_a, LogitsWanted::kLast);
  EXPECT_EQ(logits.size(), static_cast<size_t>(model_.spec.hp.vocab_size));
  EXPECT_TRUE(AllFinite(logits));
  Batch two_seqs;
  two_seqs.seqs.push_back(Step(1, one, 11, table_a, LogitsWanted::kLast));
  two_seqs.seqs.push_back(Step(2, prompt, 0, table_b, LogitsWanted::kNone));
  absl::StatusOr<StepOutput> out = e->Forward(two_seqs);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->logits.size(), static_cast<size_t>(model_.spec.hp.vocab_size));
}

TEST_F(CpuExecutorValidationTest, EmptyBatchIsANoOp) {
  auto e = MakeExecutor(model_.spec, 16, KvType::kF16, 4);
  ASSERT_NE(e, nullptr);
  absl::StatusOr<StepOutput> out = e->Forward(Batch{});
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_TRUE(out->logits.empty());
  EXPECT_EQ(out->vocab_size, model_.spec.hp.vocab_size);
}

TEST_F(CpuExecutorValidationTest, ReportsLayoutAndCapacity) {
  auto e = MakeExecutor(model_.spec, 8, KvType::kF32, 5);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->kv_blocks(), 5u);
  EXPECT_EQ(e->kv_layout().block_tokens, 8);
  EXPECT_EQ(e->kv_layout().type, KvType::kF32);
  EXPECT_EQ(e->kv_bytes_for_testing().size(), 5 * e->kv_layout().BlockBytes());
  EXPECT_EQ(e->spec().hp.dim, model_.spec.hp.dim);
}

}  // namespace
}  // namespace tokenmill::devices::cpu::testing
