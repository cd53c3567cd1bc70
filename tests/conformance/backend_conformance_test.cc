// The conformance suite a device backend must pass, in the spirit of ggml's
// test-backend-ops: the plain f32 reference (tests/reference) against the
// backend, driven only through the registry interface (DeviceBackend:
// discover, capabilities, arena, executor) as the instance manager drives it.
// For every architecture, weight type, KV type and block size the device
// claims: batches mixing prefill chunks and decodes of several sequences,
// KV in arena pages mapped in scrambled order, logits and argmax. And
// invalid batches are refused with nothing changed.
//
// Runs on the CPU backend, on the reference plugin (loaded from its shared
// library like any vendor's), on the OpenCL plugin when the build found
// OpenCL (then an OpenCL device must be there: CI has PoCL's CPU device), on
// the in-tree CPU executor behind the C ABI ("cpu_abi",
// tests/bench/cpu_abi_plugin.cc, the shim plugin_boundary_bench measures)
// when benchmarks are built, and on CUDA when this build and machine have a
// GPU. A backend this build lacks is listed as skipped by name, never counted
// as passed; the CPU and the reference plugin are always present.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "devices/backend.h"
#include "devices/plugin/plugin_backend.h"
#include "gtest/gtest.h"
#include "runtime/model/synth.h"
#include "runtime/node/device_backends.h"
#include "tests/reference/reference_model.h"

#ifdef TOKENMILL_OPENCL_PLUGIN
// ASan builds: PoCL, CI's OpenCL device, leaves a few hundred bytes of its
// kernel compiler's state unreachable at exit (measured: 496 bytes in 9
// allocations, every stack in libpocl). LeakSanitizer reads this at start
// (an environment variable set by the test would come too late); only leaks
// with a libpocl frame are suppressed. (The daemon the integration test
// starts showed none, so it carries no suppression.)
extern "C" const char* __lsan_default_suppressions() { return "leak:libpocl.so\n"; }
#endif

namespace tokenmill::conformance {
namespace {

using devices::Architecture;
using devices::Batch;
using devices::KvType;
using devices::LogitsWanted;
using devices::SequenceStep;
using devices::TensorType;

// Bounds on max |backend - reference| / max |reference logit| per row.
// The reference keeps f32 activations and rounds K/V to f16 for an f16
// cache. Plain weights (f32/f16/bf16): summation order and float vs double
// sums (measured: CPU <= 9.6e-5, reference plugin <= 1.2e-5); the bound
// leaves room for a GPU that rounds activations to f16 (~5e-4 each).
constexpr double kPlainTolerance = 2e-3;
// Q8_0/Q4_0 and the K-quants: backends may quantize activations to Q8_0
// before the integer dot products (the CPU does), ~1e-2 per matmul
// (measured: CPU <= 3.5e-2 over its 160 combinations, qwen3moe included;
// the reference plugin, which does not, <= 4.1e-6).
constexpr double kQuantizedTolerance = 0.1;

constexpr int32_t kVocab = 300;
constexpr size_t kPageBytes = 16384;  // a multiple of the OS page (host arena)

struct Target {
  std::string kind;
  devices::DeviceBackend* backend = nullptr;
  devices::Device* device = nullptr;
};

// The node's backends, made once: the compiled-in ones and the reference
// plugin built next to this test.
class Backends {
 public:
  static Backends& Get() {
    static Backends* backends = new Backends();  // outlives every test
    return *backends;
  }

  // The first device of `kind` that runs models, or a target with null
  // members and `why` set.
  Target Find(const std::string& kind, std::string* why) {
    Target t{kind};
    if (auto e = load_errors_.find(kind); e != load_errors_.end()) {
      *why = e->second;
      return t;
    }
    t.backend = registry_.ForKind(kind);
    if (t.backend == nullptr) {
      *why = "no backend of kind " + kind;
      return t;
    }
    for (const devices::DevicePtr& d : discovery_.devices) {
      if (registry_.For(*d) == t.backend && t.backend->RunsModels(*d)) {
        t.device = d.get();
        return t;
      }
    }
    *why = "no " + kind + " device runs models here";
    if (kind == "cuda") *why += " (" + discovery_.cuda_unavailable_reason + ")";
    if (kind == "opencl") *why += " (the plugin found no OpenCL device: install pocl-opencl-icd)";
    t.backend = nullptr;
    return t;
  }

