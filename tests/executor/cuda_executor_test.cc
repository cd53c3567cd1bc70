// CudaExecutor against the CPU executor on tiny synthetic models: greedy
// generation token for token, logits within each weight type's tolerance,
// KV in CUDA arena pages, and the errors. Tests that need a GPU skip without
// one and say why; those that run on one print the device.
#include "devices/cuda/cuda_executor.h"

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "devices/cuda/core/cublas_library.h"
#include "devices/cuda/core/engine.h"
#include "tests/executor/executor_test_util.h"

namespace tokenmill::devices::cuda {
namespace {

using cpu::testing::AllFinite;
using cpu::testing::MakeExecutor;
using cpu::testing::Prompt;
using cpu::testing::RelativeError;
using cpu::testing::RunAlone;
using cpu::testing::ShuffledBlocks;
using cpu::testing::Synthesize;
using cpu::testing::TinyModel;

// Why there is no usable GPU, or empty when there is one.
std::string NoGpuReason() {
  size_t total = 0, free = 0;
  core::GpuStatus s = core::DeviceMemory(0, &total, &free);
  return s.ok() ? std::string() : s.message;
}

class CudaExecutorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string reason = NoGpuReason();
    const char* require = std::getenv("TOKENMILL_REQUIRE_GPU");
    if (!reason.empty() && require != nullptr && std::string_view(require) == "1") {
      FAIL() << "no CUDA GPU (" << reason << ") and TOKENMILL_REQUIRE_GPU=1";
    }
    if (!reason.empty()) GTEST_SKIP() << "no CUDA GPU: " << reason;
    std::printf("running on CUDA GPU 0\n");
  }
};

std::unique_ptr<CudaExecutor> MakeCudaExecutor(const ModelSpec& spec, uint32_t kv_blocks,
                                               KvArena* arena = nullptr) {
  ExecutorOptions o;
  o.block_tokens = 16;
  o.kv_type = KvType::kF16;
  o.kv_blocks = kv_blocks;
  o.max_batch_tokens = 64;
  o.kv_arena = arena;
  absl::StatusOr<std::unique_ptr<CudaExecutor>> e = CudaExecutor::Create(spec, o, 0);
  EXPECT_TRUE(e.ok()) << e.status();
  return e.ok() ? std::move(*e) : nullptr;
}

int32_t ArgMaxOf(std::span<const float> row) {
  return static_cast<int32_t>(std::max_element(row.begin(), row.end()) - row.begin());
}

// Relative logits error each weight type may show against the CPU executor:
// f32/f16 differ in summation order only; bf16 rounds activations to bf16 in
// cuBLAS prefill; Q8_0 on the CPU quantizes activations to int8, the GPU
// multiplies f32 activations by the dequantized weights.
double ToleranceFor(TensorType type) {
  switch (type) {
    case TensorType::kF32:
      return 1e-4;
    case TensorType::kF16:
      return 2e-3;
    case TensorType::kBF16:
      return 1e-2;
    default:
      return 5e-2;
  }
}

struct GreedyCase {
  Architecture arch;
  TensorType type;
};

void PrintTo(const GreedyCase& c, std::ostream* os) {
  *os << ArchitectureName(c.arch) << " " << TensorTypeName(c.type);
}

class CudaGreedyTest : public CudaExecutorTest, public ::testing::WithParamInterface<GreedyCase> {};

