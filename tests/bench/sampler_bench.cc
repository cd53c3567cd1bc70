// Sampler cost per token on a Llama-3-sized vocabulary (128256): flat
// logits are the worst case for top-p (most of the vocabulary is sorted),
// peaked ones are what trained models produce. A figure, not a test.
#include <benchmark/benchmark.h>

#include <vector>

#include "runtime/sampling/sampler.h"
#include "runtime/sampling/sampling_rng.h"

namespace tokenmill::sampling {
namespace {

constexpr int kVocab = 128256;

// Logits in [-4 x spread, 4 x spread) from the sampler's own generator.
std::vector<float> Logits(float spread) {
  SamplingRng rng(1);
  std::vector<float> logits(kVocab);
  for (float& x : logits) x = static_cast<float>(rng.Uniform() * 8.0 - 4.0) * spread;
  return logits;
}

void BM_SampleTopP(benchmark::State& state) {
  const std::vector<float> logits = Logits(static_cast<float>(state.range(0)));
  SamplingParams params;
  params.temperature = 0.8f;
  params.seed = 7;
  params.top_p = 0.9f;
  params.logprobs = 5;
  Sampler sampler(params, kVocab);
  for (auto _ : state) {
    auto token = sampler.Sample(logits);
    if (!token.ok() || !sampler.Accept(token->token).ok()) {
      state.SkipWithError("sampling failed");
      break;
    }
    benchmark::DoNotOptimize(token->token);
  }
  state.SetLabel("T 0.8, top_p 0.9, logprobs 5");
}
BENCHMARK(BM_SampleTopP)->Arg(1)->Arg(4)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace tokenmill::sampling

BENCHMARK_MAIN();