 private:
  Backends() {
    EXPECT_TRUE(runtime::AddBuiltinBackends(registry_).ok());
    Load("reference", TOKENMILL_REFERENCE_PLUGIN);
#ifdef TOKENMILL_OPENCL_PLUGIN
    // PoCL compiles kernels with LLVM and caches the result: keep the cache
    // in the build tree (CI keeps it between the suite's runs).
    setenv("POCL_CACHE_DIR", TOKENMILL_BINARY_DIR "/pocl-cache", /*overwrite=*/0);
    Load("opencl", TOKENMILL_OPENCL_PLUGIN);
#endif
#ifdef TOKENMILL_CPU_ABI_PLUGIN
    Load("cpu_abi", TOKENMILL_CPU_ABI_PLUGIN);
#endif
    auto found = registry_.DiscoverAll(devices::DiscoveryOptions{});
    EXPECT_TRUE(found.ok()) << found.status();
    if (found.ok()) discovery_ = std::move(*found);
  }

  void Load(const std::string& kind, const char* path) {
    auto plugin = devices::LoadDevicePlugin(path);
    if (plugin.ok()) {
      EXPECT_TRUE(registry_.Add(std::move(*plugin)).ok());
    } else {
      load_errors_[kind] = plugin.status().ToString();
    }
  }

  devices::BackendRegistry registry_;
  devices::Discovery discovery_;
  std::map<std::string, std::string> load_errors_;
};

struct Combination {
  Architecture arch;
  TensorType type;
  KvType kv;
  int32_t block_tokens;
};

std::string Describe(const Combination& c) {
  return std::string(devices::ArchitectureName(c.arch)) + "/" + devices::TensorTypeName(c.type) +
         "/kv_" + (c.kv == KvType::kF16 ? "f16" : "f32") + "/bt" + std::to_string(c.block_tokens);
}

double RelativeError(std::span<const float> got, std::span<const float> want) {
  if (got.size() != want.size()) return INFINITY;
  double diff = 0.0, scale = 1e-12;
  for (size_t i = 0; i < want.size(); ++i) {
    const double d = std::fabs(static_cast<double>(got[i]) - want[i]);
    diff = std::isnan(d) ? INFINITY : std::max(diff, d);
    scale = std::max(scale, std::fabs(static_cast<double>(want[i])));
  }
  return diff / scale;
}

// One model on the target's device, on its own arena with every page
// mapped in reverse order, so no sequence's blocks are contiguous in memory.
class Rig {
 public:
  Rig(const Target& t, const Combination& c, int32_t max_batch_tokens = 64) : target_(t) {
    model::SynthOptions o;
    o.arch = c.arch;
    o.dim = 64;
    o.n_layers = 2;
    o.n_heads = 4;
    o.n_kv_heads = 2;
    o.ffn_dim = 128;
    o.vocab_size = kVocab;
    o.context_length = 64;
    o.weight_type = c.type;
    o.seed = 11;
    // K-quant rows hold whole super-blocks of 256.
    // K-quant rows hold whole super-blocks of 256 (8 heads of 32: KV blocks
    // still fit a page).
    const bool k_quant = devices::TensorTypeBlockElements(c.type) == 256;
    if (k_quant) o.dim = o.ffn_dim = 256, o.n_heads = 8;
    // heads x head_dim != dim, as in Qwen3.
    if (c.arch == Architecture::kQwen3 || c.arch == Architecture::kGemma3 ||
        c.arch == Architecture::kQwen3Moe) {
      o.head_dim = 32;
      if (k_quant) o.n_heads = 16;
    }
    // Gemma 3: tied, a local layer (window 5, under the 13-token prompt)
    // before a global one.
    if (c.arch == Architecture::kGemma3) {
      o.tied_embeddings = true;
      o.sliding_window = 5;
      o.sliding_window_pattern = 2;
    }
    // Qwen3-MoE: 4 experts, 2 per token.
    if (c.arch == Architecture::kQwen3Moe) {
      o.n_experts = 4;
      o.n_experts_used = 2;
    }
    auto m = model::SynthesizeModel(o);
    EXPECT_TRUE(m.ok()) << m.status();
    if (!m.ok()) return;
    model_ = std::move(*m);
    auto arena =
        t.backend->CreateKvArena(*t.device, devices::KvArenaBudget{.bytes = 1 << 20}, kPageBytes);
    EXPECT_TRUE(arena.ok()) << arena.status();
    if (!arena.ok()) return;
    arena_ = std::move(*arena);
    devices::ExecutorOptions eo;
    eo.block_tokens = c.block_tokens;
    eo.kv_type = c.kv;
    eo.kv_blocks = 64;
    eo.threads = 2;
    eo.max_batch_tokens = max_batch_tokens;
    eo.kv_arena = arena_.get();
    auto e = t.backend->CreateExecutor(*t.device, model_.spec, eo);
    EXPECT_TRUE(e.ok()) << e.status();
    if (!e.ok()) return;
    executor_ = std::move(*e);
    const uint32_t per_page = executor_->kv_blocks_per_page();
    EXPECT_GE(per_page, 1u);
    const uint32_t slots = per_page == 0 ? 0 : executor_->kv_blocks() / per_page;
    std::vector<uint32_t> pages;
    for (uint32_t s = 0; s < slots; ++s) {
      std::optional<uint32_t> p = arena_->TakePage();
      if (!p) break;
      pages.push_back(*p);
    }
    // Leave the last slot unmapped: the refusal tests name its blocks.
    for (uint32_t s = 0; s + 1 < slots && s < pages.size(); ++s) {
      EXPECT_TRUE(executor_->MapKvPage(s, pages[pages.size() - 1 - s]).ok());
      mapped_blocks_ += per_page;
    }
    unmapped_block_ = slots == 0 ? 0 : (slots - 1) * per_page;
    reference::ReferenceOptions r;
    r.round_kv_to_f16 = c.kv == KvType::kF16;
    reference_options_ = r;
  }

