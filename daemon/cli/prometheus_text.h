// A small parser of the Prometheus text exposition format (version 0.0.4),
// enough for `tokenmill top` to read tokenmilld's /metrics: samples with
// labels and values; # HELP / # TYPE lines and timestamps are skipped.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace tokenmill::cli {

struct MetricSample {
  std::string name;                           // "tokenmill_tokens_total"
  std::map<std::string, std::string> labels;  // unescaped values
  double value = 0.0;                         // NaN and +/-Inf allowed
};

// Every sample of `text`, in order. A malformed line is kInvalidArgument
// naming its line number.
absl::StatusOr<std::vector<MetricSample>> ParsePrometheusText(std::string_view text);

}  // namespace tokenmill::cli
