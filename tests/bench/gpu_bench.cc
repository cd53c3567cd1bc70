// tokenmill_gpu_bench: decode and prefill speed of the CUDA Engine on
// synthetic 1B- and 8B-shaped Llama models (weights filled on the device).
// Prints batch-1 decode tokens/s and memory-bandwidth utilisation (bytes read
// per step / time per step / peak), aggregate decode tokens/s at larger
// batches and their ratio to batch 1, and one 512-token prefill; then a
// compact table (and CSV if asked). A benchmark prints figures: it never
// fails on time. Exits 77 without a GPU, 1 when the engine fails.
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <cuda_profiler_api.h>
#include <cuda_runtime_api.h>

#include "devices/cuda/core/engine.h"
#include "tests/gpu/test_util.h"

namespace tokenmill::gpu_test {
namespace {

using devices::ModelHyperparams;
using devices::cuda::core::Engine;
using devices::cuda::core::EngineOptions;
using devices::cuda::core::LogitsMode;
using devices::cuda::core::StepResult;
using devices::cuda::core::StepSequence;
using devices::cuda::core::WeightTypeName;
using Clock = std::chrono::steady_clock;

constexpr int32_t kBlockTokens = 16;
constexpr int32_t kPrefillTokens = 512;  // the timed prefill, and the prefill chunk
constexpr int kWarmupSteps = 3;          // untimed decode steps (graph capture)
constexpr int kPrefillRuns = 3;          // timed 512-token prefills (after one untimed)

struct BenchOptions {
  std::vector<std::string> shapes = {"1b", "8b"};
  WeightType type = WeightType::kBF16;
  std::vector<int> batches = {1, 8, 32, 128};
  int context = 256;       // positions of every sequence before the timed decode
  int steps = 64;          // timed decode steps per batch size
  double peak_gbps = 0.0;  // 0: from the device (memory clock x bus width)
  std::string peak_source = "--peak-gbps";
  std::string csv;
  // Brackets the last timed decode step of each batch size with
  // cudaProfilerStart/Stop, so `ncu --profile-from-start off` sees one step.
  bool profile_step = false;
};

// One line of the summary.
struct Figure {
  std::string shape, type, run;  // run: "decode" or "prefill"
  int batch = 0;                 // sequences (decode) or tokens (prefill)
  double ms_per_step = 0.0;
  double tokens_per_s = 0.0;
  double bytes_per_step = 0.0;  // decode only
  double gbps = 0.0;
  double utilisation = 0.0;
  double ratio = 0.0;  // tokens/s over batch 1's (decode, batch > 1)
  // Timed decode steps that replayed a CUDA graph, and that ran eagerly: a
  // capture that failed must not pass for slow kernels.
  uint64_t graph_steps = 0;
  uint64_t eager_steps = 0;
};

// Peak memory bandwidth of a GPU in GB/s from its attributes: double data
// rate x memory clock x bus width (cudaDeviceProp::memoryClockRate is gone
// in CUDA 13; the attributes remain). 0 when the device does not say.
double DevicePeakGbps(int device) {
  int clock_khz = 0, bus_bits = 0;
  if (cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, device) != cudaSuccess) {
    return 0.0;
  }
  return 2.0 * clock_khz * 1e3 * (bus_bits / 8.0) / 1e9;
}

ModelHyperparams ShapeOf(const std::string& name) {
  ModelHyperparams hp;
  const bool big = name == "8b";
  hp.dim = big ? 4096 : 2048;
  hp.n_layers = big ? 32 : 16;
  hp.n_heads = 32;
  hp.n_kv_heads = 8;
  hp.head_dim = hp.dim / hp.n_heads;
  hp.ffn_dim = big ? 14336 : 8192;
  hp.vocab_size = 128256;
  hp.context_length = 131072;
  hp.rms_norm_eps = 1e-5f;
  hp.rope_theta = 500000.0f;
  return hp;
}

void Usage() {
  std::printf(
      "usage: tokenmill_gpu_bench [--shape 1b|8b|both] [--type bf16|f16|q8_0]\n"
      "         [--batches 1,8,32,128] [--context 256] [--steps 64] [--peak-gbps GBPS]\n"
      "  --peak-gbps: the bandwidth utilisation is measured against (default: the\n"
      "  device's memory clock x bus width)\n"
      "         [--csv PATH] [--profile-step]\n"
      "  --profile-step: profile (cudaProfilerStart/Stop) only the last timed decode\n"
      "  step of each batch size, for ncu --profile-from-start off\n");
}

bool ParseInt(const std::string& text, int* out) {
  char* end = nullptr;
  const long v = std::strtol(text.c_str(), &end, 10);
  if (end == text.c_str() || *end != '\0' || v <= 0 || v > 1000000) return false;
  *out = static_cast<int>(v);
  return true;
}

// Returns false (after saying why) on a bad command line.
bool ParseOptions(int argc, char** argv, BenchOptions* o) {
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i], value;
    if (arg == "--help" || arg == "-h") {
      Usage();
      std::exit(0);
    }
    if (arg == "--profile-step") {
      o->profile_step = true;
      continue;
    }
    if (const size_t eq = arg.find('='); eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      std::fprintf(stderr, "%s needs a value\n", arg.c_str());
      return false;
    }
    bool ok = true;
    if (arg == "--shape") {
      if (value == "both") {
        o->shapes = {"1b", "8b"};
      } else if (value == "1b" || value == "8b") {
        o->shapes = {value};
      } else {
        ok = false;
      }
    } else if (arg == "--type") {
      if (value == "bf16") {
        o->type = WeightType::kBF16;
      } else if (value == "f16") {
        o->type = WeightType::kF16;
      } else if (value == "q8_0") {
        o->type = WeightType::kQ8_0;
      } else {
        ok = false;
      }
    } else if (arg == "--batches") {
      o->batches.clear();
      size_t start = 0;
      while (ok && start <= value.size()) {
        const size_t comma = std::min(value.find(',', start), value.size());
        int b = 0;
        ok = ParseInt(value.substr(start, comma - start), &b);
        o->batches.push_back(b);
        start = comma + 1;
      }
    } else if (arg == "--context") {
      ok = ParseInt(value, &o->context);
    } else if (arg == "--steps") {
      ok = ParseInt(value, &o->steps);
    } else if (arg == "--peak-gbps") {
      o->peak_gbps = std::strtod(value.c_str(), nullptr);
      ok = o->peak_gbps > 0.0;
    } else if (arg == "--csv") {
      o->csv = value;
    } else {
      std::fprintf(stderr, "unknown option %s\n", arg.c_str());
      Usage();
      return false;
    }
    if (!ok) {
      std::fprintf(stderr, "bad value for %s: '%s'\n", arg.c_str(), value.c_str());
      return false;
    }
  }
  std::sort(o->batches.begin(), o->batches.end());
  o->batches.erase(std::unique(o->batches.begin(), o->batches.end()), o->batches.end());
  return true;
}

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

