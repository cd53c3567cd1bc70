// The device plugin boundary's cost per decode step: the in-tree CPU backend
// (runtime/node's CPU entry of the registry) next to the same backend behind
// the C ABI (cpu_abi_plugin.cc, loaded through the daemon's plugin loader,
// devices/plugin/plugin_backend), the same model, in one run. Rounds
// interleave the two (ABBA order) at batch 1 and batch 16 so that load on a
// shared machine falls on both alike.
//
// Printed per batch size: each side's step time (mean, p50, p10..p90), the
// difference of the round means (median and range over rounds) in
// microseconds and in % of the in-tree step, and, inside each step, wall time
// minus the device time the backend reports (the CPU executor's Forward; the
// shim's whole executor_forward), whose difference between the sides is the
// boundary (the daemon's adapter, the C calls, the output buffers) without
// the noise of the step. The shim's own copy of the CPU executor's outputs
// into the daemon's buffers (a plugin writing there directly has none) is
// printed apart, read through get_proc_address. Before timing, the first
// step's logits of both sides must agree to the bit (they run the same
// code), else nothing is printed.
//
//   plugin_boundary_bench [--dim N] [--layers N] [--heads N] [--kv-heads N]
//     [--ffn N] [--vocab N] [--type q8_0|f16|...] [--rounds N] [--steps N]
// Defaults: a ~0.3B Llama shape (1024, 16 layers, 16/4 heads, ffn 4096,
// vocab 32000, Q8_0), 10 rounds of 4 steps per side and batch size.
#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "devices/backend.h"
#include "devices/plugin/plugin_backend.h"
#include "devices/plugin/tokenmill_device.h"
#include "runtime/model/synth.h"
#include "runtime/node/device_backends.h"
#include "tests/bench/bench_stats.h"

using namespace tokenmill;

namespace {

constexpr int32_t kBlockTokens = 16;
constexpr int32_t kPrompt = 16;   // positions prefilled before decoding
constexpr int32_t kWindow = 112;  // decode positions cycle through [kPrompt, kPrompt + kWindow)
constexpr uint32_t kBlocksPerSeq = (kPrompt + kWindow) / kBlockTokens;

struct Options {
  model::SynthOptions shape;
  int rounds = 10;
  int steps = 4;
};

bool ParseArgs(int argc, char** argv, Options& o) {
  o.shape.dim = 1024;
  o.shape.n_layers = 16;
  o.shape.n_heads = 16;
  o.shape.n_kv_heads = 4;
  o.shape.ffn_dim = 4096;
  o.shape.vocab_size = 32000;
  o.shape.context_length = 4096;
  o.shape.weight_type = devices::TensorType::kQ8_0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const char* v = argv[i + 1];
    if (flag == "--dim") {
      o.shape.dim = std::atoi(v);
    } else if (flag == "--layers") {
      o.shape.n_layers = std::atoi(v);
    } else if (flag == "--heads") {
      o.shape.n_heads = std::atoi(v);
    } else if (flag == "--kv-heads") {
      o.shape.n_kv_heads = std::atoi(v);
    } else if (flag == "--ffn") {
      o.shape.ffn_dim = std::atoi(v);
    } else if (flag == "--vocab") {
      o.shape.vocab_size = std::atoi(v);
    } else if (flag == "--rounds") {
      o.rounds = std::atoi(v);
    } else if (flag == "--steps") {
      o.steps = std::atoi(v);
    } else if (flag == "--type") {
      bool found = false;
      for (auto t :
           {devices::TensorType::kF32, devices::TensorType::kF16, devices::TensorType::kBF16,
            devices::TensorType::kQ8_0, devices::TensorType::kQ4_0, devices::TensorType::kQ4_K,
            devices::TensorType::kQ5_K, devices::TensorType::kQ6_K}) {
        if (std::strcmp(v, devices::TensorTypeName(t)) == 0) o.shape.weight_type = t, found = true;
      }
      if (!found) return false;
    } else {
      return false;
    }
  }
  return argc % 2 == 1 && o.rounds > 0 && o.steps > 0;
}

// One side: a backend's device, its arena and an executor of the model, with
// the sequences of each batch size prefilled.
struct Side {
  devices::KvArenaPtr arena;
  devices::ExecutorPtr executor;
  std::vector<std::vector<uint32_t>> tables;  // per sequence, for batch 16 (batch 1 uses the first)
  std::vector<int32_t> token;                 // one decode token per sequence
  int64_t step = 0;                           // decode steps run so far (sets the positions)
};

