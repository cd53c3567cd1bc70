// The CLI's local commands, which need no daemon: `tokenmill model synth`
// writes a synthetic GGUF model; `tokenmill bench MODEL` measures the engine.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"

namespace tokenmill::cli {

class LocalCommands {
 public:
  // Adds the subcommands to app; app must outlive this object.
  explicit LocalCommands(CLI::App& app);

  // Runs whichever of the commands was parsed and returns its exit status,
  // or -1 when none of them was.
  int Run();

 private:
  struct SynthFlags {
    std::string out;
    std::string shape = "tiny";
    std::string type = "f16";
    std::string arch = "llama";
    int dim = 0, layers = 0, heads = 0, kv_heads = 0, head_dim = 0, ffn = 0, vocab = 0, context = 0;
    int sliding_window = 0, sliding_window_pattern = 0;
    int experts = 0, experts_used = 0;
    bool tied = false;
    bool llama3_rope = false;
    float rope_linear = 1.0f;
    uint64_t seed = 1;
    std::string name;
  };
  struct BenchFlags {
    std::string model;
    int threads = 0;
    int prompt = 512;
    int gen = 128;
    std::vector<int> batches = {1, 4, 16, 32};
    std::string kv = "f16";
    int repetitions = 3;
    bool json = false;
  };

  int RunSynth() const;
  int RunBench() const;

  SynthFlags synth_;
  BenchFlags bench_;
  CLI::App* synth_cmd_ = nullptr;
  CLI::App* bench_cmd_ = nullptr;
};

}  // namespace tokenmill::cli
