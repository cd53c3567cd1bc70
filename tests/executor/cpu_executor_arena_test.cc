// The CPU executor on a device KV arena: pages mapped in any order give the
// very logits of the executor's own KV memory; blocks in unmapped slots are
// refused without side effects; MapKvPage / UnmapKvPage check their input.
#include <cstring>
#include <vector>

#include "devices/kv_arena.h"
#include "gtest/gtest.h"
#include "tests/executor/executor_test_util.h"

namespace tokenmill::devices::cpu::testing {
namespace {

// Tiny model, 4-token f16 blocks: 2 layers x 2 x 2 kv heads x 4 x 16 x 2 B =
// 1 KiB per block, so a 4 KiB page holds 4 blocks.
constexpr int32_t kBlockTokens = 4;
constexpr size_t kPageBytes = 4096;
constexpr uint32_t kBlocksPerPage = 4;
constexpr uint32_t kArenaPages = 10;

class CpuExecutorArenaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = Synthesize(TinyModel(Architecture::kLlama, TensorType::kQ8_0));
    ASSERT_FALSE(model_.spec.layers.empty());
    absl::StatusOr<KvArenaPtr> arena = CreateHostKvArena(kArenaPages * kPageBytes, kPageBytes);
    ASSERT_TRUE(arena.ok()) << arena.status();
    arena_ = std::move(*arena);
    // The arena backs pages as they are taken; the tests map pages as the
    // runtime would after taking them (one chunk: pages 0..9, contiguous).
    for (uint32_t p = 0; p < kArenaPages; ++p) ASSERT_EQ(arena_->TakePage(), p);
  }

  std::unique_ptr<CpuExecutor> MakeArenaExecutor(uint32_t kv_blocks, KvType type = KvType::kF16) {
    ExecutorOptions o;
    o.block_tokens = kBlockTokens;
    o.kv_type = type;
    o.kv_blocks = kv_blocks;
    o.threads = 2;
    o.max_batch_tokens = 64;
    o.kv_arena = arena_.get();
    absl::StatusOr<std::unique_ptr<CpuExecutor>> e = CpuExecutor::Create(model_.spec, o);
    EXPECT_TRUE(e.ok()) << e.status();
    return e.ok() ? std::move(*e) : nullptr;
  }

  // The bytes of every arena page, to check that a refused step wrote none.
  std::vector<uint8_t> ArenaBytes() const {
    const auto* base = static_cast<const uint8_t*>(arena_->PageAddress(0));
    return std::vector<uint8_t>(base, base + kArenaPages * kPageBytes);
  }

  int32_t vocab() const { return model_.spec.hp.vocab_size; }

  model::LoadedModel model_;
  KvArenaPtr arena_;
};

TEST_F(CpuExecutorArenaTest, ReportsPagesAndRoundsTheIdSpaceToWholePages) {
  auto own = MakeExecutor(model_.spec, kBlockTokens, KvType::kF16, 30);
  auto paged = MakeArenaExecutor(30);
  ASSERT_TRUE(own && paged);
  EXPECT_EQ(own->kv_blocks_per_page(), 0u);
  EXPECT_EQ(own->kv_blocks(), 30u);
  EXPECT_EQ(paged->kv_layout().BlockBytes() * kBlocksPerPage, kPageBytes);
  EXPECT_EQ(paged->kv_blocks_per_page(), kBlocksPerPage);
  EXPECT_EQ(paged->kv_blocks(), 32u);
  EXPECT_TRUE(paged->kv_bytes_for_testing().empty());
}