absl::Status Prepare(devices::DeviceBackend& backend, const devices::Device& device,
                     const devices::ModelSpec& spec, int32_t max_seqs, Side& side) {
  auto arena = backend.CreateKvArena(device, devices::KvArenaBudget{.bytes = uint64_t{512} << 20},
                                     devices::kDefaultKvPageBytes);
  if (!arena.ok()) return arena.status();
  side.arena = std::move(*arena);
  devices::ExecutorOptions eo;
  eo.block_tokens = kBlockTokens;
  eo.kv_blocks = static_cast<uint32_t>(max_seqs) * kBlocksPerSeq;
  eo.max_batch_tokens = max_seqs * kPrompt;
  eo.threads = 0;  // what the shim uses: one per core
  eo.kv_arena = side.arena.get();
  auto executor = backend.CreateExecutor(device, spec, eo);
  if (!executor.ok()) return executor.status();
  side.executor = std::move(*executor);
  devices::Executor& e = *side.executor;
  const uint32_t per_page = e.kv_blocks_per_page();
  for (uint32_t slot = 0; slot < e.kv_blocks() / per_page; ++slot) {
    std::optional<uint32_t> page = side.arena->TakePage();
    if (!page) return absl::ResourceExhaustedError("the KV arena has too few pages");
    if (absl::Status s = e.MapKvPage(slot, *page); !s.ok()) return s;
  }
  std::vector<int32_t> prompt(kPrompt);
  devices::Batch prefill;
  side.tables.resize(static_cast<size_t>(max_seqs));
  for (int32_t s = 0; s < max_seqs; ++s) {
    for (uint32_t b = 0; b < kBlocksPerSeq; ++b)
      side.tables[s].push_back(static_cast<uint32_t>(s) * kBlocksPerSeq + b);
    side.token.push_back(1 + (s * 37) % (spec.hp.vocab_size - 1));
  }
  for (int32_t i = 0; i < kPrompt; ++i) prompt[i] = 1 + (i * 13) % (spec.hp.vocab_size - 1);
  for (int32_t s = 0; s < max_seqs; ++s) {
    devices::SequenceStep step;
    step.seq_id = static_cast<uint64_t>(s);
    step.tokens = prompt;
    step.block_table = side.tables[s];
    step.logits = devices::LogitsWanted::kNone;
    prefill.seqs.push_back(step);
  }
  auto out = e.Forward(prefill);
  return out.ok() ? absl::OkStatus() : out.status();
}

// One decode step of the first `batch` sequences at the side's next position.
devices::Batch DecodeBatch(Side& side, int32_t batch) {
  devices::Batch b;
  const int32_t pos = kPrompt + static_cast<int32_t>(side.step % kWindow);
  for (int32_t s = 0; s < batch; ++s) {
    devices::SequenceStep step;
    step.seq_id = static_cast<uint64_t>(s);
    step.tokens = std::span<const int32_t>(&side.token[s], 1);
    step.start_pos = pos;
    step.block_table = side.tables[s];
    step.logits = devices::LogitsWanted::kLast;
    b.seqs.push_back(step);
  }
  return b;
}

struct Samples {
  std::vector<double> wall_us, inside_us;  // per step: wall; wall minus the reported device time
  std::vector<double> copy_us;             // per step: the shim's copy of the outputs (ABI side)
  std::vector<double> round_mean_us;       // mean step wall per round
};

// The shim's "cpu_abi_last_copy_ns", reached as any optional feature is:
// the library's table, get_proc_address. Null on the in-tree side.
using CopyNsFn = uint64_t (*)();

absl::Status RunSteps(Side& side, int32_t batch, int steps, CopyNsFn copy_ns, Samples& samples) {
  double sum = 0.0;
  for (int i = 0; i < steps; ++i) {
    const devices::Batch b = DecodeBatch(side, batch);
    const auto start = std::chrono::steady_clock::now();
    auto out = side.executor->Forward(b);
    const auto wall = std::chrono::steady_clock::now() - start;
    if (!out.ok()) return out.status();
    ++side.step;
    const double w = std::chrono::duration<double, std::micro>(wall).count();
    const double own = std::chrono::duration<double, std::micro>(out->device_time).count();
    samples.wall_us.push_back(w);
    samples.inside_us.push_back(w - own);
    if (copy_ns != nullptr) samples.copy_us.push_back(static_cast<double>(copy_ns()) / 1e3);
    sum += w;
  }
  samples.round_mean_us.push_back(sum / steps);
  return absl::OkStatus();
}

