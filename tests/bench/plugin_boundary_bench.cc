// The device plugin boundary's cost per step: decode steps of a synthesized
// model on the reference plugin, timed around Executor::Forward (the C++
// adapter, the C ABI call, the output buffers) next to the device time the
// plugin reports for the same step (its forward alone). The difference is
// what the boundary adds; printed per step and as a share of the step.
//
//   plugin_boundary_bench [dim] [batch] [steps]   (defaults 256 8 200)
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "devices/plugin/plugin_backend.h"
#include "runtime/model/synth.h"
#include "tests/bench/bench_stats.h"

using namespace tokenmill;

int main(int argc, char** argv) {
  const int32_t dim = argc > 1 ? std::atoi(argv[1]) : 256;
  const int32_t batch_size = argc > 2 ? std::atoi(argv[2]) : 8;
  const int steps = argc > 3 ? std::atoi(argv[3]) : 200;
  auto backend = devices::LoadDevicePlugin(TOKENMILL_REFERENCE_PLUGIN);
  if (!backend.ok()) {
    std::fprintf(stderr, "%s\n", backend.status().ToString().c_str());
    return 1;
  }
  devices::Discovery found;
  if (!(*backend)->Discover({}, found).ok() || found.devices.empty()) return 1;
  const devices::Device& device = *found.devices[0];
  model::SynthOptions shape;
  shape.dim = dim;
  shape.n_heads = dim / 64;
  shape.n_kv_heads = dim / 128 > 0 ? dim / 128 : 1;
  shape.ffn_dim = dim * 2;
  shape.n_layers = 2;
  shape.vocab_size = 512;
  shape.context_length = 1024;
  shape.weight_type = devices::TensorType::kF16;
  auto model = model::SynthesizeModel(shape);
  if (!model.ok()) {
    std::fprintf(stderr, "%s\n", model.status().ToString().c_str());
    return 1;
  }
  auto arena = (*backend)->CreateKvArena(device, devices::KvArenaBudget{.bytes = 256u << 20},
                                         devices::kDefaultKvPageBytes);
  if (!arena.ok()) return 1;
  devices::ExecutorOptions eo;
  eo.block_tokens = 16;
  eo.kv_blocks = 512;
  eo.max_batch_tokens = 512;
  eo.kv_arena = arena->get();
  auto executor = (*backend)->CreateExecutor(device, model->spec, eo);
  if (!executor.ok()) {
    std::fprintf(stderr, "%s\n", executor.status().ToString().c_str());
    return 1;
  }
  devices::Executor& e = **executor;
  const uint32_t per_page = e.kv_blocks_per_page();
  for (uint32_t slot = 0; slot < e.kv_blocks() / per_page; ++slot) {
    if (!e.MapKvPage(slot, *(*arena)->TakePage()).ok()) return 1;
  }
  // Each sequence owns 4 blocks (64 positions); decode from position 0 on.
  std::vector<std::vector<uint32_t>> tables(batch_size);
  std::vector<std::vector<int32_t>> tokens(batch_size, std::vector<int32_t>{7});
  for (int32_t s = 0; s < batch_size; ++s) {
    for (uint32_t b = 0; b < 4; ++b) tables[s].push_back(static_cast<uint32_t>(s) * 4 + b);
  }
  std::vector<double> wall_us, device_us, overhead_us;
  for (int i = 0; i < steps; ++i) {
    devices::Batch batch;
    for (int32_t s = 0; s < batch_size; ++s) {
      devices::SequenceStep step;
      step.seq_id = static_cast<uint64_t>(s);
      step.tokens = tokens[s];
      step.start_pos = i % 64;
      step.block_table = tables[s];
      step.logits = devices::LogitsWanted::kLast;
      batch.seqs.push_back(step);
    }
    const auto start = std::chrono::steady_clock::now();
    auto out = e.Forward(batch);
    const auto wall = std::chrono::steady_clock::now() - start;
    if (!out.ok()) {
      std::fprintf(stderr, "%s\n", out.status().ToString().c_str());
      return 1;
    }
    const double w = std::chrono::duration<double, std::micro>(wall).count();
    const double d = std::chrono::duration<double, std::micro>(out->device_time).count();
    wall_us.push_back(w);
    device_us.push_back(d);
    overhead_us.push_back(w - d);
  }
  const bench::SampleFigures wall = bench::Summarize(wall_us);
  const bench::SampleFigures dev = bench::Summarize(device_us);
  const bench::SampleFigures over = bench::Summarize(overhead_us);
  std::printf("reference plugin, dim %d, batch %d decode, %d steps\n", dim, batch_size, steps);
  std::printf("step wall      mean %9.1f us  p50 %9.1f us\n", wall.mean_us, wall.p50_us);
  std::printf("device time    mean %9.1f us  p50 %9.1f us\n", dev.mean_us, dev.p50_us);
  std::printf("boundary       mean %9.2f us  p50 %9.2f us  p99 %9.2f us  (%.3f%% of the step)\n",
              over.mean_us, over.p50_us, over.p99_us, 100.0 * over.mean_us / wall.mean_us);
  return 0;
}
