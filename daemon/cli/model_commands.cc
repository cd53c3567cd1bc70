#include "daemon/cli/model_commands.h"

#include <chrono>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "runtime/bench/engine_bench.h"
#include "runtime/model/model_loader.h"
#include "runtime/model/synth.h"

namespace tokenmill::cli {
namespace {

// Named shapes: the test model, and the shapes the engine issue measures.
model::SynthOptions ShapePreset(const std::string& shape) {
  model::SynthOptions o;
  if (shape == "1b") {
    o.dim = 2048, o.n_layers = 16, o.n_heads = 32, o.n_kv_heads = 8, o.ffn_dim = 8192,
    o.vocab_size = 128256, o.context_length = 131072;
  } else if (shape == "8b") {
    o.dim = 4096, o.n_layers = 32, o.n_heads = 32, o.n_kv_heads = 8, o.ffn_dim = 14336,
    o.vocab_size = 128256, o.context_length = 131072;
  } else if (shape == "small") {
    o.dim = 512, o.n_layers = 4, o.n_heads = 8, o.n_kv_heads = 4, o.ffn_dim = 1536,
    o.vocab_size = 4096, o.context_length = 4096;
  }
  return o;  // "tiny": the SynthOptions defaults
}

}  // namespace

int LocalCommands::RunSynth() const {
  const SynthFlags& f = synth_;
  model::SynthOptions o = ShapePreset(f.shape);
  static const std::map<std::string, devices::TensorType> kTypes = {
      {"f32", devices::TensorType::kF32},     {"f16", devices::TensorType::kF16},
      {"bf16", devices::TensorType::kBF16},   {"q8_0", devices::TensorType::kQ8_0},
      {"q4_0", devices::TensorType::kQ4_0},   {"q4_k", devices::TensorType::kQ4_K},
      {"q5_k", devices::TensorType::kQ5_K},   {"q6_k", devices::TensorType::kQ6_K},
      {"q4_k_m", devices::TensorType::kQ4_K}, {"q5_k_m", devices::TensorType::kQ5_K}};
  o.weight_type = kTypes.at(f.type);
  o.k_mix = f.type == "q4_k_m" || f.type == "q5_k_m";
  o.arch = f.arch == "qwen3moe" ? devices::Architecture::kQwen3Moe
           : f.arch == "gemma3" ? devices::Architecture::kGemma3
           : f.arch == "qwen3"  ? devices::Architecture::kQwen3
           : f.arch == "qwen2"  ? devices::Architecture::kQwen2
                                : devices::Architecture::kLlama;
  if (f.dim) o.dim = f.dim;
  if (f.layers) o.n_layers = f.layers;
  if (f.heads) o.n_heads = f.heads;
  if (f.kv_heads) o.n_kv_heads = f.kv_heads;
  if (f.head_dim) o.head_dim = f.head_dim;
  if (f.ffn) o.ffn_dim = f.ffn;
  if (f.vocab) o.vocab_size = f.vocab;
  if (f.context) o.context_length = f.context;
  o.tied_embeddings = f.tied;
  if (f.sliding_window) o.sliding_window = f.sliding_window;
  if (f.sliding_window_pattern) o.sliding_window_pattern = f.sliding_window_pattern;
  o.n_experts = f.experts;
  o.n_experts_used = f.experts_used;
  o.llama3_rope_scaling = f.llama3_rope;
  o.rope_linear_factor = f.rope_linear;
  o.seed = f.seed;
  if (!f.name.empty()) o.name = f.name;
  auto start = std::chrono::steady_clock::now();
  if (auto status = model::WriteSynthGguf(o, f.out); !status.ok()) {
    std::fprintf(stderr, "tokenmill: model synth: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("wrote %s (%s, dim %d, %d layers, %d/%d heads, ffn %d, vocab %d, %s) in %.1f s\n",
              f.out.c_str(), f.arch.c_str(), o.dim, o.n_layers, o.n_heads, o.n_kv_heads, o.ffn_dim,
              o.vocab_size, f.type.c_str(), seconds);
  return 0;
}

int LocalCommands::RunBench() const {
  const BenchFlags& f = bench_;
  auto loaded = model::LoadModel(f.model);
  if (!loaded.ok()) {
    std::fprintf(stderr, "tokenmill: bench: %s\n", std::string(loaded.status().message()).c_str());
    return 1;
  }
  bench::EngineBenchOptions options;
  options.threads = f.threads;
  options.prompt_tokens = f.prompt;
  options.gen_tokens = f.gen;
  options.batches = f.batches;
  options.kv_type = f.kv == "f32" ? devices::KvType::kF32 : devices::KvType::kF16;
  options.repetitions = f.repetitions;
  auto result = bench::RunEngineBench(*loaded, options, [&](const std::string& line) {
    if (!f.json) std::fprintf(stderr, "  %s\n", line.c_str());
  });
  if (!result.ok()) {
    std::fprintf(stderr, "tokenmill: bench: %s\n", std::string(result.status().message()).c_str());
    return 1;
  }
  if (f.json) {
    nlohmann::json j = {
        {"model", result->model},
        {"threads", result->threads},
        {"isa", result->isa},
        {"weight_bytes_per_token", result->weight_bytes_per_token},
        {"prompt_tokens_per_second", result->prompt_tokens_per_second},
        {"bandwidth_bytes_per_second", result->bandwidth_bytes_per_second},
        {"bandwidth_low_bytes_per_second", result->bandwidth_low_bytes_per_second},
        {"bandwidth_high_bytes_per_second", result->bandwidth_high_bytes_per_second},
        {"bandwidth_samples", result->bandwidth_samples},
        {"stream_copy_bytes_per_second", result->stream_copy_bytes_per_second},
        {"stream_triad_bytes_per_second", result->stream_triad_bytes_per_second},
        {"bound_tokens_per_second", result->bound_tokens_per_second},
        {"batch1_fraction_of_bound", result->batch1_fraction_of_bound}};
    for (const auto& d : result->decode) {
      j["decode"].push_back({{"batch", d.batch},
                             {"tokens_per_second", d.tokens_per_second},
                             {"tokens_per_second_min", d.tokens_per_second_min},
                             {"tokens_per_second_max", d.tokens_per_second_max},
                             {"ms_per_step", d.ms_per_step},
                             {"experts_per_step", d.experts_per_step},
                             {"bound_tokens_per_second", d.bound_tokens_per_second}});
    }
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::fputs(bench::FormatEngineBench(*result).c_str(), stdout);
  }
  return 0;
}

LocalCommands::LocalCommands(CLI::App& app) {
  auto* model_cmd = app.add_subcommand("model", "model files");
  model_cmd->require_subcommand(1);
  synth_cmd_ = model_cmd->add_subcommand(
      "synth", "write a GGUF model with deterministic random weights and a real BPE vocabulary");
  SynthFlags& s = synth_;
  synth_cmd_->add_option("-o,--out", s.out, "output .gguf path")->required();
  synth_cmd_->add_option("--shape", s.shape, "tiny | small | 1b | 8b (then overridden by flags)")
      ->check(CLI::IsMember({"tiny", "small", "1b", "8b"}))
      ->capture_default_str();
  synth_cmd_
      ->add_option("--type", s.type,
                   "weight type (q4_k_m / q5_k_m: attn_v, ffn_down, output in q6_k)")
      ->check(CLI::IsMember(
          {"f32", "f16", "bf16", "q8_0", "q4_0", "q4_k", "q5_k", "q6_k", "q4_k_m", "q5_k_m"}))
      ->capture_default_str();
  synth_cmd_
      ->add_option("--arch", s.arch,
                   "llama | qwen2 | qwen3 | gemma3 | qwen3moe (llama with --experts: Mixtral)")
      ->check(CLI::IsMember({"llama", "qwen2", "qwen3", "gemma3", "qwen3moe"}))
      ->capture_default_str();
  synth_cmd_->add_option("--dim", s.dim, "hidden size");
  synth_cmd_->add_option("--layers", s.layers, "layers");
  synth_cmd_->add_option("--heads", s.heads, "attention heads");
  synth_cmd_->add_option("--kv-heads", s.kv_heads, "key/value heads");
  synth_cmd_->add_option("--head-dim", s.head_dim, "head size (default: dim / heads)");
  synth_cmd_->add_option("--ffn", s.ffn, "feed-forward size");
  synth_cmd_->add_option("--vocab", s.vocab, "vocabulary size");
  synth_cmd_->add_option("--context", s.context, "context length");
  synth_cmd_->add_flag("--tied", s.tied, "tie the output matrix to the embedding");
  synth_cmd_->add_option("--sliding-window", s.sliding_window,
                         "gemma3: local layers' attention window; llama: every layer's, as "
                         "Mistral (default: none)");
  synth_cmd_->add_option("--sliding-window-pattern", s.sliding_window_pattern,
                         "gemma3: layer period, its last layer global (default 6)");
  synth_cmd_->add_option("--experts", s.experts,
                         "llama (Mixtral), qwen3moe: experts per layer; --ffn is each one's size");
  synth_cmd_->add_option("--experts-used", s.experts_used, "experts each token uses (top-k)");
  synth_cmd_->add_flag("--llama3-rope", s.llama3_rope, "Llama 3 RoPE frequency scaling");
  synth_cmd_
      ->add_option("--rope-linear", s.rope_linear,
                   "linear RoPE scaling factor of global layers, as Gemma 3 4B+ (8)")
      ->capture_default_str();
  synth_cmd_->add_option("--seed", s.seed, "PRNG seed")->capture_default_str();
  synth_cmd_->add_option("--name", s.name, "general.name");

  bench_cmd_ = app.add_subcommand("bench", "measure prompt and decode speed of a model on the CPU");
  BenchFlags& b = bench_;
  bench_cmd_->add_option("model", b.model, "a .gguf file or a safetensors directory")->required();
  bench_cmd_->add_option("-t,--threads", b.threads, "threads (0 = one per CPU it may run on)")
      ->capture_default_str();
  bench_cmd_->add_option("-p,--prompt", b.prompt, "prompt tokens (ppN)")->capture_default_str();
  bench_cmd_->add_option("-n,--gen", b.gen, "decoded tokens per batch size (tgN)")
      ->capture_default_str();
  bench_cmd_->add_option("-b,--batches", b.batches, "decode batch sizes")->delimiter(',');
  bench_cmd_->add_option("--kv", b.kv, "KV cache type")
      ->check(CLI::IsMember({"f16", "f32"}))
      ->capture_default_str();
  bench_cmd_->add_option("-r,--repetitions", b.repetitions, "runs per batch size (median kept)")
      ->capture_default_str();
  bench_cmd_->add_flag("--json", b.json, "print JSON");
}

int LocalCommands::Run() {
  if (synth_cmd_->parsed()) return RunSynth();
  if (bench_cmd_->parsed()) return RunBench();
  return -1;
}

}  // namespace tokenmill::cli