double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

void Report(int32_t batch, Samples& in_tree, Samples& plugin) {
  std::vector<double> diff;
  for (size_t r = 0; r < in_tree.round_mean_us.size(); ++r)
    diff.push_back(plugin.round_mean_us[r] - in_tree.round_mean_us[r]);
  const double p10_a = Percentile(in_tree.wall_us, 0.1), p90_a = Percentile(in_tree.wall_us, 0.9);
  const double p10_b = Percentile(plugin.wall_us, 0.1), p90_b = Percentile(plugin.wall_us, 0.9);
  const bench::SampleFigures a = bench::Summarize(in_tree.wall_us);
  const bench::SampleFigures b = bench::Summarize(plugin.wall_us);
  const bench::SampleFigures ia = bench::Summarize(in_tree.inside_us);
  const bench::SampleFigures ib = bench::Summarize(plugin.inside_us);
  const double d50 = Percentile(diff, 0.5);
  const double dmin = *std::min_element(diff.begin(), diff.end());
  const double dmax = *std::max_element(diff.begin(), diff.end());
  std::printf("batch %d decode, %zu steps a side\n", batch, in_tree.wall_us.size());
  std::printf("  in-tree CPU     step mean %10.1f us  p50 %10.1f  p10..p90 %10.1f..%.1f\n",
              a.mean_us, a.p50_us, p10_a, p90_a);
  std::printf("  behind the ABI  step mean %10.1f us  p50 %10.1f  p10..p90 %10.1f..%.1f\n",
              b.mean_us, b.p50_us, p10_b, p90_b);
  std::printf(
      "  A/B difference  median of %zu round means %+9.1f us (%+.3f%% of a step), "
      "range %+.1f..%+.1f us (%+.2f%%..%+.2f%%)\n",
      diff.size(), d50, 100.0 * d50 / a.p50_us, dmin, dmax, 100.0 * dmin / a.p50_us,
      100.0 * dmax / a.p50_us);
  const bench::SampleFigures copy = bench::Summarize(plugin.copy_us);
  std::printf(
      "  inside a step (wall - reported device time): in-tree p50 %.1f us p99 %.1f, "
      "ABI p50 %.1f us p99 %.1f\n",
      ia.p50_us, ia.p99_us, ib.p50_us, ib.p99_us);
  std::printf(
      "  boundary        p50 %+.1f us = %.3f%% of a step (mean %+.1f us = %.3f%%): the "
      "daemon's adapter, the C calls, the output buffers\n",
      ib.p50_us - ia.p50_us, 100.0 * (ib.p50_us - ia.p50_us) / a.p50_us, ib.mean_us - ia.mean_us,
      100.0 * (ib.mean_us - ia.mean_us) / a.mean_us);
  std::printf(
      "  shim's copy     p50 %.1f us = %.3f%% of a step (p99 %.1f us): the CPU executor's "
      "outputs into the daemon's buffers, which a plugin writing there directly has not\n",
      copy.p50_us, 100.0 * copy.p50_us / a.p50_us, copy.p99_us);
  std::printf("  together        p50 %+.1f us = %.3f%% of a step\n",
              ib.p50_us - ia.p50_us + copy.p50_us,
              100.0 * (ib.p50_us - ia.p50_us + copy.p50_us) / a.p50_us);
}

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "plugin_boundary_bench: %s\n", s.ToString().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (!ParseArgs(argc, argv, o)) {
    std::fprintf(stderr,
                 "usage: plugin_boundary_bench [--dim N] [--layers N] [--heads N] [--kv-heads N] "
                 "[--ffn N] [--vocab N] [--type q8_0|f16|...] [--rounds N] [--steps N]\n");
    return 2;
  }
  constexpr int32_t kBatches[] = {1, 16};
  constexpr int32_t kMaxSeqs = 16;

  devices::DeviceBackendPtr cpu = runtime::MakeCpuBackend();
  auto plugin = devices::LoadDevicePlugin(TOKENMILL_CPU_ABI_PLUGIN);
  if (!plugin.ok()) return Fail(plugin.status());
  CopyNsFn copy_ns = nullptr;
  if (void* lib = dlopen(TOKENMILL_CPU_ABI_PLUGIN, RTLD_NOW | RTLD_NOLOAD); lib != nullptr) {
    auto entry = reinterpret_cast<tm_device_plugin_fn>(dlsym(lib, TM_DEVICE_ENTRY_POINT));
    if (entry != nullptr && entry()->get_proc_address != nullptr) {
      copy_ns = reinterpret_cast<CopyNsFn>(entry()->get_proc_address("cpu_abi_last_copy_ns"));
    }
    dlclose(lib);  // the loader's reference keeps it mapped
  }
  if (copy_ns == nullptr)
    return Fail(absl::NotFoundError("the shim offers no cpu_abi_last_copy_ns"));
  devices::Discovery cpu_found, plugin_found;
  if (absl::Status s = cpu->Discover({}, cpu_found); !s.ok()) return Fail(s);
  if (absl::Status s = (*plugin)->Discover({}, plugin_found); !s.ok()) return Fail(s);
  if (cpu_found.devices.empty() || plugin_found.devices.empty()) {
    return Fail(absl::NotFoundError("a backend found no device"));
  }

  const auto synth_start = std::chrono::steady_clock::now();
  auto model = model::SynthesizeModel(o.shape);
  if (!model.ok()) return Fail(model.status());
  std::printf(
      "model: llama dim %d, %d layers, %d/%d heads, ffn %d, vocab %d, %s, %.0f MB "
      "(synthesized in %.1f s)\n",
      o.shape.dim, o.shape.n_layers, o.shape.n_heads, o.shape.n_kv_heads, o.shape.ffn_dim,
      o.shape.vocab_size, devices::TensorTypeName(o.shape.weight_type),
      static_cast<double>(model->spec.WeightBytes()) / 1e6,
      std::chrono::duration<double>(std::chrono::steady_clock::now() - synth_start).count());

  Side in_tree, abi;
  if (absl::Status s = Prepare(*cpu, *cpu_found.devices[0], model->spec, kMaxSeqs, in_tree);
      !s.ok()) {
    return Fail(s);
  }
  if (absl::Status s = Prepare(**plugin, *plugin_found.devices[0], model->spec, kMaxSeqs, abi);
      !s.ok()) {
    return Fail(s);
  }

  // Same code, same threads, same inputs: the logits must agree to the bit.
  {
    auto a = in_tree.executor->Forward(DecodeBatch(in_tree, kMaxSeqs));
    auto b = abi.executor->Forward(DecodeBatch(abi, kMaxSeqs));
    if (!a.ok()) return Fail(a.status());
    if (!b.ok()) return Fail(b.status());
    ++in_tree.step, ++abi.step;
    if (a->logits.size() != b->logits.size() ||
        std::memcmp(a->logits.data(), b->logits.data(), a->logits.size() * sizeof(float)) != 0) {
      return Fail(absl::InternalError("the two sides' logits differ: not the same backend"));
    }
    std::printf("check: batch %d logits of both sides identical (%zu floats)\n", kMaxSeqs,
                a->logits.size());
  }

  Samples samples[2][2];  // [batch index][0 in-tree, 1 abi]
  for (int r = 0; r < o.rounds; ++r) {
    for (size_t bi = 0; bi < 2; ++bi) {
      // ABBA: the side that goes first alternates by round.
      Side* order[2] = {&in_tree, &abi};
      if (r % 2 == 1) std::swap(order[0], order[1]);
      for (Side* side : order) {
        Samples& s = samples[bi][side == &abi ? 1 : 0];
        if (absl::Status st =
                RunSteps(*side, kBatches[bi], o.steps, side == &abi ? copy_ns : nullptr, s);
            !st.ok()) {
          return Fail(st);
        }
      }
    }
  }
  std::printf("%d rounds of %d steps a side and batch size, interleaved (ABBA)\n", o.rounds,
              o.steps);
  for (size_t bi = 0; bi < 2; ++bi) Report(kBatches[bi], samples[bi][0], samples[bi][1]);
  return 0;
}