  bool ok() const { return executor_ != nullptr && mapped_blocks_ >= 24; }
  devices::Executor& executor() { return *executor_; }
  const devices::ModelSpec& spec() const { return model_.spec; }
  reference::ReferenceOptions reference_options() const { return reference_options_; }
  // Blocks of sequence `seq`: interleaved with the other sequences' ids.
  std::vector<uint32_t> Blocks(int seq, int n) const {
    std::vector<uint32_t> out;
    for (int i = 0; i < n; ++i)
      out.push_back(static_cast<uint32_t>((i * 3 + seq) % mapped_blocks_));
    return out;
  }
  uint32_t unmapped_block() const { return unmapped_block_; }

 private:
  Target target_;
  model::LoadedModel model_;
  devices::KvArenaPtr arena_;
  devices::ExecutorPtr executor_;
  uint32_t mapped_blocks_ = 0;
  uint32_t unmapped_block_ = 0;
  reference::ReferenceOptions reference_options_;
};

std::vector<int32_t> Tokens(int n, uint32_t seed) {
  std::vector<int32_t> t;
  uint32_t x = seed;
  for (int i = 0; i < n; ++i) {
    x = x * 1664525u + 1013904223u;
    t.push_back(1 + static_cast<int32_t>((x >> 8) % (kVocab - 1)));
  }
  return t;
}

SequenceStep Step(uint64_t id, const std::vector<int32_t>& tokens, size_t from, size_t n,
                  const std::vector<uint32_t>& table, LogitsWanted logits) {
  SequenceStep s;
  s.seq_id = id;
  s.tokens = std::span<const int32_t>(tokens).subspan(from, n);
  s.start_pos = static_cast<int32_t>(from);
  s.block_table = table;
  s.logits = logits;
  return s;
}

class ConformanceTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    std::string why;
    target_ = Backends::Get().Find(GetParam(), &why);
    if (target_.backend == nullptr) {
#ifndef TOKENMILL_OPENCL_PLUGIN
      if (GetParam() == "opencl") GTEST_SKIP() << "this build found no OpenCL";
#endif
#ifndef TOKENMILL_CPU_ABI_PLUGIN
      if (GetParam() == "cpu_abi") GTEST_SKIP() << "this build has no benchmarks (cpu_abi shim)";
#endif
      // Only CUDA may be absent (no GPU or a build without nvcc); a built
      // OpenCL plugin must find a device.
      ASSERT_EQ(GetParam(), "cuda") << why;
      GTEST_SKIP() << why;
    }
  }