TEST_F(CpuExecutorArenaTest, RefusesAnArenaPageSmallerThanABlock) {
  ExecutorOptions o;
  o.block_tokens = 16;
  o.kv_type = KvType::kF32;  // 8 KiB blocks for 4 KiB pages
  o.kv_blocks = 8;
  o.threads = 1;
  o.kv_arena = arena_.get();
  EXPECT_EQ(CpuExecutor::Create(model_.spec, o).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// The same prefills and decodes, once on the executor's own buffer and once
// on arena pages mapped in a scrambled order: bit-identical logits.
TEST_F(CpuExecutorArenaTest, ScrambledPagesGiveTheLogitsOfOwnMemory) {
  constexpr uint32_t kBlocks = 32;
  auto own = MakeExecutor(model_.spec, kBlockTokens, KvType::kF16, kBlocks);
  auto paged = MakeArenaExecutor(kBlocks);
  ASSERT_TRUE(own && paged);
  const uint32_t scramble[] = {5, 2, 7, 0, 9, 3, 8, 1};
  for (uint32_t slot = 0; slot < kBlocks / kBlocksPerPage; ++slot) {
    ASSERT_TRUE(paged->MapKvPage(slot, scramble[slot]).ok());
  }
  own->PoisonKvForTesting();
  paged->PoisonKvForTesting();

  const std::vector<uint32_t> ids = ShuffledBlocks(kBlocks, 3);
  const std::vector<std::vector<uint32_t>> tables = {{ids.begin(), ids.begin() + 10},
                                                     {ids.begin() + 10, ids.begin() + 20},
                                                     {ids.begin() + 20, ids.begin() + 30}};
  std::vector<std::vector<int32_t>> tokens = {Prompt(13, vocab(), 1), Prompt(6, vocab(), 2),
                                              Prompt(9, vocab(), 3)};
  std::vector<int32_t> pos(3, 0);
  std::vector<std::vector<int32_t>> next(3);
  for (int step = 0; step < 6; ++step) {
    // Step 0 prefills all prompts (all logits); later steps decode each
    // sequence's last token.
    Batch batch;
    for (size_t s = 0; s < 3; ++s) {
      const std::span<const int32_t> in =
          step == 0 ? std::span<const int32_t>(tokens[s]) : std::span<const int32_t>(next[s]);
      batch.seqs.push_back(
          Step(s + 1, in, pos[s], tables[s], step == 0 ? LogitsWanted::kAll : LogitsWanted::kLast));
    }
    absl::StatusOr<StepOutput> want = own->Forward(batch);
    absl::StatusOr<StepOutput> got = paged->Forward(batch);
    ASSERT_TRUE(want.ok()) << want.status();
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_EQ(got->logits.size(), want->logits.size());
    ASSERT_TRUE(AllFinite(got->logits)) << "step " << step;
    EXPECT_EQ(
        std::memcmp(got->logits.data(), want->logits.data(), want->logits.size() * sizeof(float)),
        0)
        << "step " << step;
    for (size_t s = 0; s < 3; ++s) {
      pos[s] += static_cast<int32_t>(batch.seqs[s].tokens.size());
      // A deterministic next token per sequence and step.
      next[s] = {1 + (pos[s] * 37 + static_cast<int32_t>(s) * 11) % (vocab() - 1)};
    }
  }
}

TEST_F(CpuExecutorArenaTest, UnmappedBlocksAreRefusedAndChangeNothing) {
  auto e = MakeArenaExecutor(16);
  ASSERT_NE(e, nullptr);
  ASSERT_TRUE(e->MapKvPage(0, 4).ok());
  ASSERT_TRUE(e->MapKvPage(1, 6).ok());
  ASSERT_TRUE(e->MapKvPage(3, 1).ok());  // slot 2 (blocks 8..11) stays empty
  const std::vector<int32_t> a = Prompt(7, vocab(), 4), b = Prompt(6, vocab(), 5);
  const std::vector<uint32_t> table_a = {0, 5}, table_b = {13, 9};  // 9: slot 2

  const std::vector<uint8_t> before = ArenaBytes();
  Batch batch;
  batch.seqs.push_back(Step(1, a, 0, table_a, LogitsWanted::kLast));
  batch.seqs.push_back(Step(2, b, 0, table_b, LogitsWanted::kLast));
  absl::StatusOr<StepOutput> refused = e->Forward(batch);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(refused.status().message()).find("slot 2"), std::string::npos)
      << refused.status();
  EXPECT_TRUE(ArenaBytes() == before);

  // Mapped, the same batch runs; unmapped again, it is refused again.
  ASSERT_TRUE(e->MapKvPage(2, 0).ok());
  absl::StatusOr<StepOutput> ran = e->Forward(batch);
  ASSERT_TRUE(ran.ok()) << ran.status();
  EXPECT_TRUE(AllFinite(ran->logits));
  EXPECT_FALSE(ArenaBytes() == before);
  ASSERT_TRUE(e->UnmapKvPage(2).ok());
  EXPECT_EQ(e->Forward(batch).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(CpuExecutorArenaTest, MapAndUnmapCheckTheirArguments) {
  auto own = MakeExecutor(model_.spec, kBlockTokens, KvType::kF16, 8);
  auto e = MakeArenaExecutor(8);  // slots 0 and 1
  ASSERT_TRUE(own && e);
  const auto invalid = absl::StatusCode::kInvalidArgument;
  EXPECT_EQ(own->MapKvPage(0, 0).code(), invalid);  // no arena
  EXPECT_EQ(own->UnmapKvPage(0).code(), invalid);
  EXPECT_EQ(e->MapKvPage(2, 0).code(), invalid);            // slot past the id space
  EXPECT_EQ(e->MapKvPage(0, kArenaPages).code(), invalid);  // no such arena page
  EXPECT_EQ(e->UnmapKvPage(0).code(), invalid);             // not mapped
  ASSERT_TRUE(e->MapKvPage(0, 3).ok());
  EXPECT_EQ(e->MapKvPage(0, 4).code(), invalid);  // slot already mapped
  EXPECT_EQ(e->MapKvPage(1, 3).code(), invalid);  // page already in slot 0
  EXPECT_EQ(e->UnmapKvPage(5).code(), invalid);
  ASSERT_TRUE(e->UnmapKvPage(0).ok());
  EXPECT_EQ(e->UnmapKvPage(0).code(), invalid);
  EXPECT_TRUE(e->MapKvPage(1, 3).ok());  // free again once unmapped
}

}  // namespace
}  // namespace tokenmill::devices::cpu::testing
