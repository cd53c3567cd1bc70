// Decode tokens/s of the OpenCL device plugin next to the in-tree CPU
// backend, on the same synthesized model, driven the same way (the registry
// interface the instance manager uses): `batch` sequences each prefill a
// 32-token prompt, then decode `steps` tokens each; tokens/s counts decoded
// tokens over the decode steps' wall time. On PoCL's CPU device this is a
// correctness vehicle's speed, for the record, not a GPU's.
//
//   opencl_decode_bench [dim] [layers] [batch] [steps] [f16|q8_0]
//   (defaults 256 4 4 32 q8_0)
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "devices/backend.h"
#include "devices/plugin/plugin_backend.h"
#include "runtime/model/synth.h"
#include "runtime/node/device_backends.h"

using namespace tokenmill;

namespace {

constexpr int32_t kPrompt = 32;
constexpr int32_t kBlockTokens = 16;

// Decoded tokens per second on `kind`'s first device, or a negative value.
double DecodeTokensPerSecond(devices::BackendRegistry& registry, const devices::Discovery& found,
                             const std::string& kind, const model::LoadedModel& model,
                             int32_t batch_size, int32_t steps) {
  devices::DeviceBackend* backend = registry.ForKind(kind);
  const devices::Device* device = nullptr;
  for (const devices::DevicePtr& d : found.devices) {
    if (backend != nullptr && registry.For(*d) == backend && backend->RunsModels(*d)) {
      device = d.get();
      break;
    }
  }
  if (device == nullptr) {
    std::fprintf(stderr, "no %s device\n", kind.c_str());
    return -1;
  }
  auto arena = backend->CreateKvArena(*device, devices::KvArenaBudget{.bytes = 128u << 20},
                                      devices::kDefaultKvPageBytes);
  if (!arena.ok()) {
    std::fprintf(stderr, "%s\n", arena.status().ToString().c_str());
    return -1;
  }
  const int32_t blocks_per_seq = (kPrompt + steps + kBlockTokens - 1) / kBlockTokens;
  devices::ExecutorOptions eo;
  eo.block_tokens = kBlockTokens;
  eo.kv_blocks = static_cast<uint32_t>(blocks_per_seq * batch_size);
  eo.max_batch_tokens = kPrompt * batch_size;
  eo.kv_arena = arena->get();
  auto executor = backend->CreateExecutor(*device, model.spec, eo);
  if (!executor.ok()) {
    std::fprintf(stderr, "%s\n", executor.status().ToString().c_str());
    return -1;
  }
  devices::Executor& e = **executor;
  for (uint32_t slot = 0; slot < e.kv_blocks() / e.kv_blocks_per_page(); ++slot) {
    std::optional<uint32_t> page = (*arena)->TakePage();
    if (!page || !e.MapKvPage(slot, *page).ok()) return -1;
  }
  std::vector<std::vector<uint32_t>> tables(batch_size);
  std::vector<std::vector<int32_t>> tokens(batch_size);
  for (int32_t s = 0; s < batch_size; ++s) {
    for (int32_t b = 0; b < blocks_per_seq; ++b) {
      tables[s].push_back(static_cast<uint32_t>(s * blocks_per_seq + b));
    }
    for (int32_t i = 0; i < kPrompt; ++i) tokens[s].push_back(1 + (s * 31 + i * 7) % 200);
  }
  devices::Batch prefill;
  for (int32_t s = 0; s < batch_size; ++s) {
    devices::SequenceStep step;
    step.seq_id = static_cast<uint64_t>(s);
    step.tokens = tokens[s];
    step.start_pos = 0;
    step.block_table = tables[s];
    step.logits = devices::LogitsWanted::kArgmax;
    prefill.seqs.push_back(step);
  }
  auto first = e.Forward(prefill);
  if (!first.ok()) {
    std::fprintf(stderr, "%s\n", first.status().ToString().c_str());
    return -1;
  }
  for (int32_t s = 0; s < batch_size; ++s) tokens[s].push_back(first->argmax[s]);
  const auto start = std::chrono::steady_clock::now();
  for (int32_t i = 0; i < steps; ++i) {
    devices::Batch batch;
    for (int32_t s = 0; s < batch_size; ++s) {
      devices::SequenceStep step;
      step.seq_id = static_cast<uint64_t>(s);
      step.tokens = std::span<const int32_t>(tokens[s]).last(1);
      step.start_pos = kPrompt + i;
      step.block_table = tables[s];
      step.logits = devices::LogitsWanted::kArgmax;
      batch.seqs.push_back(step);
    }
    auto out = e.Forward(batch);
    if (!out.ok()) {
      std::fprintf(stderr, "%s\n", out.status().ToString().c_str());
      return -1;
    }
    for (int32_t s = 0; s < batch_size; ++s) tokens[s].push_back(out->argmax[s]);
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return batch_size * steps / seconds;
}

}  // namespace

int main(int argc, char** argv) {
  const int32_t dim = argc > 1 ? std::atoi(argv[1]) : 256;
  const int32_t layers = argc > 2 ? std::atoi(argv[2]) : 4;
  const int32_t batch_size = argc > 3 ? std::atoi(argv[3]) : 4;
  const int32_t steps = argc > 4 ? std::atoi(argv[4]) : 32;
  const bool f16 = argc > 5 && std::strcmp(argv[5], "f16") == 0;
  if (std::getenv("POCL_CACHE_DIR") == nullptr) {
    setenv("POCL_CACHE_DIR", TOKENMILL_BINARY_DIR "/pocl-cache", 0);
  }
  devices::BackendRegistry registry;
  if (!runtime::AddBuiltinBackends(registry).ok()) return 1;
  auto plugin = devices::LoadDevicePlugin(TOKENMILL_OPENCL_PLUGIN);
  if (!plugin.ok() || !registry.Add(std::move(*plugin)).ok()) {
    std::fprintf(stderr, "cannot load the OpenCL plugin\n");
    return 1;
  }
  auto found = registry.DiscoverAll(devices::DiscoveryOptions{});
  if (!found.ok()) return 1;
  model::SynthOptions shape;
  shape.dim = dim;
  shape.n_heads = dim / 64;
  shape.n_kv_heads = dim / 128 > 0 ? dim / 128 : 1;
  shape.ffn_dim = dim * 3;
  shape.n_layers = layers;
  shape.vocab_size = 2048;
  shape.context_length = 1024;
  shape.weight_type = f16 ? devices::TensorType::kF16 : devices::TensorType::kQ8_0;
  auto model = model::SynthesizeModel(shape);
  if (!model.ok()) {
    std::fprintf(stderr, "%s\n", model.status().ToString().c_str());
    return 1;
  }
  std::printf(
      "model: dim %d, %d layers, ffn %d, vocab %d, %s; %d sequences, %d-token prompts, %d "
      "decode steps\n",
      dim, layers, shape.ffn_dim, shape.vocab_size, f16 ? "f16" : "q8_0", batch_size, kPrompt,
      steps);
  for (const char* kind : {"cpu", "opencl"}) {
    const double tps = DecodeTokensPerSecond(registry, *found, kind, *model, batch_size, steps);
    if (tps < 0) return 1;
    std::printf("%-7s decode %9.1f tokens/s\n", kind, tps);
  }
  return 0;
}