  std::vector<Combination> Claimed() const {
    const devices::DeviceCapabilities caps = target_.backend->Capabilities(*target_.device);
    std::vector<Combination> out;
    for (Architecture a : caps.architectures) {
      for (TensorType t : caps.weight_types) {
        for (KvType kv : caps.kv_types) {
          for (int32_t bt : {4, 16}) {
            if (caps.max_block_tokens == 0 || bt <= caps.max_block_tokens)
              out.push_back({a, t, kv, bt});
          }
        }
      }
    }
    return out;
  }

  static double ToleranceFor(TensorType t) {
    return t == TensorType::kF32 || t == TensorType::kF16 || t == TensorType::kBF16
               ? kPlainTolerance
               : kQuantizedTolerance;
  }

  Target target_;
};

// Sequence A: a 13-token prompt in chunks of 7 (all logits) and 6 (last
// logits), then two decodes (argmax, then logits). Sequence B: a 5-token
// prompt in the same step as A's second chunk, then decodes next to A's.
TEST_P(ConformanceTest, EveryClaimedCombinationMatchesTheReference) {
  const std::vector<Combination> combos = Claimed();
  ASSERT_FALSE(combos.empty()) << GetParam() << " claims nothing";
  double worst_plain = 0.0, worst_quantized = 0.0;
  for (const Combination& c : combos) {
    SCOPED_TRACE(Describe(c));
    Rig rig(target_, c);
    ASSERT_TRUE(rig.ok());
    const int32_t vocab = rig.spec().hp.vocab_size;
    reference::ReferenceModel ref_a(rig.spec(), rig.reference_options());
    reference::ReferenceModel ref_b(rig.spec(), rig.reference_options());
    std::vector<int32_t> a = Tokens(13, 1), b = Tokens(5, 2);
    // A reaches position 14, B position 5.
    const auto table_a = rig.Blocks(0, (15 + c.block_tokens - 1) / c.block_tokens);
    const auto table_b = rig.Blocks(1, (6 + c.block_tokens - 1) / c.block_tokens);
    double worst = 0.0;
    auto check = [&](std::span<const float> got, std::span<const float> want) {
      const double e = RelativeError(got, want);
      worst = std::max(worst, e);
      EXPECT_LE(e, ToleranceFor(c.type));
    };

    // Step 1: A's first chunk, every row.
    Batch s1;
    s1.seqs.push_back(Step(1, a, 0, 7, table_a, LogitsWanted::kAll));
    auto o1 = rig.executor().Forward(s1);
    ASSERT_TRUE(o1.ok()) << o1.status();
    const std::vector<float> want1 = ref_a.Forward(std::span<const int32_t>(a).first(7), 0);
    ASSERT_EQ(o1->logits.size(), want1.size());
    for (size_t r = 0; r < 7; ++r) {
      check(std::span<const float>(o1->logits).subspan(r * vocab, vocab),
            std::span<const float>(want1).subspan(r * vocab, vocab));
    }

    // Step 2: A's second chunk (last row) with B's whole prompt (last row).
    Batch s2;
    s2.seqs.push_back(Step(1, a, 7, 6, table_a, LogitsWanted::kLast));
    s2.seqs.push_back(Step(2, b, 0, 5, table_b, LogitsWanted::kLast));
    auto o2 = rig.executor().Forward(s2);
    ASSERT_TRUE(o2.ok()) << o2.status();
    ASSERT_EQ(o2->logits.size(), 2u * vocab);
    const std::vector<float> want2a = ref_a.Forward(std::span<const int32_t>(a).subspan(7), 7);
    const std::vector<float> want2b = ref_b.Forward(b, 0);
    check(std::span<const float>(o2->logits).first(vocab),
          std::span<const float>(want2a).last(vocab));
    check(std::span<const float>(o2->logits).last(vocab),
          std::span<const float>(want2b).last(vocab));

    // Step 3: both decode; A wants the argmax only, B logits.
    const int32_t next_a = reference::ArgMax(std::span<const float>(want2a).last(vocab));
    const int32_t next_b = reference::ArgMax(std::span<const float>(want2b).last(vocab));
    a.push_back(next_a);
    b.push_back(next_b);
    Batch s3;
    s3.seqs.push_back(Step(1, a, 13, 1, table_a, LogitsWanted::kArgmax));
    s3.seqs.push_back(Step(2, b, 5, 1, table_b, LogitsWanted::kLast));
    auto o3 = rig.executor().Forward(s3);
    ASSERT_TRUE(o3.ok()) << o3.status();
    const std::vector<float> want3a = ref_a.Forward(std::span<const int32_t>(a).subspan(13), 13);
    const std::vector<float> want3b = ref_b.Forward(std::span<const int32_t>(b).subspan(5), 5);
    ASSERT_EQ(o3->argmax.size(), 1u);
    ASSERT_EQ(o3->logits.size(), static_cast<size_t>(vocab));
    // The argmax is the reference's unless its top two are closer than the
    // tolerance allows the backend to move them.
    std::vector<float> sorted = want3a;
    std::sort(sorted.begin(), sorted.end(), std::greater<float>());
    double scale = 0.0;
    for (float f : want3a) scale = std::max(scale, std::fabs(static_cast<double>(f)));
    if (sorted[0] - sorted[1] > 2 * ToleranceFor(c.type) * scale) {
      EXPECT_EQ(o3->argmax[0], reference::ArgMax(want3a));
    }
    check(o3->logits, want3b);

    // Step 4: A decodes once more, from the KV the steps above left.
    a.push_back(o3->argmax[0]);
    Batch s4;
    s4.seqs.push_back(Step(1, a, 14, 1, table_a, LogitsWanted::kLast));
    auto o4 = rig.executor().Forward(s4);
    ASSERT_TRUE(o4.ok()) << o4.status();
    check(o4->logits, ref_a.Forward(std::span<const int32_t>(a).subspan(14), 14));
    EXPECT_GT(o4->device_time.count(), 0);

    const bool quantized = ToleranceFor(c.type) == kQuantizedTolerance;
    (quantized ? worst_quantized : worst_plain) =
        std::max(quantized ? worst_quantized : worst_plain, worst);
  }
  std::printf("conformance %s: %zu combinations, worst relative error plain %.2e quantized %.2e\n",
              GetParam().c_str(), combos.size(), worst_plain, worst_quantized);
}

