// Helpers shared by the CPU executor tests: tiny synthetic models, block
// tables, one-sequence steps and logits comparisons.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "devices/cpu/cpu_executor.h"
#include "devices/executor.h"
#include "gtest/gtest.h"
#include "runtime/model/synth.h"

namespace tokenmill::devices::cpu::testing {

// The tiny shape every executor test uses (fast under ASan too).
inline model::SynthOptions TinyModel(Architecture arch, TensorType type) {
  model::SynthOptions o;
  o.arch = arch;
  o.dim = 64;
  o.n_layers = 2;
  o.n_heads = 4;
  o.n_kv_heads = 2;
  o.ffn_dim = 128;
  o.vocab_size = 300;
  o.context_length = 256;
  o.weight_type = type;
  o.seed = 7;
  // Qwen3 checkpoints have heads x head_dim != dim; so does the tiny one.
  if (arch == Architecture::kQwen3) o.head_dim = 32;
  if (arch == Architecture::kQwen3Moe) {
    // Qwen3-MoE in small: qwen3's head shape, 8 experts of which 2 per token.
    o.head_dim = 32;
    o.n_experts = 8;
    o.n_experts_used = 2;
  }
  if (arch == Architecture::kGemma3) {
    // Gemma 3's shape in small: head_dim apart from dim / heads, tied, and a
    // local layer (window 5, shorter than the tests' prompts and blocks that
    // straddle it) before a global one.
    o.head_dim = 32;
    o.tied_embeddings = true;
    o.sliding_window = 5;
    o.sliding_window_pattern = 2;
  }
  return o;
}

inline model::LoadedModel Synthesize(const model::SynthOptions& options) {
  absl::StatusOr<model::LoadedModel> m = model::SynthesizeModel(options);
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? std::move(*m) : model::LoadedModel{};
}

inline std::unique_ptr<CpuExecutor> MakeExecutor(const ModelSpec& spec, int32_t block_tokens,
                                                 KvType kv_type, uint32_t kv_blocks,
                                                 int32_t threads = 2,
                                                 int32_t max_batch_tokens = 64) {
  ExecutorOptions o;
  o.block_tokens = block_tokens;
  o.kv_type = kv_type;
  o.kv_blocks = kv_blocks;
  o.threads = threads;
  o.max_batch_tokens = max_batch_tokens;
  absl::StatusOr<std::unique_ptr<CpuExecutor>> e = CpuExecutor::Create(spec, o);
  EXPECT_TRUE(e.ok()) << e.status();
  return e.ok() ? std::move(*e) : nullptr;
}

// Deterministic token ids in [1, vocab).
inline std::vector<int32_t> Prompt(int32_t n, int32_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> tokens(static_cast<size_t>(n));
  for (int32_t& t : tokens) t = 1 + static_cast<int32_t>(rng() % static_cast<uint32_t>(vocab - 1));
  return tokens;
}

// `count` distinct block ids out of [0, kv_blocks), shuffled, so tests never
// rely on a sequence's blocks being contiguous or ordered.
inline std::vector<uint32_t> ShuffledBlocks(uint32_t kv_blocks, uint32_t seed) {
  std::vector<uint32_t> ids(kv_blocks);
  std::iota(ids.begin(), ids.end(), 0u);
  std::shuffle(ids.begin(), ids.end(), std::mt19937(seed));
  return ids;
}

inline SequenceStep Step(uint64_t id, std::span<const int32_t> tokens, int32_t start,
                         std::span<const uint32_t> table, LogitsWanted logits) {
  SequenceStep s;
  s.seq_id = id;
  s.tokens = tokens;
  s.start_pos = start;
  s.block_table = table;
  s.logits = logits;
  return s;
}

// Runs one sequence's step alone and returns its logits.
inline std::vector<float> RunAlone(Executor& e, uint64_t id, std::span<const int32_t> tokens,
                                   int32_t start, std::span<const uint32_t> table,
                                   LogitsWanted logits = LogitsWanted::kAll) {
  Batch batch;
  batch.seqs.push_back(Step(id, tokens, start, table, logits));
  absl::StatusOr<StepOutput> out = e.Forward(batch);
  EXPECT_TRUE(out.ok()) << out.status();
  return out.ok() ? out->logits : std::vector<float>();
}

// max |a - b| / max |expected|: the error relative to the logits' scale.
inline double RelativeError(std::span<const float> actual, std::span<const float> expected) {
  EXPECT_EQ(actual.size(), expected.size());
  double diff = 0.0, scale = 1e-12;
  for (size_t i = 0; i < std::min(actual.size(), expected.size()); ++i) {
    const double d = std::fabs(static_cast<double>(actual[i]) - expected[i]);
    diff = std::isnan(d) ? INFINITY : std::max(diff, d);
    scale = std::max(scale, std::fabs(static_cast<double>(expected[i])));
  }
  return diff / scale;
}

inline bool AllFinite(std::span<const float> v) {
  return std::all_of(v.begin(), v.end(), [](float f) { return std::isfinite(f); });
}

}  // namespace tokenmill::devices::cpu::testing