bool Report(const GpuStatus& s, const std::string& what) {
  if (s.ok()) return true;
  std::printf("error: %s: %s: %s\n", what.c_str(), devices::cuda::core::GpuCodeName(s.code),
              s.message.c_str());
  std::fflush(stdout);
  return false;
}

// Runs one shape: create, prefill every sequence to `context`, time decode
// at each batch size and one 512-token prefill. False when the engine fails.
bool RunShape(const std::string& shape, const BenchOptions& o, std::vector<Figure>* figures) {
  const ModelHyperparams hp = ShapeOf(shape);
  const int max_batch = o.batches.back();
  const int32_t seq_blocks = (o.context + kWarmupSteps + o.steps + kBlockTokens - 1) / kBlockTokens;
  const int32_t prefill_blocks = kPrefillTokens / kBlockTokens;
  EngineOptions options;
  options.block_tokens = kBlockTokens;
  options.kv_blocks = static_cast<uint32_t>(max_batch * seq_blocks + prefill_blocks);
  options.max_batch_tokens = std::max(max_batch, kPrefillTokens);
  options.cuda_graphs = true;
  const std::string name = shape + " " + WeightTypeName(o.type);

  Clock::time_point start = Clock::now();
  std::unique_ptr<Engine> engine;
  if (!Report(Engine::CreateSynthetic(hp, o.type, 1, options, &engine), name + ": create")) {
    return false;
  }
  const auto stats = engine->Stats();
  std::printf(
      "%s: created in %.1f s: weights %.2f GB, KV %.2f GB (%u blocks), scratch %.2f GB, "
      "pinned host %.3f GB\n",
      name.c_str(), Seconds(start), stats.weight_bytes / 1e9, stats.kv_bytes / 1e9,
      options.kv_blocks, stats.scratch_bytes / 1e9, stats.pinned_bytes / 1e9);

  // Block ids: sequence i owns [i x seq_blocks, (i + 1) x seq_blocks); the
  // timed prefill the last prefill_blocks.
  std::vector<uint32_t> blocks(options.kv_blocks);
  for (uint32_t b = 0; b < options.kv_blocks; ++b) blocks[b] = b;
  auto table_of = [&](int seq) { return blocks.data() + static_cast<size_t>(seq) * seq_blocks; };
  Random random(7);
  auto random_tokens = [&](size_t n) {
    std::vector<int32_t> t(n);
    for (int32_t& id : t) id = static_cast<int32_t>(random.Below(hp.vocab_size));
    return t;
  };

  // Prefill: every sequence to `context` positions in steps of at most
  // kPrefillTokens tokens: several sequences per step, or a long one in
  // chunks over several steps (never two chunks of one sequence in a step).
  start = Clock::now();
  const std::vector<int32_t> prompt = random_tokens(static_cast<size_t>(o.context));
  StepResult result;
  std::vector<StepSequence> step;
  int32_t step_tokens = 0;
  auto flush = [&]() {
    const bool ok =
        step.empty() ||
        Report(engine->Step(step.data(), step.size(), false, false, &result), name + ": prefill");
    step.clear();
    step_tokens = 0;
    return ok;
  };
  for (int seq = 0; seq < max_batch; ++seq) {
    for (int32_t pos = 0; pos < o.context;) {
      if (step_tokens == kPrefillTokens && !flush()) return false;
      StepSequence q;
      q.n_tokens = std::min(o.context - pos, kPrefillTokens - step_tokens);
      q.tokens = prompt.data() + pos;
      q.start_pos = pos;
      q.block_table = table_of(seq);
      q.n_blocks = (pos + q.n_tokens + kBlockTokens - 1) / kBlockTokens;
      q.logits = LogitsMode::kNone;
      step.push_back(q);
      step_tokens += q.n_tokens;
      pos += q.n_tokens;
    }
  }
  if (!flush()) return false;
  std::printf("%s: prefilled %d sequences x %d positions in %.1f s\n", name.c_str(), max_batch,
              o.context, Seconds(start));

  // Decode at each batch size, every sequence from position `context`.
  const devices::KvLayout& kv = engine->kv_layout();
  const double kv_bytes_per_position = static_cast<double>(kv.n_layers) * 2 * kv.n_kv_heads *
                                       kv.head_dim * static_cast<double>(kv.ElementBytes());
  const double weight_bytes = static_cast<double>(engine->WeightBytesPerToken());
  double batch1_tokens_per_s = 0.0;
  for (int batch : o.batches) {
    std::vector<int32_t> next = random_tokens(static_cast<size_t>(batch));
    std::vector<StepSequence> step(static_cast<size_t>(batch));
    double kv_bytes = 0.0;
    Clock::time_point timed;
    devices::cuda::core::EngineStats before;
    for (int s = 0; s < kWarmupSteps + o.steps; ++s) {
      if (s == kWarmupSteps) {
        before = engine->Stats();
        timed = Clock::now();
      }
      const int32_t pos = o.context + s;
      for (int i = 0; i < batch; ++i) {
        StepSequence& q = step[static_cast<size_t>(i)];
        q.tokens = &next[static_cast<size_t>(i)];
        q.n_tokens = 1;
        q.start_pos = pos;
        q.block_table = table_of(i);
        q.n_blocks = (pos + 1 + kBlockTokens - 1) / kBlockTokens;
        q.logits = LogitsMode::kLast;
      }
      const bool profiled = o.profile_step && s == kWarmupSteps + o.steps - 1;
      if (profiled) cudaProfilerStart();
      const bool stepped = Report(engine->Step(step.data(), step.size(), false, true, &result),
                                  name + ": decode at batch " + std::to_string(batch));
      if (profiled) cudaProfilerStop();
      if (!stepped) return false;
      if (result.argmax.size() != static_cast<size_t>(batch)) {
        std::printf("error: %s: %zu argmax values for a batch of %d\n", name.c_str(),
                    result.argmax.size(), batch);
        return false;
      }
      next = result.argmax;  // greedy on the device
      if (s >= kWarmupSteps) kv_bytes += batch * (pos + 1) * kv_bytes_per_position;
    }
    const double seconds = Seconds(timed);
    const devices::cuda::core::EngineStats after = engine->Stats();
    Figure f;
    f.shape = shape;
    f.type = WeightTypeName(o.type);
    f.run = "decode";
    f.batch = batch;
    f.graph_steps = after.graph_steps - before.graph_steps;
    f.eager_steps = after.eager_steps - before.eager_steps;
    f.ms_per_step = seconds * 1e3 / o.steps;
    f.tokens_per_s = static_cast<double>(batch) * o.steps / seconds;
    f.bytes_per_step = weight_bytes + kv_bytes / o.steps;
    f.gbps = f.bytes_per_step / (f.ms_per_step * 1e-3) / 1e9;
    f.utilisation = f.gbps / o.peak_gbps;
    if (batch == 1) batch1_tokens_per_s = f.tokens_per_s;
    if (batch > 1 && batch1_tokens_per_s > 0.0) f.ratio = f.tokens_per_s / batch1_tokens_per_s;
    std::printf(
        "%s: decode batch %d: %.3f ms/step, %.1f tokens/s, %.0f GB/s (%.1f%% of peak); "
        "graphs %u, graph_steps %llu, eager_steps %llu\n",
        name.c_str(), batch, f.ms_per_step, f.tokens_per_s, f.gbps, 100 * f.utilisation,
        after.graphs, static_cast<unsigned long long>(f.graph_steps),
        static_cast<unsigned long long>(f.eager_steps));
    if (f.eager_steps > 0) {
      std::printf(
          "WARNING: %s: %llu of %d timed decode steps at batch %d ran without a CUDA "
          "graph (capture failed?): these figures are not the graph path's\n",
          name.c_str(), static_cast<unsigned long long>(f.eager_steps), o.steps, batch);
    }
    std::fflush(stdout);
    figures->push_back(f);
  }

  // One 512-token prefill from position 0 in blocks of its own.
  const std::vector<int32_t> long_prompt = random_tokens(kPrefillTokens);
  StepSequence q;
  q.tokens = long_prompt.data();
  q.n_tokens = kPrefillTokens;
  q.start_pos = 0;
  q.block_table = table_of(max_batch);
  q.n_blocks = prefill_blocks;
  q.logits = LogitsMode::kLast;
  double seconds = 0.0;
  for (int run = 0; run <= kPrefillRuns; ++run) {
    start = Clock::now();
    if (!Report(engine->Step(&q, 1, false, true, &result), name + ": 512-token prefill")) {
      return false;
    }
    if (run > 0) seconds += Seconds(start);  // run 0 warms up
  }
  Figure f;
  f.shape = shape;
  f.type = WeightTypeName(o.type);
  f.run = "prefill";
  f.batch = kPrefillTokens;
  f.ms_per_step = seconds * 1e3 / kPrefillRuns;
  f.tokens_per_s = kPrefillTokens / (f.ms_per_step * 1e-3);
  std::printf("%s: prefill %d tokens: %.2f ms, %.0f tokens/s\n", name.c_str(), kPrefillTokens,
              f.ms_per_step, f.tokens_per_s);
  figures->push_back(f);
  return true;
}

