// The machinery of the engine tests (engine_test.cc): tiny models with what
// the f64 ReferenceModel says for a few prompts chosen to have clear greedy
// margins, a runner that drives an Engine through batched chunked prefills
// and greedy decodes, and the comparisons of its output with the reference
// and with other runs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "devices/cuda/core/engine.h"
#include "devices/kv_layout.h"
#include "devices/model_spec.h"
#include "tests/gpu/gpu_test.h"
#include "tests/gpu/synth_spec.h"

namespace tokenmill::gpu_test {

inline constexpr devices::TensorType kAllTensorTypes[] = {
    devices::TensorType::kF32, devices::TensorType::kF16, devices::TensorType::kBF16,
    devices::TensorType::kQ8_0};
inline constexpr int32_t kBlockTokens = 16;
// With an f16 cache, a last-bit difference before the rounding can move a key
// or value by one f16 ulp (~5e-4 relative); the CPU executor measures up to
// 5e-5 from that on such shapes, so no type's bound goes below this.
inline constexpr double kTolKvFlip = 2e-4;
// Prompts are chosen (on the CPU reference alone) so that at every greedy
// step the top logit leads the second by at least this share of max |logit|:
// several times the largest logit error 16-bit cuBLAS inputs cause (a CPU
// emulation measured 4e-3 for Q8_0), so greedy GPU decoding must pick the
// same tokens, with no near-ties to excuse a difference.
inline constexpr double kGreedyMargin = 1e-2;

// Relative logits error allowed (max |gpu - ref| / max |ref| over a row):
// the matmul bounds of test_util.h (prefill chunks run on cuBLAS:
// GemmTolerance, so Q8_0 as bf16; forced GEMV: GemvTolerance), never below
// kTolKvFlip with an f16 cache. A CPU emulation of the engine's numerics on
// these models (16-bit cuBLAS inputs, f32 sums, f16 KV) measured at most
// 1.2e-5 (f32), 3.3e-4 (f16), 2.7e-3 (bf16) and 4.0e-3 (Q8_0).
double ForwardTolerance(devices::TensorType type, devices::KvType kv, bool gemv_only = false);

// One sequence as the reference runs it: the prompt, the logits at every
// position 0 .. prompt + generate - 2 (the input at position p is prompt[p],
// then tokens[p - prompt]) and the greedy tokens (GreedyGenerate's).
struct Expected {
  std::vector<int32_t> prompt;
  std::vector<float> logits;
  std::vector<int32_t> tokens;
};

// A model, what the reference says for its test sequences, and each
// sequence's KV blocks (shuffled over kv_blocks, a multiple of 4 so that the
// paged tests can cut it into pages of 4 blocks).
struct TestModel {
  SynthSpecOptions options;
  devices::ModelSpec spec;
  std::vector<Expected> expected;
  std::vector<std::vector<uint32_t>> tables;
  uint32_t kv_blocks = 0;
};

// Builds the model and one Expected per prompt length (generating
// `generate` tokens each) with the reference rounding K/V to f16 when `kv`
// is f16. Records a test failure when no prompt with clear margins is found.
void PrepareModel(const SynthSpecOptions& options, const std::vector<int32_t>& lengths,
                  int32_t generate, devices::KvType kv, TestModel* m);

// block_tokens kBlockTokens, the model's kv_blocks, 64 tokens a step, graphs.
devices::cuda::core::EngineOptions TestEngineOptions(const TestModel& m,
                                                     devices::KvType kv = devices::KvType::kF16);

struct RunOptions {
  int32_t chunk = 16;          // prompt tokens per sequence per step
  int64_t step_tokens = 0;     // most tokens in one step (0: no limit)
  bool all_rows_first = true;  // sequence 0 asks for every row of its last chunk
  bool copy_logits = true;
  bool poison = true;  // PoisonScratchForTesting before every step
  // This sequence asks kArgmax where the others ask kLast: greedy tokens
  // come back, logits rows do not (-1: none).
  int argmax_only_seq = -1;
};

// What the engine returned for one sequence: greedy tokens (the device
// argmax) and every logits row with its position (without copy_logits,
// positions only; a kArgmax sequence has tokens only).
struct SequenceRun {
  std::vector<int32_t> tokens;
  std::vector<int32_t> positions;
  std::vector<float> logits;
};

struct ScenarioRun {
  std::vector<SequenceRun> seqs;
  int steps = 0;
  int graph_steps = 0;  // steps whose StepResult said graph
};

// Runs the sequences' prompts in chunks and their greedy decodes, batched:
// each step takes the next chunk of every sequence still prefilling and one
// token of every sequence decoding (so steps mix the two, and decode-only
// steps shrink as sequences finish). The device argmax is fed back, and must
// equal the argmax of the copied logits. Records failures; check
// HasFailure() after.
void RunScenario(devices::cuda::core::Engine& engine, const TestModel& m, const RunOptions& o,
                 ScenarioRun* run);

// The run against the reference: every logits row within `tolerance`, the
// greedy tokens equal. Rows after the first differing token are skipped
// (their inputs differ). Prints the largest error measured.
void ExpectMatchesReference(const ScenarioRun& run, const TestModel& m, double tolerance,
                            const std::string& what);

// Two runs of the same sequences: same tokens and positions, logits equal
// bit for bit (tolerance 0) or within a relative tolerance per row.
void ExpectSameRuns(const ScenarioRun& a, const ScenarioRun& b, size_t vocab, double tolerance,
                    const std::string& what);

// "llama bf16 tied kv-f16" and the like, for messages.
std::string Describe(const SynthSpecOptions& o, devices::KvType kv);

}  // namespace tokenmill::gpu_test
