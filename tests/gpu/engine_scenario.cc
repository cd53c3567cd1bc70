// The engine tests' machinery (engine_scenario.h).
#include "tests/gpu/engine_scenario.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <span>
#include <string>
#include <vector>

#include "tests/gpu/test_util.h"
#include "tests/reference/reference_model.h"

namespace tokenmill::gpu_test {
namespace {

using devices::KvType;
using devices::TensorType;
using devices::cuda::core::Engine;
using devices::cuda::core::EngineOptions;
using devices::cuda::core::LogitsMode;
using devices::cuda::core::StepResult;
using devices::cuda::core::StepSequence;
using reference::ReferenceModel;

WeightType WeightTypeOf(TensorType type) {
  switch (type) {
    case TensorType::kF16:
      return WeightType::kF16;
    case TensorType::kBF16:
      return WeightType::kBF16;
    case TensorType::kQ8_0:
      return WeightType::kQ8_0;
    default:
      return WeightType::kF32;
  }
}

}  // namespace

double ForwardTolerance(TensorType type, KvType kv, bool gemv_only) {
  const WeightType w = WeightTypeOf(type);
  const double t = gemv_only ? GemvTolerance(w) : GemmTolerance(w);
  return kv == KvType::kF16 ? std::max(t, kTolKvFlip) : t;
}

namespace {

double Margin(std::span<const float> row) {
  float top = -INFINITY, second = -INFINITY, max_abs = 0.0f;
  for (float v : row) {
    if (v > top) {
      second = top;
      top = v;
    } else if (v > second) {
      second = v;
    }
    max_abs = std::max(max_abs, std::fabs(v));
  }
  return max_abs > 0.0f ? (static_cast<double>(top) - second) / max_abs : 0.0;
}

// A prompt of `length` tokens (random, then a last token tried until one
// works) whose greedy continuation has kGreedyMargin at every step. The
// prefix runs once; each try re-runs from its last position.
CheckResult ChooseExpected(ReferenceModel& ref, int32_t length, int32_t generate, uint64_t seed,
                           Expected* out) {
  const int32_t vocab = ref.hp().vocab_size;
  const size_t v = static_cast<size_t>(vocab);
  Random random(seed);
  std::vector<int32_t> prefix(static_cast<size_t>(length - 1));
  for (int32_t& t : prefix) t = static_cast<int32_t>(random.Below(static_cast<uint32_t>(vocab)));
  const std::vector<float> prefix_logits = ref.Forward(prefix, 0);
  for (int attempt = 0; attempt < 256; ++attempt) {
    const int32_t last = static_cast<int32_t>(random.Below(static_cast<uint32_t>(vocab)));
    out->prompt = prefix;
    out->prompt.push_back(last);
    out->logits = prefix_logits;
    out->tokens.clear();
    std::vector<float> row = ref.Forward(std::span<const int32_t>(&last, 1), length - 1);
    while (Margin(row) >= kGreedyMargin) {
      out->logits.insert(out->logits.end(), row.begin(), row.end());
      out->tokens.push_back(reference::ArgMax(row));
      if (static_cast<int32_t>(out->tokens.size()) == generate) {
        // GreedyGenerate is the oracle the GPU must match: these are its tokens.
        const std::vector<int32_t> greedy = ref.GreedyGenerate(out->prompt, generate);
        if (greedy != out->tokens) return {false, "GreedyGenerate differs from Forward"};
        if (out->logits.size() != static_cast<size_t>(length + generate - 1) * v) {
          return {false, "reference logits of the wrong size"};
        }
        return {};
      }
      const int32_t pos = length - 1 + static_cast<int32_t>(out->tokens.size());
      row = ref.Forward(std::span<const int32_t>(&out->tokens.back(), 1), pos);
    }
  }
  return {false, "no prompt of length " + std::to_string(length) +
                     " has clear greedy margins in 256 tries"};
}

}  // namespace

void PrepareModel(const SynthSpecOptions& options, const std::vector<int32_t>& lengths,
                  int32_t generate, KvType kv, TestModel* m) {
  m->options = options;
  m->spec = MakeSynthSpec(options);
  ReferenceModel ref(m->spec, {.round_kv_to_f16 = kv == KvType::kF16});
  m->expected.assign(lengths.size(), {});
  uint32_t blocks = 4;  // spare
  for (size_t s = 0; s < lengths.size(); ++s) {
    GPU_ASSERT_CHECK(
        ChooseExpected(ref, lengths[s], generate, options.seed * 1000 + s, &m->expected[s]));
    blocks += static_cast<uint32_t>((lengths[s] + generate + kBlockTokens - 1) / kBlockTokens);
  }
  m->kv_blocks = (blocks + 3) / 4 * 4;
  std::vector<uint32_t> ids(m->kv_blocks);
  for (uint32_t i = 0; i < m->kv_blocks; ++i) ids[i] = i;
  Random(options.seed).Shuffle(ids);
  size_t next = 0;
  m->tables.clear();
  for (int32_t length : lengths) {
    const size_t n = static_cast<size_t>((length + generate + kBlockTokens - 1) / kBlockTokens);
    m->tables.emplace_back(ids.begin() + static_cast<ptrdiff_t>(next),
                           ids.begin() + static_cast<ptrdiff_t>(next + n));
    next += n;
  }
}

EngineOptions TestEngineOptions(const TestModel& m, KvType kv) {
  EngineOptions o;
  o.block_tokens = kBlockTokens;
  o.kv_type = kv;
  o.kv_blocks = m.kv_blocks;
  o.max_batch_tokens = 64;
  o.cuda_graphs = true;
  return o;
}

namespace {

// Rows a sequence's share of a step gets: logits rows (kAll, kLast) and
// argmax values (those and kArgmax).
int32_t LogitsRows(const StepSequence& q) {
  return q.logits == LogitsMode::kAll ? q.n_tokens : q.logits == LogitsMode::kLast ? 1 : 0;
}
int32_t ArgmaxRows(const StepSequence& q) {
  return q.logits == LogitsMode::kArgmax ? 1 : LogitsRows(q);
}

}  // namespace

void RunScenario(Engine& engine, const TestModel& m, const RunOptions& o, ScenarioRun* run) {
  const size_t vocab = static_cast<size_t>(engine.hp().vocab_size);
  const size_t n = m.expected.size();
  std::vector<int32_t> fed(n, 0);
  run->seqs.assign(n, {});
  for (int guard = 0; guard < 1000; ++guard) {
    std::vector<StepSequence> seqs;
    std::vector<size_t> owner;
    int64_t budget = o.step_tokens > 0 ? o.step_tokens : int64_t{1} << 40;
    for (size_t s = 0; s < n && budget > 0; ++s) {
      const Expected& e = m.expected[s];
      const int32_t length = static_cast<int32_t>(e.prompt.size());
      SequenceRun& r = run->seqs[s];
      const LogitsMode last =
          static_cast<int>(s) == o.argmax_only_seq ? LogitsMode::kArgmax : LogitsMode::kLast;
      StepSequence q;
      if (fed[s] < length) {
        q.n_tokens =
            static_cast<int32_t>(std::min<int64_t>({o.chunk, int64_t{length - fed[s]}, budget}));
        q.tokens = e.prompt.data() + fed[s];
        q.start_pos = fed[s];
        q.logits = fed[s] + q.n_tokens < length ? LogitsMode::kNone
                   : s == 0 && o.all_rows_first ? LogitsMode::kAll
                                                : last;
      } else if (r.tokens.size() < e.tokens.size()) {
        q.n_tokens = 1;
        q.tokens = &r.tokens.back();
        q.start_pos = length + static_cast<int32_t>(r.tokens.size()) - 1;
        q.logits = last;
      } else {
        continue;
      }
      q.block_table = m.tables[s].data();
      q.n_blocks = (q.start_pos + q.n_tokens + kBlockTokens - 1) / kBlockTokens;
      budget -= q.n_tokens;
      seqs.push_back(q);
      owner.push_back(s);
    }
    if (seqs.empty()) return;
    if (o.poison) GPU_ASSERT_OK(engine.PoisonScratchForTesting());
    StepResult result;
    const int step = run->steps++;
    GPU_ASSERT_OK(engine.Step(seqs.data(), seqs.size(), o.copy_logits, true, &result))
        << "step " << step;
    run->graph_steps += result.graph;
    size_t logits_rows = 0, argmax_rows = 0;
    for (const StepSequence& q : seqs) {
      logits_rows += static_cast<size_t>(LogitsRows(q));
      argmax_rows += static_cast<size_t>(ArgmaxRows(q));
    }
    GPU_ASSERT_EQ(result.argmax.size(), argmax_rows) << "step " << step;
    GPU_ASSERT_EQ(result.logits.size(), o.copy_logits ? logits_rows * vocab : 0) << "step " << step;
    // Logits rows and argmax values both go in sequence order; a kArgmax
    // sequence has an argmax and no logits row.
    size_t logits_row = 0, argmax_row = 0;
    for (size_t i = 0; i < seqs.size(); ++i) {
      const StepSequence& q = seqs[i];
      SequenceRun& r = run->seqs[owner[i]];
      for (int32_t k = 0; k < LogitsRows(q); ++k, ++logits_row) {
        r.positions.push_back(q.logits == LogitsMode::kAll ? q.start_pos + k
                                                           : q.start_pos + q.n_tokens - 1);
        if (!o.copy_logits) continue;
        const std::span<const float> logits(result.logits.data() + logits_row * vocab, vocab);
        r.logits.insert(r.logits.end(), logits.begin(), logits.end());
        GPU_EXPECT_EQ(result.argmax[argmax_row + static_cast<size_t>(k)], reference::ArgMax(logits))
            << "device argmax vs the copied logits, step " << step << ", position "
            << r.positions.back();
      }
      argmax_row += static_cast<size_t>(ArgmaxRows(q));
      if (ArgmaxRows(q) > 0) r.tokens.push_back(result.argmax[argmax_row - 1]);
      if (q.start_pos < static_cast<int32_t>(m.expected[owner[i]].prompt.size())) {
        fed[owner[i]] += q.n_tokens;
      }
    }
  }
  GPU_ASSERT(false) << "the scenario did not finish in 1000 steps";
}

void ExpectMatchesReference(const ScenarioRun& run, const TestModel& m, double tolerance,
                            const std::string& what) {
  const size_t vocab = static_cast<size_t>(m.spec.hp.vocab_size);
  double worst = 0.0;
  for (size_t s = 0; s < m.expected.size(); ++s) {
    const Expected& e = m.expected[s];
    const SequenceRun& r = run.seqs[s];
    const size_t length = e.prompt.size();
    size_t same = 0;
    while (same < std::min(r.tokens.size(), e.tokens.size()) && r.tokens[same] == e.tokens[same]) {
      ++same;
    }
    for (size_t i = 0; i < r.positions.size() && (i + 1) * vocab <= r.logits.size(); ++i) {
      const size_t p = static_cast<size_t>(r.positions[i]);
      if (p >= length && p - length >= same) break;
      const std::span<const float> got(r.logits.data() + i * vocab, vocab);
      const std::span<const float> want(e.logits.data() + p * vocab, vocab);
      const std::vector<double> wide(want.begin(), want.end());
      worst = std::max(worst, Compare(got, wide).relative);
      const CheckResult check = CheckClose(got, want, tolerance);
      GPU_EXPECT_CHECK(check) << what << ", sequence " << s << ", position " << p;
      if (!check.ok) break;
    }
    GPU_EXPECT_EQ(r.tokens, e.tokens) << what << ", sequence " << s << " greedy tokens";
  }
  std::printf("[ measured ] %s: largest relative logits error %.3g (bound %.3g)\n", what.c_str(),
              worst, tolerance);
}

void ExpectSameRuns(const ScenarioRun& a, const ScenarioRun& b, size_t vocab, double tolerance,
                    const std::string& what) {
  GPU_ASSERT_EQ(a.seqs.size(), b.seqs.size()) << what;
  for (size_t s = 0; s < a.seqs.size(); ++s) {
    const SequenceRun &x = a.seqs[s], &y = b.seqs[s];
    GPU_EXPECT_EQ(x.tokens, y.tokens) << what << ", sequence " << s;
    GPU_EXPECT_EQ(x.positions, y.positions) << what << ", sequence " << s;
    if (x.logits.size() != y.logits.size()) continue;
    if (tolerance == 0.0) {
      size_t differ = 0;
      for (size_t i = 0; i < x.logits.size(); ++i) differ += x.logits[i] != y.logits[i];
      GPU_EXPECT_EQ(differ, 0) << what << ", sequence " << s << ": logits not bit-identical";
      continue;
    }
    for (size_t i = 0; (i + 1) * vocab <= x.logits.size(); ++i) {
      GPU_EXPECT_CLOSE(std::span<const float>(x.logits).subspan(i * vocab, vocab),
                       std::span<const float>(y.logits).subspan(i * vocab, vocab), tolerance)
          << what << ", sequence " << s << ", row " << i;
    }
  }
}

std::string Describe(const SynthSpecOptions& o, KvType kv) {
  std::string s =
      std::string(devices::ArchitectureName(o.arch)) + " " + devices::TensorTypeName(o.type);
  if (o.tied_embeddings) s += " tied";
  if (o.hp.rope_scaling.enabled()) s += " llama3-rope";
  if (o.rope_freq_factors) s += " rope-freqs";
  return s + (kv == KvType::kF16 ? " kv-f16" : " kv-f32");
}

}  // namespace tokenmill::gpu_test