TEST_P(CudaGreedyTest, GreedyGenerationMatchesTheCpuExecutor) {
  const GreedyCase c = GetParam();
  model::LoadedModel m = Synthesize(TinyModel(c.arch, c.type));
  auto cpu_exec = MakeExecutor(m.spec, 16, KvType::kF16, 8);
  auto gpu_exec = MakeCudaExecutor(m.spec, 8);
  ASSERT_NE(cpu_exec, nullptr);
  ASSERT_NE(gpu_exec, nullptr);
  ASSERT_TRUE(gpu_exec->engine().PoisonScratchForTesting().ok());
  ASSERT_TRUE(gpu_exec->engine().PoisonKvForTesting().ok());
  const std::vector<uint32_t> table = ShuffledBlocks(8, 3);

  std::vector<int32_t> tokens = Prompt(20, m.spec.hp.vocab_size, 11);
  std::vector<float> cpu_logits = RunAlone(*cpu_exec, 1, tokens, 0, table, LogitsWanted::kLast);
  std::vector<float> gpu_logits = RunAlone(*gpu_exec, 1, tokens, 0, table, LogitsWanted::kLast);
  for (int step = 0; step < 24; ++step) {
    ASSERT_TRUE(AllFinite(gpu_logits)) << "step " << step;
    EXPECT_LT(RelativeError(gpu_logits, cpu_logits), ToleranceFor(c.type)) << "step " << step;
    const int32_t want = ArgMaxOf(cpu_logits);
    ASSERT_EQ(ArgMaxOf(gpu_logits), want) << "greedy token " << step;
    const int32_t pos = static_cast<int32_t>(tokens.size());
    tokens.push_back(want);
    const std::span<const int32_t> next(&tokens.back(), 1);
    cpu_logits = RunAlone(*cpu_exec, 1, next, pos, table, LogitsWanted::kLast);
    gpu_logits = RunAlone(*gpu_exec, 1, next, pos, table, LogitsWanted::kLast);
  }
}

INSTANTIATE_TEST_SUITE_P(Types, CudaGreedyTest,
                         ::testing::Values(GreedyCase{Architecture::kLlama, TensorType::kF32},
                                           GreedyCase{Architecture::kLlama, TensorType::kF16},
                                           GreedyCase{Architecture::kLlama, TensorType::kBF16},
                                           GreedyCase{Architecture::kLlama, TensorType::kQ8_0},
                                           GreedyCase{Architecture::kQwen2, TensorType::kBF16}),
                         [](const ::testing::TestParamInfo<GreedyCase>& info) {
                           return std::string(ArchitectureName(info.param.arch)) + "_" +
                                  TensorTypeName(info.param.type);
                         });

