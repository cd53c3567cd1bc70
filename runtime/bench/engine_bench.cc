#include "runtime/bench/engine_bench.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <numeric>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "devices/cpu/cpu_executor.h"
#include "devices/cpu/cpu_info.h"
#include "devices/cpu/kernels.h"
#include "devices/cpu/memory_bandwidth.h"

namespace tokenmill::bench {
namespace {

using devices::Batch;
using devices::LogitsWanted;
using devices::SequenceStep;
using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// Block tables for `n` sequences of up to `tokens` positions each, carved
// from one id space.
std::vector<std::vector<uint32_t>> BlockTables(int n, int tokens, int block_tokens) {
  int per_seq = (tokens + block_tokens - 1) / block_tokens;
  std::vector<std::vector<uint32_t>> tables(n);
  uint32_t next = 0;
  for (auto& t : tables) {
    for (int i = 0; i < per_seq; ++i) t.push_back(next++);
  }
  return tables;
}

std::string Describe(const model::LoadedModel& m) {
  const auto& hp = m.spec.hp;
  return absl::StrFormat("%s %s dim=%d layers=%d heads=%d/%d ffn=%d vocab=%d %s", m.spec.name,
                         devices::ArchitectureName(m.spec.arch), hp.dim, hp.n_layers, hp.n_heads,
                         hp.n_kv_heads, hp.ffn_dim, hp.vocab_size,
                         devices::TensorTypeName(m.spec.layers.empty() ? devices::TensorType::kF32
                                                                       : m.spec.layers[0].wq.type));
}

}  // namespace

absl::StatusOr<EngineBenchResult> RunEngineBench(const model::LoadedModel& model,
                                                 const EngineBenchOptions& options,
                                                 const BenchProgress& progress) {
  auto say = [&](const std::string& line) {
    if (progress) progress(line);
  };
  EngineBenchResult result;
  result.model = Describe(model);
  result.threads = options.threads > 0 ? options.threads : devices::UsableCpuCount();
  result.isa = devices::cpu::IsaName(devices::cpu::DetectIsa());
  result.weight_bytes_per_token = model.spec.WeightBytesPerToken();
  const auto& hp = model.spec.hp;
  int max_batch = *std::max_element(options.batches.begin(), options.batches.end());
  int seq_tokens = std::max(options.prompt_tokens, 1 + options.gen_tokens);
  const int block_tokens = 16;

  devices::ExecutorOptions exec_options;
  exec_options.block_tokens = block_tokens;
  exec_options.kv_type = options.kv_type;
  exec_options.threads = result.threads;
  exec_options.max_batch_tokens = std::max(options.prompt_tokens, max_batch);
  exec_options.kv_blocks = static_cast<uint32_t>(std::max(1, max_batch) *
                                                 ((seq_tokens + block_tokens - 1) / block_tokens));
  auto executor = devices::cpu::CpuExecutor::Create(model.spec, exec_options);
  if (!executor.ok()) return executor.status();
  devices::cpu::CpuExecutor& exec = **executor;

  std::mt19937_64 rng(options.seed);
  auto random_token = [&] { return static_cast<int32_t>(rng() % hp.vocab_size); };

  // ppN: one sequence, the whole prompt in one step (logits of the last token).
  {
    auto tables = BlockTables(1, seq_tokens, block_tokens);
    std::vector<int32_t> prompt(options.prompt_tokens);
    for (auto& t : prompt) t = random_token();
    Batch batch;
    batch.seqs.push_back({0, prompt, 0, tables[0], LogitsWanted::kLast});
    if (auto warm = exec.Forward(batch); !warm.ok()) return warm.status();
    auto start = Clock::now();
    auto out = exec.Forward(batch);
    if (!out.ok()) return out.status();
    result.prompt_tokens_per_second = options.prompt_tokens / Seconds(Clock::now() - start);
    say(absl::StrFormat("pp%d: %.1f tokens/s", options.prompt_tokens,
                        result.prompt_tokens_per_second));
  }

  devices::cpu::BandwidthSamples probes;
  auto probe = [&] {
    if (!options.measure_bandwidth) return;
    auto samples = devices::cpu::MeasureReadBandwidth(result.threads);
    probes.bytes_per_second.insert(probes.bytes_per_second.end(), samples.bytes_per_second.begin(),
                                   samples.bytes_per_second.end());
    say(absl::StrFormat("read bandwidth: median %.2f GB/s (%.2f-%.2f over %zu repetitions)",
                        samples.Median() / 1e9, samples.Min() / 1e9, samples.Max() / 1e9,
                        samples.bytes_per_second.size()));
  };
  probe();

  // tgN at each batch size: every sequence decodes one token per step. Each
  // size runs `repetitions` times over the same positions; the median counts.
  for (int b : options.batches) {
    auto tables = BlockTables(b, seq_tokens, block_tokens);
    std::vector<int32_t> tokens(b);
    Batch batch;
    for (int s = 0; s < b; ++s) {
      tokens[s] = random_token();
      batch.seqs.push_back({static_cast<uint64_t>(s), std::span<const int32_t>(&tokens[s], 1), 0,
                            tables[s], LogitsWanted::kLast});
    }
    std::vector<double> rates;
    uint64_t expert_runs = 0;
    for (int rep = 0; rep < std::max(1, options.repetitions); ++rep) {
      for (int s = 0; s < b; ++s) batch.seqs[s].start_pos = 0;
      // Position 0 is a warm-up step; the timed steps are positions 1..N.
      if (auto warm = exec.Forward(batch); !warm.ok()) return warm.status();
      const uint64_t runs_before = exec.expert_runs();
      auto start = Clock::now();
      for (int pos = 1; pos <= options.gen_tokens; ++pos) {
        for (int s = 0; s < b; ++s) {
          tokens[s] = random_token();
          batch.seqs[s].start_pos = pos;
        }
        auto out = exec.Forward(batch);
        if (!out.ok()) return out.status();
      }
      rates.push_back(static_cast<double>(b) * options.gen_tokens / Seconds(Clock::now() - start));
      expert_runs += exec.expert_runs() - runs_before;
    }
    std::sort(rates.begin(), rates.end());
    DecodeFigure figure;
    figure.batch = b;
    figure.tokens_per_second = rates[rates.size() / 2];
    figure.tokens_per_second_min = rates.front();
    figure.tokens_per_second_max = rates.back();
    figure.ms_per_step = 1000.0 * b / figure.tokens_per_second;
    figure.experts_per_step =
        static_cast<double>(expert_runs) /
        (static_cast<double>(std::max(1, options.repetitions)) * std::max(1, options.gen_tokens));
    result.decode.push_back(figure);
    say(absl::StrFormat("tg%d batch %d: %.2f tokens/s (%.2f ms/step; %.2f-%.2f over %d runs)",
                        options.gen_tokens, b, figure.tokens_per_second, figure.ms_per_step,
                        figure.tokens_per_second_min, figure.tokens_per_second_max,
                        static_cast<int>(rates.size())));
  }
  probe();

  // KV read per batch-1 token: all layers' K and V of the positions so far,
  // averaged over the decode positions 1..N.
  const auto& kv = exec.kv_layout();
  double kv_per_position =
      static_cast<double>(kv.n_layers) * 2 * kv.n_kv_heads * kv.head_dim * kv.ElementBytes();
  result.kv_bytes_per_token = kv_per_position * (1 + options.gen_tokens) / 2.0;

  if (!probes.bytes_per_second.empty()) {
    auto stream = devices::cpu::MeasureStream(result.threads);
    result.stream_copy_bytes_per_second = stream.copy_bytes_per_second;
    result.stream_triad_bytes_per_second = stream.triad_bytes_per_second;
    say(absl::StrFormat("STREAM copy %.2f GB/s, triad %.2f GB/s",
                        stream.copy_bytes_per_second / 1e9, stream.triad_bytes_per_second / 1e9));
    result.bandwidth_bytes_per_second = probes.Median();
    result.bandwidth_low_bytes_per_second = probes.Min();
    result.bandwidth_high_bytes_per_second = probes.Max();
    result.bandwidth_samples = static_cast<int>(probes.bytes_per_second.size());
    double bytes_per_token =
        static_cast<double>(result.weight_bytes_per_token) + result.kv_bytes_per_token;
    result.bound_tokens_per_second = result.bandwidth_bytes_per_second / bytes_per_token;
    for (auto& f : result.decode) {
      if (f.batch == 1) {
        result.batch1_fraction_of_bound = f.tokens_per_second / result.bound_tokens_per_second;
      }
      if (hp.n_experts > 0) {
        // A step reads the non-expert weights once, each (layer, expert) it
        // ran once, and every sequence's KV.
        const double expert_bytes = static_cast<double>(model.spec.ExpertBytes(0));
        const double dense_bytes =
            static_cast<double>(result.weight_bytes_per_token) -
            static_cast<double>(hp.n_experts_used) * hp.n_layers * expert_bytes;
        const double step_bytes =
            dense_bytes + f.experts_per_step * expert_bytes + f.batch * result.kv_bytes_per_token;
        f.bound_tokens_per_second = f.batch * result.bandwidth_bytes_per_second / step_bytes;
      }
    }
  }
  return result;
}

std::string FormatEngineBench(const EngineBenchResult& r) {
  std::string out =
      absl::StrFormat("model      %s\nthreads    %d (%s)\n", r.model, r.threads, r.isa);
  out += absl::StrFormat("weights    %.3f GB read per token\n", r.weight_bytes_per_token / 1e9);
  out += absl::StrFormat("pp         %.1f tokens/s\n", r.prompt_tokens_per_second);
  double base = 0.0;
  for (const auto& f : r.decode) {
    if (f.batch == 1) base = f.tokens_per_second;
  }
  for (const auto& f : r.decode) {
    out += absl::StrFormat("tg b=%-3d   %8.2f tokens/s  %8.2f ms/step  (%.2f-%.2f)", f.batch,
                           f.tokens_per_second, f.ms_per_step, f.tokens_per_second_min,
                           f.tokens_per_second_max);
    if (base > 0) out += absl::StrFormat("  %5.2fx batch 1", f.tokens_per_second / base);
    if (f.bound_tokens_per_second > 0) {
      out += absl::StrFormat("  experts %.1f/step, bound %.1f tokens/s (%.1f%%)",
                             f.experts_per_step, f.bound_tokens_per_second,
                             100.0 * f.tokens_per_second / f.bound_tokens_per_second);
    }
    out += "\n";
  }
  if (r.bandwidth_bytes_per_second > 0) {
    out += absl::StrFormat(
        "bandwidth  %.2f GB/s read, median of %d probes (%.2f-%.2f; %d threads)\n",
        r.bandwidth_bytes_per_second / 1e9, r.bandwidth_samples,
        r.bandwidth_low_bytes_per_second / 1e9, r.bandwidth_high_bytes_per_second / 1e9, r.threads);
    out += absl::StrFormat("STREAM     copy %.2f GB/s, triad %.2f GB/s (best of 5)\n",
                           r.stream_copy_bytes_per_second / 1e9,
                           r.stream_triad_bytes_per_second / 1e9);
    out += absl::StrFormat(
        "bound      %.2f tokens/s at batch 1 (median bandwidth / bytes per token)\n",
        r.bound_tokens_per_second);
    out += absl::StrFormat("batch 1    %.1f%% of the bound\n", r.batch1_fraction_of_bound * 100);
  }
  return out;
}

}  // namespace tokenmill::bench
