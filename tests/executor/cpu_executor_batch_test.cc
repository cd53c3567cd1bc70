// The CPU executor's batching contract: chunked prefill, mixed prefill and
// decode steps, shared prefix blocks, wide decode batches and thread counts
// all give the logits of running each sequence alone.
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/executor/executor_test_util.h"

namespace tokenmill::devices::cpu::testing {
namespace {

// Batching changes how many activation rows a matmul sees, never the sums of
// one row. Measured: bitwise identical with the scalar, AVX2 and AVX-512
// kernels; the bound leaves room for kernels whose row tiling changes the
// summation order of a row.
constexpr double kBatchingTolerance = 1e-6;
// With experts, batching also changes how many rows each expert's matmul
// sees (any count from 1 to the batch), and the AVX2/AVX-512 f32/f16 and
// Q8_0 VNNI kernels are not bitwise invariant to every row count (they
// group activation rows into tiles of up to 6; measured: last-bit
// differences). Q8_0 would turn such a bit into a rounding flip of an
// activation (~1e-2 downstream), so the MoE model here is f16 (measured
// <= 4e-6).
constexpr double kExpertBatchingTolerance = 2e-5;

// Qwen2 (dense, biases) and Qwen3-MoE, where batching also changes how many
// tokens share each expert (8 experts, 2 per token: in a 16-token step some
// experts serve several tokens and a decode of one token leaves 6 unused).
class CpuExecutorBatchTest : public ::testing::TestWithParam<Architecture> {
 protected:
  void SetUp() override {
    model_ = Synthesize(TinyModel(GetParam(), Moe() ? TensorType::kF16 : TensorType::kQ8_0));
    ASSERT_FALSE(model_.spec.layers.empty());
  }
  bool Moe() const { return GetParam() == Architecture::kQwen3Moe; }
  double Tolerance() const { return Moe() ? kExpertBatchingTolerance : kBatchingTolerance; }
  const ModelSpec& spec() const { return model_.spec; }
  int32_t vocab() const { return model_.spec.hp.vocab_size; }