const Figure* Find(const std::vector<Figure>& figures, const std::string& shape, int batch) {
  for (const Figure& f : figures) {
    if (f.shape == shape && f.run == "decode" && f.batch == batch) return &f;
  }
  return nullptr;
}

void PrintSummary(const std::vector<Figure>& figures, const BenchOptions& o,
                  const std::string& gpu) {
  std::printf(
      "\n== tokenmill_gpu_bench summary (%s; peak %.0f GB/s from %s; context %d, %d steps) ==\n",
      gpu.c_str(), o.peak_gbps, o.peak_source.c_str(), o.context, o.steps);
  std::printf("%-5s %-5s %-8s %6s %9s %10s %8s %8s %7s %7s %7s\n", "shape", "type", "run", "batch",
              "ms/step", "tokens/s", "GB/step", "GB/s", "util", "x b1", "graph");
  for (const Figure& f : figures) {
    const bool decode = f.run == "decode";
    char bytes[16] = "-", gbps[16] = "-", util[16] = "-", ratio[16] = "-", graph[24] = "-";
    if (decode) {
      std::snprintf(graph, sizeof(graph), "%llu/%llu",
                    static_cast<unsigned long long>(f.graph_steps),
                    static_cast<unsigned long long>(f.graph_steps + f.eager_steps));
      std::snprintf(bytes, sizeof(bytes), "%.3f", f.bytes_per_step / 1e9);
      std::snprintf(gbps, sizeof(gbps), "%.0f", f.gbps);
      std::snprintf(util, sizeof(util), "%.1f%%", 100 * f.utilisation);
      if (f.ratio > 0.0) std::snprintf(ratio, sizeof(ratio), "%.1fx", f.ratio);
    }
    std::printf("%-5s %-5s %-8s %6d %9.3f %10.1f %8s %8s %7s %7s %7s\n", f.shape.c_str(),
                f.type.c_str(), f.run.c_str(), f.batch, f.ms_per_step, f.tokens_per_s, bytes, gbps,
                util, ratio, graph);
  }
  // The goals: batch-1 utilisation >= 80% (8B) / 65% (1B), batch-32
  // aggregate >= 20x batch 1.
  for (const std::string& shape : o.shapes) {
    const Figure* one = Find(figures, shape, 1);
    const Figure* b32 = Find(figures, shape, 32);
    const double goal = shape == "8b" ? 0.80 : 0.65;
    std::string line = "goals " + shape + ":";
    char text[160];
    if (one != nullptr) {
      std::snprintf(text, sizeof(text), " batch-1 utilisation %.1f%% (goal >= %.0f%%) %s;",
                    100 * one->utilisation, 100 * goal,
                    one->utilisation >= goal ? "met" : "MISSED");
      line += text;
    } else {
      line += " batch 1 not run;";
    }
    if (b32 != nullptr && b32->ratio > 0.0) {
      std::snprintf(text, sizeof(text), " batch-32 %.1fx batch 1 (goal >= 20x) %s", b32->ratio,
                    b32->ratio >= 20.0 ? "met" : "MISSED");
      line += text;
    } else {
      line += " batch-32 ratio not measured";
    }
    std::printf("%s\n", line.c_str());
  }
}