// Each invalid batch carries a valid sequence that would overwrite positions
// 4..7 of A with other tokens: if the backend wrote anything before
// refusing, A's next decode no longer matches the reference.
TEST_P(ConformanceTest, InvalidBatchesAreRefusedWithNothingChanged) {
  const Combination c{Architecture::kLlama, TensorType::kF32, KvType::kF32, 4};
  Rig rig(target_, c, /*max_batch_tokens=*/16);
  ASSERT_TRUE(rig.ok());
  const int32_t vocab = rig.spec().hp.vocab_size;
  reference::ReferenceModel ref(rig.spec(), rig.reference_options());
  std::vector<int32_t> a = Tokens(8, 3);
  const auto table = rig.Blocks(0, 4);
  Batch prefill;
  prefill.seqs.push_back(Step(1, a, 0, 8, table, LogitsWanted::kLast));
  ASSERT_TRUE(rig.executor().Forward(prefill).ok());
  ref.Forward(a, 0);

  const std::vector<int32_t> other = Tokens(8, 4);
  const std::vector<int32_t> bad_low = {1, -1}, bad_high = {1, vocab};
  const std::vector<int32_t> long_run = Tokens(17, 5), one = {5};
  const std::vector<uint32_t> short_table = {table[0]};
  const std::vector<uint32_t> many = rig.Blocks(1, 6);
  // Positions 4..7 live in the second block: the bad id is the one written.
  const std::vector<uint32_t> past = {many[0], 1u << 20};
  const std::vector<uint32_t> unmapped = {many[0], rig.unmapped_block()};
  const std::vector<uint32_t> whole_context = rig.Blocks(1, 17);
  const std::vector<int32_t> two = {5, 6};
  struct Bad {
    const char* what;
    SequenceStep step;
  };
  std::vector<Bad> cases = {
      {"token below 0", Step(2, bad_low, 0, 2, many, LogitsWanted::kLast)},
      {"token past the vocabulary", Step(2, bad_high, 0, 2, many, LogitsWanted::kLast)},
      {"too few blocks", Step(2, other, 0, 8, short_table, LogitsWanted::kLast)},
      {"block id past the id space", Step(2, other, 4, 4, past, LogitsWanted::kLast)},
      {"block in an unmapped slot", Step(2, other, 4, 4, unmapped, LogitsWanted::kLast)},
  };
  SequenceStep past_context = Step(2, two, 0, 2, whole_context, LogitsWanted::kLast);
  past_context.start_pos = 63;  // positions 63 and 64 of a 64-token context
  cases.push_back({"position past the context", past_context});
  SequenceStep empty = Step(2, one, 0, 0, many, LogitsWanted::kLast);
  cases.push_back({"no tokens", empty});
  for (const Bad& bad : cases) {
    SCOPED_TRACE(bad.what);
    Batch batch;
    batch.seqs.push_back(Step(1, other, 4, 4, table, LogitsWanted::kLast));  // valid on its own
    batch.seqs.push_back(bad.step);
    auto out = rig.executor().Forward(batch);
    EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument) << out.status();
  }
  {
    SCOPED_TRACE("more tokens than max_batch_tokens");
    Batch batch;
    batch.seqs.push_back(Step(1, other, 4, 4, table, LogitsWanted::kLast));
    batch.seqs.push_back(Step(2, long_run, 0, 13, many, LogitsWanted::kLast));
    EXPECT_EQ(rig.executor().Forward(batch).status().code(), absl::StatusCode::kInvalidArgument);
  }

  a.push_back(7);
  Batch decode;
  decode.seqs.push_back(Step(1, a, 8, 1, table, LogitsWanted::kLast));
  auto out = rig.executor().Forward(decode);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_LE(RelativeError(out->logits, ref.Forward(std::span<const int32_t>(a).subspan(8), 8)),
            kPlainTolerance);
}