  model::LoadedModel model_;
};

TEST_P(CpuExecutorBatchTest, ChunkedPrefillEqualsOneStep) {
  constexpr int32_t kBlockTokens = 4, kChunk = 5;
  const std::vector<int32_t> prompt = Prompt(23, vocab(), 1);
  const std::vector<uint32_t> table = ShuffledBlocks(16, 2);
  auto whole = MakeExecutor(spec(), kBlockTokens, KvType::kF16, 16);
  auto chunked = MakeExecutor(spec(), kBlockTokens, KvType::kF16, 16);
  ASSERT_TRUE(whole && chunked);

  const std::vector<float> want = RunAlone(*whole, 1, prompt, 0, table);
  std::vector<float> got;
  for (int32_t start = 0; start < static_cast<int32_t>(prompt.size()); start += kChunk) {
    const auto chunk = std::span<const int32_t>(prompt).subspan(
        static_cast<size_t>(start),
        std::min<size_t>(kChunk, prompt.size() - static_cast<size_t>(start)));
    const std::vector<float> part = RunAlone(*chunked, 1, chunk, start, table);
    got.insert(got.end(), part.begin(), part.end());
  }
  ASSERT_EQ(got.size(), want.size());
  EXPECT_LE(RelativeError(got, want), Tolerance());
  // The caches agree too: the same next-token logits.
  const int32_t next = 42;
  EXPECT_LE(RelativeError(RunAlone(*chunked, 1, std::span<const int32_t>(&next, 1), 23, table),
                          RunAlone(*whole, 1, std::span<const int32_t>(&next, 1), 23, table)),
            Tolerance());
}

// A prefills its second chunk while B and C decode, each with its own
// shuffled, non-contiguous blocks; every row equals that sequence run alone.
TEST_P(CpuExecutorBatchTest, MixedPrefillAndDecodesEqualEachAlone) {
  constexpr int32_t kBlockTokens = 4;
  constexpr uint32_t kBlocks = 48;
  const std::vector<uint32_t> ids = ShuffledBlocks(kBlocks, 5);
  const std::vector<uint32_t> table_a(ids.begin(), ids.begin() + 12);
  const std::vector<uint32_t> table_b(ids.begin() + 12, ids.begin() + 24);
  const std::vector<uint32_t> table_c(ids.begin() + 24, ids.begin() + 36);
  const std::vector<int32_t> a = Prompt(20, vocab(), 10), b = Prompt(9, vocab(), 11),
                             c = Prompt(14, vocab(), 12);
  const std::vector<int32_t> b_next = {7}, c_next = {250};
  const auto a1 = std::span<const int32_t>(a).first(8), a2 = std::span<const int32_t>(a).subspan(8);

  auto batched = MakeExecutor(spec(), kBlockTokens, KvType::kF16, kBlocks);
  auto alone = MakeExecutor(spec(), kBlockTokens, KvType::kF16, kBlocks);
  ASSERT_TRUE(batched && alone);
  for (Executor* e : {static_cast<Executor*>(batched.get()), static_cast<Executor*>(alone.get())}) {
    RunAlone(*e, 1, a1, 0, table_a, LogitsWanted::kNone);
    RunAlone(*e, 2, b, 0, table_b, LogitsWanted::kNone);
    RunAlone(*e, 3, c, 0, table_c, LogitsWanted::kNone);
  }

  Batch batch;
  batch.seqs.push_back(Step(1, a2, 8, table_a, LogitsWanted::kAll));
  batch.seqs.push_back(Step(2, b_next, 9, table_b, LogitsWanted::kLast));
  batch.seqs.push_back(Step(3, c_next, 14, table_c, LogitsWanted::kLast));
  absl::StatusOr<StepOutput> out = batched->Forward(batch);
  ASSERT_TRUE(out.ok()) << out.status();
  const size_t v = static_cast<size_t>(vocab());
  ASSERT_EQ(out->logits.size(), (a2.size() + 2) * v);
  EXPECT_EQ(out->vocab_size, vocab());
  EXPECT_GT(out->device_time.count(), 0);

  std::vector<float> want = RunAlone(*alone, 1, a2, 8, table_a);
  const std::vector<float> want_b = RunAlone(*alone, 2, b_next, 9, table_b);
  const std::vector<float> want_c = RunAlone(*alone, 3, c_next, 14, table_c);
  want.insert(want.end(), want_b.begin(), want_b.end());
  want.insert(want.end(), want_c.begin(), want_c.end());
  EXPECT_LE(RelativeError(out->logits, want), Tolerance());
}

// kArgmax rows leave the logits: the step returns their greedy tokens and
// the other rows, closed up in batch order, exactly as a step wanting every
// row gives them.
TEST_P(CpuExecutorBatchTest, ArgmaxRowsReturnOnlyTheirTokens) {
  constexpr int32_t kBlockTokens = 4;
  constexpr uint32_t kBlocks = 32;
  const std::vector<uint32_t> ids = ShuffledBlocks(kBlocks, 9);
  std::vector<std::vector<uint32_t>> tables;
  std::vector<std::vector<int32_t>> prompts;
  for (uint32_t i = 0; i < 4; ++i) {
    tables.emplace_back(ids.begin() + 8 * i, ids.begin() + 8 * (i + 1));
    prompts.push_back(Prompt(6 + static_cast<int32_t>(i), vocab(), 20 + i));
  }
  auto argmax = MakeExecutor(spec(), kBlockTokens, KvType::kF16, kBlocks);
  auto rows = MakeExecutor(spec(), kBlockTokens, KvType::kF16, kBlocks);
  ASSERT_TRUE(argmax && rows);
  const LogitsWanted with_argmax[] = {LogitsWanted::kArgmax, LogitsWanted::kAll,
                                      LogitsWanted::kLast, LogitsWanted::kArgmax};
  const LogitsWanted with_rows[] = {LogitsWanted::kLast, LogitsWanted::kAll, LogitsWanted::kLast,
                                    LogitsWanted::kLast};
  std::vector<float> want_logits;
  std::vector<int32_t> want_argmax;
  std::vector<StepOutput> outs;
  for (const auto* wanted : {with_argmax, with_rows}) {
    Executor& e = wanted == with_argmax ? *argmax : *rows;
    Batch batch;
    for (uint64_t i = 0; i < 4; ++i) {
      batch.seqs.push_back(Step(i + 1, prompts[i], 0, tables[i], wanted[i]));
    }
    absl::StatusOr<StepOutput> out = e.Forward(batch);
    ASSERT_TRUE(out.ok()) << out.status();
    outs.push_back(std::move(*out));
  }
  const size_t v = static_cast<size_t>(vocab());
  const std::vector<float>& all = outs[1].logits;
  ASSERT_EQ(all.size(), (1 + prompts[1].size() + 1 + 1) * v);
  EXPECT_TRUE(outs[1].argmax.empty());
  // Rows of the every-row step: A, B's tokens, C, D.
  const size_t row_c = 1 + prompts[1].size(), row_d = row_c + 1;
  const std::vector<int32_t> greedy = {GreedyToken({all.data(), v}),
                                       GreedyToken({all.data() + row_d * v, v})};
  EXPECT_EQ(outs[0].argmax, greedy);
  const std::vector<float> kept(all.begin() + static_cast<std::ptrdiff_t>(v),
                                all.begin() + static_cast<std::ptrdiff_t>(row_d * v));
  EXPECT_EQ(outs[0].logits, kept);
}

INSTANTIATE_TEST_SUITE_P(Archs, CpuExecutorBatchTest,
                         ::testing::Values(Architecture::kQwen2, Architecture::kQwen3Moe),
                         [](const ::testing::TestParamInfo<Architecture>& info) {
                           return std::string(ArchitectureName(info.param));
                         });

TEST(GreedyTokenTest, LowestIndexOnTiesAndNanIgnored) {
  const float nan = std::nanf("");
  EXPECT_EQ(GreedyToken(std::vector<float>{1.0f, 3.0f, 3.0f, 2.0f}), 1);
  EXPECT_EQ(GreedyToken(std::vector<float>{nan, -1.0f, nan, -0.5f}), 3);
  EXPECT_EQ(GreedyToken(std::vector<float>{nan, nan}), 0);
  EXPECT_EQ(GreedyToken(std::vector<float>{-INFINITY, -INFINITY}), 0);
}

// B's table starts with A's full prefix blocks; B computes only its suffix
// and gets the logits of a sequence that computed everything itself.
TEST_P(CpuExecutorBatchTest, SharedPrefixBlocksGiveSameLogits) {
  constexpr int32_t kBlockTokens = 4, kPrefix = 12;
  const std::vector<uint32_t> ids = ShuffledBlocks(32, 8);
  std::vector<int32_t> prompt_b = Prompt(kPrefix, vocab(), 20);
  const std::vector<int32_t> tail_a = Prompt(6, vocab(), 21), tail_b = Prompt(7, vocab(), 22);
  std::vector<int32_t> prompt_a = prompt_b;
  prompt_a.insert(prompt_a.end(), tail_a.begin(), tail_a.end());
  prompt_b.insert(prompt_b.end(), tail_b.begin(), tail_b.end());

  const std::vector<uint32_t> table_a(ids.begin(), ids.begin() + 5);
  std::vector<uint32_t> table_b(table_a.begin(), table_a.begin() + kPrefix / kBlockTokens);
  table_b.insert(table_b.end(), ids.begin() + 5, ids.begin() + 7);
  const std::vector<uint32_t> table_c(ids.begin() + 7, ids.begin() + 12);

  auto e = MakeExecutor(spec(), kBlockTokens, KvType::kF32, 32);
  ASSERT_NE(e, nullptr);
  RunAlone(*e, 1, prompt_a, 0, table_a, LogitsWanted::kNone);
  const std::vector<float> got =
      RunAlone(*e, 2, std::span<const int32_t>(prompt_b).subspan(kPrefix), kPrefix, table_b);
  const std::vector<float> full = RunAlone(*e, 3, prompt_b, 0, table_c);
  const std::vector<float> want(full.end() - static_cast<ptrdiff_t>(got.size()), full.end());
  EXPECT_LE(RelativeError(got, want), Tolerance());
}

TEST_P(CpuExecutorBatchTest, SixteenDecodesEqualSixteenSingleDecodes) {
  constexpr int32_t kSeqs = 16, kBlockTokens = 16;
  auto batched = MakeExecutor(spec(), kBlockTokens, KvType::kF16, 40);
  auto single = MakeExecutor(spec(), kBlockTokens, KvType::kF16, 40);
  ASSERT_TRUE(batched && single);
  const std::vector<uint32_t> ids = ShuffledBlocks(40, 4);
  std::vector<std::vector<int32_t>> prompts;
  std::vector<std::vector<uint32_t>> tables;
  std::vector<int32_t> next(kSeqs);
  for (int32_t s = 0; s < kSeqs; ++s) {
    prompts.push_back(Prompt(1 + s * 2, vocab(), 100 + static_cast<uint32_t>(s)));
    tables.emplace_back(ids.begin() + 2 * s, ids.begin() + 2 * s + 2);
    next[static_cast<size_t>(s)] = 5 + s * 17;
    for (Executor* e :
         {static_cast<Executor*>(batched.get()), static_cast<Executor*>(single.get())}) {
      RunAlone(*e, static_cast<uint64_t>(s), prompts.back(), 0, tables.back(), LogitsWanted::kNone);
    }
  }
  Batch batch;
  std::vector<float> want;
  for (int32_t s = 0; s < kSeqs; ++s) {
    const auto token = std::span<const int32_t>(&next[static_cast<size_t>(s)], 1);
    const int32_t pos = static_cast<int32_t>(prompts[static_cast<size_t>(s)].size());
    batch.seqs.push_back(Step(static_cast<uint64_t>(s), token, pos, tables[static_cast<size_t>(s)],
                              LogitsWanted::kLast));
    const std::vector<float> one = RunAlone(*single, static_cast<uint64_t>(s), token, pos,
                                            tables[static_cast<size_t>(s)], LogitsWanted::kLast);
    want.insert(want.end(), one.begin(), one.end());
  }
  absl::StatusOr<StepOutput> out = batched->Forward(batch);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_LE(RelativeError(out->logits, want), Tolerance());
}

// Every scratch buffer and the whole cache start as NaN: a step that read
// anything it did not write first would show NaN in its logits.
TEST_P(CpuExecutorBatchTest, PoisonedScratchAndKvNeverLeakIntoLogits) {
  auto poisoned = MakeExecutor(spec(), 4, KvType::kF16, 24);
  auto clean = MakeExecutor(spec(), 4, KvType::kF16, 24);
  ASSERT_TRUE(poisoned && clean);
  poisoned->PoisonKvForTesting();
  const std::vector<uint32_t> ids = ShuffledBlocks(24, 6);
  const std::vector<uint32_t> table_a(ids.begin(), ids.begin() + 8);
  const std::vector<uint32_t> table_b(ids.begin() + 8, ids.begin() + 16);
  const std::vector<int32_t> a = Prompt(13, vocab(), 30), b = Prompt(6, vocab(), 31);

  for (int step = 0; step < 3; ++step) {
    Batch batch;
    const auto a_part = std::span<const int32_t>(a).subspan(0, 9 + 2 * static_cast<size_t>(step));
    const auto a_new = a_part.subspan(step == 0 ? 0 : a_part.size() - 2);
    const int32_t a_start = static_cast<int32_t>(a_part.size() - a_new.size());
    const auto b_new =
        std::span<const int32_t>(b).subspan(step == 0 ? 0 : 3 + step, step == 0 ? 4 : 1);
    const int32_t b_start = step == 0 ? 0 : 3 + step;
    batch.seqs.push_back(Step(1, a_new, a_start, table_a, LogitsWanted::kAll));
    batch.seqs.push_back(Step(2, b_new, b_start, table_b, LogitsWanted::kAll));
    poisoned->PoisonScratchForTesting();
    absl::StatusOr<StepOutput> got = poisoned->Forward(batch);
    absl::StatusOr<StepOutput> want = clean->Forward(batch);
    ASSERT_TRUE(got.ok() && want.ok());
    EXPECT_TRUE(AllFinite(got->logits)) << "step " << step;
    EXPECT_EQ(got->logits, want->logits) << "step " << step;
  }
}

// Threads split weight rows and (token, head) pairs, never one sum, so the
// results are bitwise identical whatever the thread count.
TEST_P(CpuExecutorBatchTest, OneAndTwoThreadsGiveIdenticalLogits) {
  auto one = MakeExecutor(spec(), 4, KvType::kF16, 16, /*threads=*/1);
  auto two = MakeExecutor(spec(), 4, KvType::kF16, 16, /*threads=*/2);
  ASSERT_TRUE(one && two);
  EXPECT_EQ(one->threads(), 1);
  EXPECT_EQ(two->threads(), 2);
  const std::vector<uint32_t> ids = ShuffledBlocks(16, 7);
  const std::vector<uint32_t> table_a(ids.begin(), ids.begin() + 8);
  const std::vector<uint32_t> table_b(ids.begin() + 8, ids.end());
  const std::vector<int32_t> a = Prompt(21, vocab(), 40), b = Prompt(3, vocab(), 41);
  Batch batch;
  batch.seqs.push_back(Step(1, a, 0, table_a, LogitsWanted::kAll));
  batch.seqs.push_back(Step(2, b, 0, table_b, LogitsWanted::kLast));
  absl::StatusOr<StepOutput> x = one->Forward(batch), y = two->Forward(batch);
  ASSERT_TRUE(x.ok() && y.ok());
  EXPECT_EQ(x->logits, y->logits);
}

}  // namespace
}  // namespace tokenmill::devices::cpu::testing
