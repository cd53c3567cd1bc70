// Engine benchmark: prompt processing (pp512), decode (tg128) at batch 1, 4,
// 16 and 32, and, measured in the same run, the machine's read bandwidth and
// the batch-1 decode speed as a fraction of the bandwidth bound.
//
//   engine_bench MODEL.gguf [THREADS]
//
// Prints figures; it never fails on time. `tokenmill bench` is the same for users.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "runtime/bench/engine_bench.h"
#include "runtime/model/model_loader.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s MODEL.gguf [THREADS]\n", argv[0]);
    return 2;
  }
  auto model = tokenmill::model::LoadModel(argv[1]);
  if (!model.ok()) {
    std::fprintf(stderr, "%s\n", std::string(model.status().message()).c_str());
    return 1;
  }
  tokenmill::bench::EngineBenchOptions options;
  if (argc > 2) options.threads = std::atoi(argv[2]);
  auto result = tokenmill::bench::RunEngineBench(*model, options, [](const std::string& line) {
    std::fprintf(stderr, "  %s\n", line.c_str());
  });
  if (!result.ok()) {
    std::fprintf(stderr, "%s\n", std::string(result.status().message()).c_str());
    return 1;
  }
  std::fputs(tokenmill::bench::FormatEngineBench(*result).c_str(), stdout);
  return 0;
}