TEST_P(ConformanceTest, PageMappingChecksItsInput) {
  const Combination c{Architecture::kLlama, TensorType::kF32, KvType::kF16, 4};
  Rig rig(target_, c);
  ASSERT_TRUE(rig.ok());
  devices::Executor& e = rig.executor();
  const uint32_t slots = e.kv_blocks() / e.kv_blocks_per_page();
  EXPECT_EQ(e.MapKvPage(0, 0).code(), absl::StatusCode::kInvalidArgument);  // slot 0 is mapped
  EXPECT_EQ(e.MapKvPage(slots, 0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(e.UnmapKvPage(slots - 1).code(), absl::StatusCode::kInvalidArgument);  // unmapped
  EXPECT_TRUE(e.UnmapKvPage(0).ok());
  EXPECT_EQ(e.UnmapKvPage(0).code(), absl::StatusCode::kInvalidArgument);
}

#ifdef TOKENMILL_OPENCL_PLUGIN
// The OpenCL plugin keeps a device's KV regions in one pool buffer that it
// grows by copying into a larger one: a second arena's region makes the pool
// grow while the first arena's pages hold a sequence's KV, which must come
// through the copy (a decode after it still matches the reference).
TEST(OpenClPlugin, KvSurvivesThePoolGrowing) {
  std::string why;
  const Target target = Backends::Get().Find("opencl", &why);
  ASSERT_NE(target.backend, nullptr) << why;
  const Combination c{Architecture::kLlama, TensorType::kF16, KvType::kF16, 4};
  Rig rig(target, c);
  ASSERT_TRUE(rig.ok());
  reference::ReferenceModel ref(rig.spec(), rig.reference_options());
  std::vector<int32_t> a = Tokens(9, 5);
  const auto table = rig.Blocks(0, 3);
  Batch prefill;
  prefill.seqs.push_back(Step(1, a, 0, 9, table, LogitsWanted::kLast));
  ASSERT_TRUE(rig.executor().Forward(prefill).ok());
  ref.Forward(a, 0);

  auto second = target.backend->CreateKvArena(*target.device,
                                              devices::KvArenaBudget{.bytes = 1 << 20}, kPageBytes);
  ASSERT_TRUE(second.ok()) << second.status();
  ASSERT_TRUE((*second)->TakePage().has_value());  // allocates a region: the pool grows

  a.push_back(11);
  Batch decode;
  decode.seqs.push_back(Step(1, a, 9, 1, table, LogitsWanted::kLast));
  auto out = rig.executor().Forward(decode);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_LE(RelativeError(out->logits, ref.Forward(std::span<const int32_t>(a).subspan(9), 9)),
            kPlainTolerance);
}
#endif

INSTANTIATE_TEST_SUITE_P(Backends, ConformanceTest,
                         ::testing::Values("cpu", "reference", "opencl", "cpu_abi", "cuda"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace tokenmill::conformance