TEST_F(CudaExecutorTest, ArenaPagesGiveTheSameLogitsAsOwnKv) {
  model::LoadedModel m = Synthesize(TinyModel(Architecture::kLlama, TensorType::kBF16));
  const size_t block_bytes = KvLayoutFor(m.spec, 16, KvType::kF16).BlockBytes();
  absl::StatusOr<KvArenaPtr> arena = CreateCudaKvArena(0, 8 * 2 * block_bytes, 2 * block_bytes);
  ASSERT_TRUE(arena.ok()) << arena.status();
  auto paged = MakeCudaExecutor(m.spec, 16, arena->get());
  auto own = MakeCudaExecutor(m.spec, 16);
  ASSERT_NE(paged, nullptr);
  ASSERT_NE(own, nullptr);
  ASSERT_EQ(paged->kv_blocks_per_page(), 2u);
  // Slots get arena pages in reverse order, so block b's address is far from
  // where an identity mapping would put it.
  for (uint32_t slot = 0; slot < 8; ++slot) {
    std::optional<uint32_t> page = (*arena)->TakePage();
    ASSERT_TRUE(page.has_value());
    ASSERT_TRUE(paged->MapKvPage(7 - slot, *page).ok());
  }
  ASSERT_TRUE(paged->engine().PoisonKvForTesting().ok());
  const std::vector<uint32_t> table = ShuffledBlocks(16, 5);
  const std::vector<int32_t> tokens = Prompt(40, m.spec.hp.vocab_size, 2);
  const std::vector<float> a = RunAlone(*paged, 1, tokens, 0, table);
  const std::vector<float> b = RunAlone(*own, 1, tokens, 0, table);
  ASSERT_TRUE(AllFinite(a));
  EXPECT_EQ(RelativeError(a, b), 0.0);

  // A block in a slot without a page is refused, and nothing runs.
  ASSERT_TRUE(paged->UnmapKvPage(table[0] / 2).ok());
  Batch batch;
  batch.seqs.push_back(cpu::testing::Step(1, tokens, 0, table, LogitsWanted::kLast));
  EXPECT_EQ(paged->Forward(batch).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(CudaExecutorTest, InvalidBatchesAreRefusedAndTheNextStepRuns) {
  model::LoadedModel m = Synthesize(TinyModel(Architecture::kLlama, TensorType::kF16));
  auto e = MakeCudaExecutor(m.spec, 4);
  ASSERT_NE(e, nullptr);
  const std::vector<uint32_t> table = {0, 1, 2, 3};
  const std::vector<int32_t> bad_token = {m.spec.hp.vocab_size};
  Batch batch;
  batch.seqs.push_back(cpu::testing::Step(1, bad_token, 0, table, LogitsWanted::kLast));
  EXPECT_EQ(e->Forward(batch).status().code(), absl::StatusCode::kInvalidArgument);
  const std::vector<uint32_t> past = {4};
  const std::vector<int32_t> ok_tokens = {5, 6};
  batch.seqs[0] = cpu::testing::Step(1, ok_tokens, 0, past, LogitsWanted::kLast);
  EXPECT_EQ(e->Forward(batch).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(AllFinite(RunAlone(*e, 1, ok_tokens, 0, table)));
}

TEST_F(CudaExecutorTest, DeviceMemoryRunningOutIsARefusal) {
  model::LoadedModel m = Synthesize(TinyModel(Architecture::kLlama, TensorType::kF16));
  ExecutorOptions o;
  o.kv_blocks = UINT32_MAX / 2;  // 2^31 blocks of 4 KiB: 8 TiB, far past any GPU
  absl::StatusOr<ExecutorPtr> e = CreateCudaExecutor(m.spec, o, 0);
  EXPECT_EQ(e.status().code(), absl::StatusCode::kResourceExhausted) << e.status();
  EXPECT_NE(MakeCudaExecutor(m.spec, 4), nullptr);
}

// These run with or without a GPU: the model check comes before any CUDA
// call, and without a GPU creation is kUnavailable, not a crash.
TEST(CudaExecutorWithoutGpuTest, UnsupportedWeightsAreUnimplemented) {
  model::LoadedModel m = Synthesize(TinyModel(Architecture::kLlama, TensorType::kQ4_0));
  ExecutorOptions o;
  o.kv_blocks = 4;
  absl::StatusOr<ExecutorPtr> e = CreateCudaExecutor(m.spec, o, 0);
  EXPECT_EQ(e.status().code(), absl::StatusCode::kUnimplemented) << e.status();
  EXPECT_NE(e.status().message().find("q4_0"), std::string::npos) << e.status();
}

// cuBLAS is loaded at run time (never linked: its static TLS would shrink
// every thread's stack); the toolkit this was built with has it.
TEST(CudaExecutorWithoutGpuTest, CublasLoadsAtRunTime) {
  std::string error;
  const core::CublasApi* api = core::LoadCublas(&error);
  ASSERT_NE(api, nullptr) << error;
  EXPECT_NE(api->gemm_ex, nullptr);
  EXPECT_STREQ(api->status_name(CUBLAS_STATUS_ALLOC_FAILED), "CUBLAS_STATUS_ALLOC_FAILED");
}

// A GPU that is not there is a refusal, never a crash: kUnavailable without
// a usable driver, kInvalidArgument for an ordinal past the GPUs there are.
TEST(CudaExecutorWithoutGpuTest, AMissingGpuIsARefusal) {
  const absl::StatusCode want =
      NoGpuReason().empty() ? absl::StatusCode::kInvalidArgument : absl::StatusCode::kUnavailable;
  model::LoadedModel m = Synthesize(TinyModel(Architecture::kLlama, TensorType::kF16));
  ExecutorOptions o;
  o.kv_blocks = 4;
  absl::StatusOr<ExecutorPtr> e = CreateCudaExecutor(m.spec, o, 999);
  EXPECT_EQ(e.status().code(), want) << e.status();
  EXPECT_EQ(CreateCudaKvArena(999, 4 << 20).status().code(), want);
}

}  // namespace
}  // namespace tokenmill::devices::cuda