bool WriteCsv(const std::vector<Figure>& figures, const BenchOptions& o) {
  FILE* file = std::fopen(o.csv.c_str(), "w");
  if (file == nullptr) {
    std::printf("error: cannot write %s: %s\n", o.csv.c_str(), std::strerror(errno));
    return false;
  }
  std::fprintf(file,
               "shape,type,run,batch,context,steps,ms_per_step,tokens_per_s,bytes_per_step,"
               "gb_per_s,utilisation,ratio_vs_batch1,peak_gb_per_s,graph_steps,eager_steps\n");
  for (const Figure& f : figures) {
    std::fprintf(file, "%s,%s,%s,%d,%d,%d,%.4f,%.2f,%.0f,%.1f,%.4f,%.2f,%.1f,%llu,%llu\n",
                 f.shape.c_str(), f.type.c_str(), f.run.c_str(), f.batch, o.context, o.steps,
                 f.ms_per_step, f.tokens_per_s, f.bytes_per_step, f.gbps, f.utilisation, f.ratio,
                 o.peak_gbps, static_cast<unsigned long long>(f.graph_steps),
                 static_cast<unsigned long long>(f.eager_steps));
  }
  return std::fclose(file) == 0;
}

int BenchMain(int argc, char** argv) {
  BenchOptions o;
  if (!ParseOptions(argc, argv, &o)) return 2;
  const GpuProbe gpu = ProbeGpu(0);
  if (!gpu.ok) {
    std::printf("SKIPPED: no CUDA GPU (%s)\n", gpu.error.c_str());
    return 77;
  }
  std::printf("ran on GPU 0: %s\n", gpu.description.c_str());
  if (o.peak_gbps <= 0.0) {
    o.peak_gbps = DevicePeakGbps(0);
    o.peak_source = "the device's memory clock x bus width";
    if (o.peak_gbps <= 0.0) {
      std::printf(
          "error: the device does not report its memory clock and bus width; "
          "give --peak-gbps\n");
      return 2;
    }
  }
  std::printf("peak memory bandwidth: %.0f GB/s (from %s)\n", o.peak_gbps, o.peak_source.c_str());
  std::fflush(stdout);
  std::vector<Figure> figures;
  bool ok = true;
  for (const std::string& shape : o.shapes) ok = RunShape(shape, o, &figures) && ok;
  PrintSummary(figures, o, gpu.description);
  if (!o.csv.empty()) ok = WriteCsv(figures, o) && ok;
  return ok ? 0 : 1;
}

}  // namespace
}  // namespace tokenmill::gpu_test

int main(int argc, char** argv) { return tokenmill::gpu_test::BenchMain(argc, argv); }
