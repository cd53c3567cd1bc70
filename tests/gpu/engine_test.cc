// The whole forward: Engine against the plain f64 ReferenceModel on tiny
// synthetic models of every weight type, llama and qwen2, tied embeddings and
// both kinds of RoPE scaling: logits of chunked prefills and decodes within
// each type's tolerance and greedy generation token for token, with the
// scratch poisoned before every step and the KV cache before the first. Also
// paged KV, CUDA graphs, batches vs single sequences, both matmul paths, and
// the errors Step and Create must return.
#include <cstdio>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "devices/cuda/core/engine.h"
#include "devices/cuda/core/matmul.h"
#include "tests/gpu/engine_scenario.h"
#include "tests/gpu/gpu_test.h"
#include "tests/gpu/synth_spec.h"
#include "tests/gpu/test_util.h"

namespace tokenmill::gpu_test {
namespace {

using devices::Architecture;
using devices::KvType;
using devices::TensorType;
using devices::cuda::core::Engine;
using devices::cuda::core::EngineOptions;
using devices::cuda::core::LogitsMode;
using devices::cuda::core::StepResult;
using devices::cuda::core::StepSequence;

constexpr int32_t kGenerate = 20;

// The main check of one model: three sequences (prompts of 40, 29 and 35 in
// chunks of 16, the first asking for all rows of its last chunk) batched,
// then greedy decoding of kGenerate tokens, against the reference.
void CheckForward(const SynthSpecOptions& options, KvType kv) {
  const std::string what = Describe(options, kv);
  const int failures = FailureCount();  // of the models checked before this one
  TestModel m;
  PrepareModel(options, {40, 29, 35}, kGenerate, kv, &m);
  if (FailureCount() > failures) return;
  std::unique_ptr<Engine> engine;
  GPU_ASSERT_OK(Engine::Create(m.spec, TestEngineOptions(m, kv), &engine)) << what;
  GPU_ASSERT_OK(engine->PoisonKvForTesting());
  ScenarioRun run;
  RunScenario(*engine, m, {}, &run);
  if (FailureCount() > failures) return;
  ExpectMatchesReference(run, m, ForwardTolerance(options.type, kv), what);
}

void CheckEveryType(Architecture arch, const std::function<void(SynthSpecOptions&)>& adjust,
                    KvType kv, uint64_t seed) {
  for (TensorType type : kAllTensorTypes) {
    SynthSpecOptions o = TinyModelOptions(arch, type);
    o.seed = seed++;
    adjust(o);
    CheckForward(o, kv);
  }
}

GPU_TEST(EngineForward, Llama) {
  CheckEveryType(
      Architecture::kLlama, [](SynthSpecOptions&) {}, KvType::kF16, 100);
}

GPU_TEST(EngineForward, Qwen2BiasesHalvesRope) {
  CheckEveryType(
      Architecture::kQwen2, [](SynthSpecOptions&) {}, KvType::kF16, 200);
}

GPU_TEST(EngineForward, TiedEmbeddings) {
  CheckEveryType(
      Architecture::kLlama, [](SynthSpecOptions& o) { o.tied_embeddings = true; }, KvType::kF16,
      300);
}

// Llama 3 scaling from the hyperparameters, with an original context of 32
// so that the scaled and smoothed frequencies turn within these prompts.
GPU_TEST(EngineForward, Llama3RopeScaling) {
  CheckEveryType(
      Architecture::kLlama,
      [](SynthSpecOptions& o) {
        o.hp.rope_scaling.factor = 8.0f;
        o.hp.rope_scaling.low_freq_factor = 1.0f;
        o.hp.rope_scaling.high_freq_factor = 4.0f;
        o.hp.rope_scaling.original_context = 32;
      },
      KvType::kF16, 400);
}

// GGUF llama 3's per-frequency divisors (rope_freqs.weight).
GPU_TEST(EngineForward, RopeFreqFactors) {
  CheckEveryType(
      Architecture::kLlama, [](SynthSpecOptions& o) { o.rope_freq_factors = true; }, KvType::kF16,
      500);
}

GPU_TEST(EngineForward, KvF32) {
  CheckForward(TinyModelOptions(Architecture::kLlama, TensorType::kF16), KvType::kF32);
  CheckForward(TinyModelOptions(Architecture::kQwen2, TensorType::kBF16), KvType::kF32);
}

// Only the device argmax comes back: for the whole step (copy_logits false:
// no logits at all), and for one sequence asking kArgmax in a batch whose
// others copy their rows. The same greedy tokens either way.
GPU_TEST(EngineForward, ArgmaxWithoutLogits) {
  SynthSpecOptions o = TinyModelOptions(Architecture::kLlama, TensorType::kBF16);
  o.seed = 600;
  TestModel m;
  PrepareModel(o, {40, 29, 35}, kGenerate, KvType::kF16, &m);
  if (HasFailure()) return;
  for (const RunOptions& options :
       {RunOptions{.copy_logits = false}, RunOptions{.argmax_only_seq = 1}}) {
    const std::string what = options.copy_logits ? "sequence 1 kArgmax" : "copy_logits false";
    std::unique_ptr<Engine> engine;
    GPU_ASSERT_OK(Engine::Create(m.spec, TestEngineOptions(m), &engine));
    GPU_ASSERT_OK(engine->PoisonKvForTesting());
    ScenarioRun run;
    RunScenario(*engine, m, options, &run);
    if (HasFailure()) return;
    for (size_t s = 0; s < m.expected.size(); ++s) {
      GPU_EXPECT_EQ(run.seqs[s].tokens, m.expected[s].tokens) << what << ", sequence " << s;
    }
    if (options.copy_logits) {
      GPU_EXPECT(run.seqs[1].logits.empty()) << what << ": logits rows came back";
      ExpectMatchesReference(run, m, ForwardTolerance(o.type, KvType::kF16), what);
    }
  }
}

// Frees a region from AllocateDeviceRegion (declared before the engine that
// maps it, so destroyed after it).
struct RegionOwner {
  void* region = nullptr;
  ~RegionOwner() {
    if (region != nullptr) devices::cuda::core::FreeDeviceRegion(region);
  }
};

// Paged KV: pages of 4 blocks cut from one AllocateDeviceRegion, mapped into
// the slots in shuffled order, give bit-identical logits to the engine's own
// KV region (same kernels, same values, other addresses).
GPU_TEST(EngineForward, PagedKvMatchesOwnRegion) {
  SynthSpecOptions o = TinyModelOptions(Architecture::kLlama, TensorType::kBF16);
  o.seed = 700;
  TestModel m;
  PrepareModel(o, {40, 29, 35}, kGenerate, KvType::kF16, &m);
  if (HasFailure()) return;
  const size_t vocab = static_cast<size_t>(o.hp.vocab_size);

  ScenarioRun own;
  {
    std::unique_ptr<Engine> engine;
    GPU_ASSERT_OK(Engine::Create(m.spec, TestEngineOptions(m), &engine));
    GPU_ASSERT_OK(engine->PoisonKvForTesting());
    RunScenario(*engine, m, {}, &own);
    if (HasFailure()) return;
  }

  constexpr uint32_t kBlocksPerPage = 4;
  RegionOwner region;
  EngineOptions options = TestEngineOptions(m);
  options.blocks_per_page = kBlocksPerPage;
  std::unique_ptr<Engine> engine;
  GPU_ASSERT_OK(Engine::Create(m.spec, options, &engine));
  const uint32_t slots = m.kv_blocks / kBlocksPerPage;
  const size_t page_bytes = kBlocksPerPage * engine->kv_layout().BlockBytes();
  GPU_ASSERT_OK(devices::cuda::core::AllocateDeviceRegion(0, slots * page_bytes, &region.region));
  std::vector<uint32_t> slot_of_page(slots);
  for (uint32_t i = 0; i < slots; ++i) slot_of_page[i] = i;
  Random(o.seed).Shuffle(slot_of_page);
  for (uint32_t i = 0; i < slots; ++i) {
    GPU_ASSERT_OK(engine->MapPage(slot_of_page[i], static_cast<uint8_t*>(region.region) +
                                                       static_cast<size_t>(i) * page_bytes));
  }
  GPU_ASSERT_OK(engine->PoisonKvForTesting());
  ScenarioRun paged;
  RunScenario(*engine, m, {}, &paged);
  if (HasFailure()) return;
  ExpectMatchesReference(paged, m, ForwardTolerance(o.type, KvType::kF16), "paged bf16");
  ExpectSameRuns(own, paged, vocab, 0.0, "own KV region vs pages");
  for (uint32_t slot = 0; slot < slots; ++slot) GPU_EXPECT_OK(engine->UnmapPage(slot));
  engine.reset();
}

// Decode steps replayed from captured CUDA graphs (batch buckets 4 and 2:
// padded rows) give the same logits as eager steps, bit for bit.
GPU_TEST(EngineForward, CudaGraphsMatchEager) {
  SynthSpecOptions o = TinyModelOptions(Architecture::kLlama, TensorType::kF16);
  o.seed = 800;
  TestModel m;
  PrepareModel(o, {40, 29, 35}, kGenerate, KvType::kF16, &m);
  if (HasFailure()) return;
  ScenarioRun runs[2];
  for (bool graphs : {true, false}) {
    EngineOptions options = TestEngineOptions(m);
    options.cuda_graphs = graphs;
    std::unique_ptr<Engine> engine;
    GPU_ASSERT_OK(Engine::Create(m.spec, options, &engine));
    GPU_ASSERT_OK(engine->PoisonKvForTesting());
    ScenarioRun& run = runs[graphs ? 0 : 1];
    RunScenario(*engine, m, {}, &run);
    if (HasFailure()) return;
    const auto stats = engine->Stats();
    if (graphs) {
      GPU_EXPECT(run.graph_steps > 0) << "no step ran as a graph";
      GPU_EXPECT(stats.graphs >= 1 && stats.graph_steps > 0)
          << stats.graphs << " graphs, " << stats.graph_steps << " graph steps";
    } else {
      GPU_EXPECT_EQ(run.graph_steps, 0);
      GPU_EXPECT_EQ(stats.graph_steps, 0);
    }
  }
  std::printf("[ measured ] %d of %d steps ran as graphs\n", runs[0].graph_steps, runs[0].steps);
  ExpectMatchesReference(runs[0], m, ForwardTolerance(o.type, KvType::kF16), "graphs f16");
  ExpectSameRuns(runs[0], runs[1], static_cast<size_t>(o.hp.vocab_size), 0.0, "graphs vs eager");
}

// Each sequence run alone agrees with the batched run (other matmul paths
// and batch sizes: within the type's tolerance) and with the reference.
GPU_TEST(EngineForward, BatchMatchesSequencesAlone) {
  SynthSpecOptions o = TinyModelOptions(Architecture::kQwen2, TensorType::kBF16);
  o.seed = 900;
  TestModel m;
  PrepareModel(o, {40, 29, 35}, kGenerate, KvType::kF16, &m);
  if (HasFailure()) return;
  const double tolerance = ForwardTolerance(o.type, KvType::kF16);
  std::unique_ptr<Engine> engine;
  GPU_ASSERT_OK(Engine::Create(m.spec, TestEngineOptions(m), &engine));
  GPU_ASSERT_OK(engine->PoisonKvForTesting());
  ScenarioRun batched;
  RunScenario(*engine, m, {.all_rows_first = false}, &batched);
  if (HasFailure()) return;
  ExpectMatchesReference(batched, m, tolerance, "batched");
  for (size_t s = 0; s < m.expected.size(); ++s) {
    TestModel alone = m;
    alone.expected = {m.expected[s]};
    alone.tables = {m.tables[s]};
    ScenarioRun single;
    RunScenario(*engine, alone, {.all_rows_first = false}, &single);
    if (HasFailure()) return;
    ScenarioRun batched_one;
    batched_one.seqs = {batched.seqs[s]};
    ExpectSameRuns(single, batched_one, static_cast<size_t>(o.hp.vocab_size), tolerance,
                   "alone vs batched, sequence " + std::to_string(s));
  }
}

// Every matmul forced onto GEMV (steps of at most kMaxGemvRows tokens) and
// onto cuBLAS (decodes too), every type: both agree with the reference
// (GEMV: exact weights, GemvTolerance; cuBLAS: GemmTolerance).
GPU_TEST(EngineForward, ForcedGemvAndCublasPaths) {
  uint64_t seed = 1000;
  for (TensorType type : kAllTensorTypes) {
    SynthSpecOptions o = TinyModelOptions(Architecture::kLlama, type);
    o.seed = ++seed;
    const int failures = FailureCount();
    TestModel m;
    PrepareModel(o, {20, 13}, 8, KvType::kF16, &m);
    if (FailureCount() > failures) continue;
    for (int path : {1, 2}) {
      const bool gemv = path == 1;
      const std::string what =
          Describe(o, KvType::kF16) + (gemv ? " forced GEMV" : " forced cuBLAS");
      std::unique_ptr<Engine> engine;
      GPU_ASSERT_OK(Engine::Create(m.spec, TestEngineOptions(m), &engine)) << what;
      engine->SetMatMulPathForTesting(path);
      GPU_ASSERT_OK(engine->PoisonKvForTesting());
      RunOptions options;
      if (gemv) {
        options.chunk = devices::cuda::core::kMaxGemvRows;
        options.step_tokens = devices::cuda::core::kMaxGemvRows;
      }
      const int run_failures = FailureCount();
      ScenarioRun run;
      RunScenario(*engine, m, options, &run);
      if (FailureCount() > run_failures) continue;
      ExpectMatchesReference(run, m, ForwardTolerance(type, KvType::kF16, gemv), what);
    }
  }
}

// A one-sequence step of `tokens` at `start` over `table`.
StepSequence OneSequence(const std::vector<int32_t>& tokens, int32_t start,
                         const std::vector<uint32_t>& table, int32_t n_blocks = -1) {
  StepSequence q;
  q.tokens = tokens.data();
  q.n_tokens = static_cast<int32_t>(tokens.size());
  q.start_pos = start;
  q.block_table = table.data();
  q.n_blocks = n_blocks >= 0 ? n_blocks : static_cast<int32_t>(table.size());
  q.logits = LogitsMode::kLast;
  return q;
}

// After Step refused each bad batch, a valid step gives the reference's
// logits (nothing was changed by the refusals).
void ExpectValidStepWorks(Engine& engine, const TestModel& m, const std::string& what) {
  const Expected& e = m.expected[0];
  const std::vector<int32_t> prompt(e.prompt.begin(), e.prompt.begin() + 8);
  const StepSequence q = OneSequence(prompt, 0, m.tables[0], 1);
  StepResult result;
  GPU_ASSERT_OK(engine.PoisonScratchForTesting());
  GPU_ASSERT_OK(engine.Step(&q, 1, true, true, &result)) << what;
  const size_t vocab = static_cast<size_t>(m.spec.hp.vocab_size);
  GPU_ASSERT_EQ(result.logits.size(), vocab) << what;
  GPU_EXPECT_CLOSE(result.logits, std::span<const float>(e.logits).subspan(7 * vocab, vocab),
                   ForwardTolerance(m.options.type, KvType::kF16))
      << what << ": the valid step after the refused ones";
}

GPU_TEST(EngineErrors, InvalidBatchesRejected) {
  SynthSpecOptions o = TinyModelOptions(Architecture::kLlama, TensorType::kF16);
  o.seed = 1100;
  TestModel m;
  PrepareModel(o, {24}, 2, KvType::kF16, &m);
  if (HasFailure()) return;
  EngineOptions options = TestEngineOptions(m);
  options.kv_blocks = 32;  // 16 blocks cover the whole context of 256
  options.max_batch_tokens = 32;
  RegionOwner region;  // pages of the second engine; outlives it
  std::unique_ptr<Engine> engine;
  GPU_ASSERT_OK(Engine::Create(m.spec, options, &engine));
  GPU_ASSERT_OK(engine->PoisonKvForTesting());
  const int32_t vocab = o.hp.vocab_size;
  std::vector<uint32_t> all_blocks(32);
  for (uint32_t i = 0; i < 32; ++i) all_blocks[i] = i;
  const std::vector<uint32_t> one_block = {3};
  StepResult result;
  auto step = [&](const std::vector<StepSequence>& seqs) {
    return engine->Step(seqs.data(), seqs.size(), true, true, &result);
  };
  const GpuCode invalid = GpuCode::kInvalidArgument;
  GPU_EXPECT_CODE(step({OneSequence({1, vocab, 2}, 0, one_block)}), invalid) << "token == vocab";
  GPU_EXPECT_CODE(step({OneSequence({1, -1}, 0, one_block)}), invalid) << "negative token";
  const std::vector<int32_t> twenty(20, 5);
  GPU_EXPECT_CODE(step({OneSequence(twenty, 0, one_block)}), invalid) << "too few blocks";
  GPU_EXPECT_CODE(step({OneSequence({1, 2}, 0, {32})}), invalid) << "block == kv_blocks";
  GPU_EXPECT_CODE(step({OneSequence(twenty, 0, {0, 1}), OneSequence(twenty, 0, {2, 3})}), invalid)
      << "40 tokens > max_batch_tokens 32";
  GPU_EXPECT_CODE(engine->Step(nullptr, 0, true, true, &result), invalid) << "empty batch";
  GPU_EXPECT_CODE(step({OneSequence({}, 0, one_block)}), invalid) << "a sequence of no tokens";
  const std::vector<int32_t> ten(10, 5);
  GPU_EXPECT_CODE(step({OneSequence(ten, 250, all_blocks, 17)}), invalid)
      << "positions past the context of 256";
  GPU_EXPECT_CODE(engine->MapPage(0, all_blocks.data()), invalid) << "MapPage without pages";
  ExpectValidStepWorks(*engine, m, "own KV region");

  // Pages: slot 7 (blocks 28..31) left unmapped.
  constexpr uint32_t kBlocksPerPage = 4;
  options.blocks_per_page = kBlocksPerPage;
  engine.reset();
  GPU_ASSERT_OK(Engine::Create(m.spec, options, &engine));
  const size_t page_bytes = kBlocksPerPage * engine->kv_layout().BlockBytes();
  GPU_ASSERT_OK(devices::cuda::core::AllocateDeviceRegion(0, 8 * page_bytes, &region.region));
  auto page = [&](uint32_t i) { return static_cast<uint8_t*>(region.region) + i * page_bytes; };
  for (uint32_t slot = 0; slot < 7; ++slot) GPU_ASSERT_OK(engine->MapPage(slot, page(slot)));
  GPU_EXPECT_CODE(engine->MapPage(8, page(7)), invalid) << "slot out of range";
  GPU_EXPECT_CODE(engine->MapPage(3, page(7)), invalid) << "slot already mapped";
  GPU_EXPECT_CODE(engine->MapPage(7, nullptr), invalid) << "null page";
  GPU_ASSERT_OK(engine->PoisonKvForTesting());
  GPU_EXPECT_CODE(step({OneSequence({1, 2}, 0, {29})}), invalid) << "block in an unmapped slot";
  ExpectValidStepWorks(*engine, m, "pages");
  for (uint32_t slot = 0; slot < 7; ++slot) GPU_EXPECT_OK(engine->UnmapPage(slot));
  engine.reset();
}

// Create refuses a KV region that cannot fit (2^28 blocks of 4 KiB: 1 TiB)
// with kResourceExhausted, frees what it took, and a normal engine works
// afterwards.
GPU_TEST(EngineErrors, ImpossibleAllocation) {
  SynthSpecOptions o = TinyModelOptions(Architecture::kLlama, TensorType::kF16);
  o.seed = 1200;
  TestModel m;
  PrepareModel(o, {24}, 2, KvType::kF16, &m);
  if (HasFailure()) return;
  EngineOptions options = TestEngineOptions(m);
  options.kv_blocks = 1u << 28;
  std::unique_ptr<Engine> engine;
  GPU_EXPECT_CODE(Engine::Create(m.spec, options, &engine), GpuCode::kResourceExhausted);
  GPU_EXPECT(engine == nullptr);
  engine.reset();
  GPU_ASSERT_OK(Engine::Create(m.spec, TestEngineOptions(m), &engine));
  GPU_ASSERT_OK(engine->PoisonKvForTesting());
  ExpectValidStepWorks(*engine, m, "after the refused allocation");
}

// Logits rows come back through the engine's pinned staging buffer of
// min(256, max_batch_tokens) rows; a step copying more (a 300-token prompt
// asking for every row, with max_batch_tokens 320) takes the overflow
// vector. Both against the reference, in steps that mix the two (the other
// sequences' rows fit the staging).
GPU_TEST(EngineForward, LogitsPastTheStagingRows) {
  SynthSpecOptions o = TinyModelOptions(Architecture::kLlama, TensorType::kF32);
  o.seed = 1200;
  o.hp.context_length = 512;
  TestModel m;
  PrepareModel(o, {300, 20}, 3, KvType::kF16, &m);
  if (HasFailure()) return;
  EngineOptions options = TestEngineOptions(m);
  options.max_batch_tokens = 320;
  std::unique_ptr<Engine> engine;
  GPU_ASSERT_OK(Engine::Create(m.spec, options, &engine));
  GPU_ASSERT_OK(engine->PoisonKvForTesting());
  RunOptions run_options;
  run_options.chunk = 300;  // sequence 0's whole prompt, all rows, in one step
  ScenarioRun run;
  RunScenario(*engine, m, run_options, &run);
  if (HasFailure()) return;
  GPU_EXPECT(run.seqs[0].positions.size() >= 300) << "the prompt's rows came back";
  ExpectMatchesReference(run, m, ForwardTolerance(o.type, KvType::kF16), "staging overflow");
}

// The attention reads K/V in 16-byte chunks of 8 dims: head_dim 12 (and
// 264, past 256) is refused as unimplemented, from a spec and synthetic.
GPU_TEST(EngineErrors, HeadDimNotMultipleOf8Refused) {
  for (int32_t head_dim : {12, 264}) {
    SynthSpecOptions o = TinyModelOptions(Architecture::kLlama, TensorType::kF16);
    o.hp.n_heads = 8;
    o.hp.n_kv_heads = 4;
    o.hp.head_dim = head_dim;
    o.hp.dim = 8 * head_dim;  // 96 and 2112: multiples of 32
    const devices::ModelSpec spec = MakeSynthSpec(o);
    EngineOptions options;
    options.kv_blocks = 8;
    std::unique_ptr<Engine> engine;
    GPU_EXPECT_CODE(Engine::Create(spec, options, &engine), GpuCode::kUnimplemented)
        << "head_dim " << head_dim;
    GPU_EXPECT_CODE(
        Engine::CreateSynthetic(o.hp, devices::cuda::core::WeightType::kF16, 1, options, &engine),
        GpuCode::kUnimplemented)
        << "head_dim " << head_dim << ", synthetic";
  }
}

}  // namespace
}  // namespace tokenmill::gpu_test
