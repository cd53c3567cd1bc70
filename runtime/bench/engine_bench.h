// The engine benchmark behind tests/bench/engine_bench and `tokenmill bench`:
// prompt processing (ppN), decode (tgN) at several batch sizes, and, in the
// same run, the machine's read bandwidth and the batch-1 decode speed as a
// fraction of the bandwidth bound (bandwidth / bytes read per token).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "devices/executor.h"
#include "runtime/model/model_loader.h"

namespace tokenmill::bench {

struct EngineBenchOptions {
  int threads = 0;          // 0 = one per core
  int prompt_tokens = 512;  // ppN
  int gen_tokens = 128;     // tgN
  std::vector<int> batches = {1, 4, 16, 32};
  devices::KvType kv_type = devices::KvType::kF16;
  bool measure_bandwidth = true;
  int repetitions = 3;  // each tgN is run this often; the median is reported
  uint64_t seed = 7;    // random token ids
};

struct DecodeFigure {
  int batch = 0;
  double tokens_per_second = 0.0;  // aggregate over the batch, median of the repetitions
  double ms_per_step = 0.0;
  double tokens_per_second_min = 0.0;  // spread of the repetitions
  double tokens_per_second_max = 0.0;
  // Mixture of experts: (layer, expert) pairs a step read, averaged over the
  // timed steps, and the bound at this batch size counting only those
  // experts' bytes (with the other weights and the KV read); 0 without
  // experts or a bandwidth measurement.
  double experts_per_step = 0.0;
  double bound_tokens_per_second = 0.0;
};

struct EngineBenchResult {
  std::string model;  // name, arch, shape, weight type
  int threads = 0;
  std::string isa;
  uint64_t weight_bytes_per_token = 0;
  double kv_bytes_per_token = 0.0;  // batch-1 decode, averaged over tgN
  double prompt_tokens_per_second = 0.0;
  std::vector<DecodeFigure> decode;
  // Read bandwidth (STREAM's access pattern): the median of every
  // repetition of the probes taken before and after the decode runs, so no
  // single outlier sets the bound; the lowest and highest show the spread.
  // 0 when not measured.
  double bandwidth_bytes_per_second = 0.0;
  double bandwidth_low_bytes_per_second = 0.0;
  double bandwidth_high_bytes_per_second = 0.0;
  int bandwidth_samples = 0;
  // STREAM copy and triad, best of 5 as STREAM reports, for comparison with
  // published STREAM figures of the machine.
  double stream_copy_bytes_per_second = 0.0;
  double stream_triad_bytes_per_second = 0.0;
  double bound_tokens_per_second = 0.0;  // median bandwidth / bytes read per token
  double batch1_fraction_of_bound = 0.0;
};

using BenchProgress = std::function<void(const std::string& line)>;

absl::StatusOr<EngineBenchResult> RunEngineBench(const model::LoadedModel& model,
                                                 const EngineBenchOptions& options,
                                                 const BenchProgress& progress = {});

// A short human table of the result.
std::string FormatEngineBench(const EngineBenchResult& result);

}  // namespace tokenmill::bench
