#include "daemon/cli/prometheus_text.h"

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"

namespace tokenmill::cli {
namespace {

bool NameStart(char c) {
  return std::isalpha(static_cast<unsigned char>(c)) || c == '_' || c == ':';
}
bool NameChar(char c) { return NameStart(c) || std::isdigit(static_cast<unsigned char>(c)); }

void SkipBlanks(std::string_view line, size_t& i) {
  while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
}

std::string TakeName(std::string_view line, size_t& i) {
  size_t begin = i;
  if (i < line.size() && NameStart(line[i])) {
    ++i;
    while (i < line.size() && NameChar(line[i])) ++i;
  }
  return std::string(line.substr(begin, i - begin));
}

// A quoted label value starting at line[i] == '"'; escapes \\, \" and \n.
std::optional<std::string> TakeQuoted(std::string_view line, size_t& i) {
  if (i >= line.size() || line[i] != '"') return std::nullopt;
  std::string out;
  for (++i; i < line.size(); ++i) {
    char c = line[i];
    if (c == '"') {
      ++i;
      return out;
    }
    if (c == '\\') {
      if (++i >= line.size()) return std::nullopt;
      c = line[i];
      if (c == 'n') {
        out.push_back('\n');
      } else if (c == '\\' || c == '"') {
        out.push_back(c);
      } else {
        return std::nullopt;
      }
    } else {
      out.push_back(c);
    }
  }
  return std::nullopt;
}

std::optional<double> ParseValue(std::string_view text) {
  // Case-insensitive, as Prometheus itself reads them: prometheus-cpp's
  // exposer writes "Nan" for an empty summary quantile.
  std::string lower(text);
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (lower == "nan") return std::numeric_limits<double>::quiet_NaN();
  if (lower == "+inf" || lower == "inf") return std::numeric_limits<double>::infinity();
  if (lower == "-inf") return -std::numeric_limits<double>::infinity();
  std::string s(text);
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (s.empty() || end != s.c_str() + s.size() || std::isnan(v) || std::isinf(v)) {
    return std::nullopt;
  }
  return v;
}

// One sample line (leading blanks removed), or why it is malformed.
absl::StatusOr<MetricSample> ParseSample(std::string_view line) {
  MetricSample sample;
  size_t i = 0;
  sample.name = TakeName(line, i);
  if (sample.name.empty()) return absl::InvalidArgumentError("no metric name");
  SkipBlanks(line, i);
  if (i < line.size() && line[i] == '{') {
    ++i;
    while (true) {
      SkipBlanks(line, i);
      if (i < line.size() && line[i] == '}') {
        ++i;
        break;
      }
      std::string label = TakeName(line, i);
      if (label.empty()) return absl::InvalidArgumentError("bad label name");
      SkipBlanks(line, i);
      if (i >= line.size() || line[i] != '=') {
        return absl::InvalidArgumentError(absl::StrCat("no '=' after label ", label));
      }
      ++i;
      SkipBlanks(line, i);
      std::optional<std::string> value = TakeQuoted(line, i);
      if (!value) return absl::InvalidArgumentError(absl::StrCat("bad value of label ", label));
      sample.labels[label] = std::move(*value);
      SkipBlanks(line, i);
      if (i < line.size() && line[i] == ',') {
        ++i;
      } else if (i >= line.size() || line[i] != '}') {
        return absl::InvalidArgumentError("labels do not end with '}'");
      }
    }
  }
  SkipBlanks(line, i);
  size_t begin = i;
  while (i < line.size() && line[i] != ' ' && line[i] != '\t') ++i;
  std::optional<double> value = ParseValue(line.substr(begin, i - begin));
  if (!value) return absl::InvalidArgumentError("bad sample value");
  sample.value = *value;
  // An optional timestamp (integer milliseconds) may follow; nothing else.
  SkipBlanks(line, i);
  if (i < line.size()) {
    size_t ts = i;
    if (line[i] == '-') ++i;
    while (i < line.size() && std::isdigit(static_cast<unsigned char>(line[i]))) ++i;
    SkipBlanks(line, i);
    if (i == ts || i < line.size()) return absl::InvalidArgumentError("trailing text");
  }
  return sample;
}

}  // namespace

absl::StatusOr<std::vector<MetricSample>> ParsePrometheusText(std::string_view text) {
  std::vector<MetricSample> samples;
  size_t line_no = 0;
  while (!text.empty()) {
    ++line_no;
    size_t end = text.find('\n');
    std::string_view line = text.substr(0, end);
    text.remove_prefix(end == std::string_view::npos ? text.size() : end + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    size_t i = 0;
    SkipBlanks(line, i);
    if (i == line.size() || line[i] == '#') continue;
    absl::StatusOr<MetricSample> sample = ParseSample(line.substr(i));
    if (!sample.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("metrics line ", line_no, ": ",
                                                     std::string(sample.status().message()), ": ",
                                                     std::string(line.substr(0, 120))));
    }
    samples.push_back(*std::move(sample));
  }
  return samples;
}

}  // namespace tokenmill::cli
