#include "config/table_reader.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "config/value_parsers.h"

namespace tokenmill::config {
namespace {

// Long values are cut in messages: the position already says where they are.
constexpr size_t kMaxShownChars = 80;

std::string QuotedText(std::string_view text) {
  std::string shown = absl::CHexEscape(Absl(text.substr(0, kMaxShownChars)));
  return absl::StrCat("\"", shown, text.size() > kMaxShownChars ? "...\"" : "\"");
}

// The value alone, as the operator wrote it: 660, "abc", 0.8.
std::string ValueText(const toml::node& node) {
  if (const auto* s = node.as_string()) return QuotedText(s->get());
  if (const auto* i = node.as_integer()) {
    // Echo 0o660 as written: in octal, the digits the operator recognises.
    if (i->get() > 0 &&
        (i->flags() & toml::value_flags::format_as_octal) != toml::value_flags::none) {
      std::string digits;
      for (int64_t v = i->get(); v > 0; v /= 8) digits.insert(digits.begin(), char('0' + v % 8));
      return "0o" + digits;
    }
    return absl::StrCat(i->get());
  }
  if (const auto* f = node.as_floating_point()) return absl::StrCat(f->get());
  if (const auto* b = node.as_boolean()) return b->get() ? "true" : "false";
  return DescribeNode(node);
}

std::string_view TypeName(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::table:
      return "table";
    case toml::node_type::array:
      return "array";
    case toml::node_type::string:
      return "string";
    case toml::node_type::integer:
      return "integer";
    case toml::node_type::floating_point:
      return "float";
    case toml::node_type::boolean:
      return "boolean";
    case toml::node_type::date:
      return "date";
    case toml::node_type::time:
      return "time";
    case toml::node_type::date_time:
      return "date-time";
    case toml::node_type::none:
      break;
  }
  return "nothing";
}

std::string FormatNumber(double value) { return absl::StrCat(value); }

}  // namespace

void ProblemList::Add(const toml::source_position& where, std::string message) {
  problems_.push_back({where, std::move(message)});
}

std::string ProblemList::Format(std::string_view source) const {
  std::vector<Problem> sorted = problems_;
  std::stable_sort(sorted.begin(), sorted.end(), [](const Problem& a, const Problem& b) {
    return std::pair(a.where.line, a.where.column) < std::pair(b.where.line, b.where.column);
  });
  std::string out;
  for (const Problem& p : sorted) {
    if (!out.empty()) out += '\n';
    absl::StrAppend(&out, Absl(source), ":", p.where.line, ":", p.where.column, ": ", p.message);
  }
  return out;
}

IntegerCheck IntegerAtLeast(int64_t min) {
  return [min](int64_t v) { return v >= min ? "" : absl::StrCat("must be >= ", min); };
}

NumberCheck NumberAtLeast(double min) {
  return [min](double v) { return v >= min ? "" : absl::StrCat("must be >= ", FormatNumber(min)); };
}

NumberCheck NumberAbove(double min) {
  return [min](double v) { return v > min ? "" : absl::StrCat("must be > ", FormatNumber(min)); };
}

std::string DescribeNode(const toml::node& node) {
  if (node.is_string() || node.is_integer() || node.is_floating_point() || node.is_boolean()) {
    return absl::StrCat(Absl(TypeName(node)), " ", ValueText(node));
  }
  return std::string(TypeName(node));
}

std::string ClosestKey(std::string_view key, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_distance = 3;
  for (const std::string& candidate : candidates) {
    const size_t d = EditDistance(key, candidate);
    // A short key is "close" to everything; demand half of it survive.
    if (d < best_distance && d * 2 <= key.size()) {
      best = candidate;
      best_distance = d;
    }
  }
  return best;
}

TableReader::TableReader(const toml::table& table, std::string context, ProblemList& problems)
    : table_(table), context_(std::move(context)), problems_(problems) {}

const toml::node* TableReader::Take(std::string_view key) {
  known_.emplace_back(key);
  return table_.get(key);
}

const toml::node* TableReader::Peek(std::string_view key) const { return table_.get(key); }

std::string TableReader::Field(std::string_view key) const {
  return absl::StrCat(context_, ".", Absl(key));
}

void TableReader::WrongType(const toml::node& node, std::string_view field,
                            std::string_view expected) {
  problems_.Add(node.source().begin, absl::StrCat(Absl(field), " must be ", Absl(expected),
                                                  ", got ", DescribeNode(node)));
}

void TableReader::BadValue(const toml::node& node, std::string_view field, std::string_view what) {
  problems_.Add(node.source().begin,
                absl::StrCat(Absl(field), " ", Absl(what), ", got ", ValueText(node)));
}

void TableReader::String(std::string_view key, std::string* out, const StringCheck& check) {
  const toml::node* node = Take(key);
  if (node == nullptr) return;
  const auto* s = node->as_string();
  if (s == nullptr) return WrongType(*node, Field(key), "a string");
  if (check) {
    if (std::string problem = check(s->get()); !problem.empty()) {
      return BadValue(*node, Field(key), problem);
    }
  }
  *out = s->get();
}

void TableReader::Path(std::string_view key, std::filesystem::path* out, const StringCheck& check) {
  std::string text;
  bool read = false;
  String(key, &text, [&](std::string_view v) {
    std::string problem = check ? check(v) : "";
    read = problem.empty();
    return problem;
  });
  if (read) *out = text;
}

void TableReader::StringArray(std::string_view key, std::vector<std::string>* out,
                              const StringCheck& check_each) {
  const toml::node* node = Take(key);
  if (node == nullptr) return;
  const auto* array = node->as_array();
  if (array == nullptr) return WrongType(*node, Field(key), "an array of strings");
  std::vector<std::string> values;
  bool ok = true;
  for (size_t i = 0; i < array->size(); ++i) {
    const toml::node& element = *array->get(i);
    const std::string field = absl::StrCat(Field(key), "[", i, "]");
    const auto* s = element.as_string();
    if (s == nullptr) {
      WrongType(element, field, "a string");
      ok = false;
      continue;
    }
    if (check_each) {
      if (std::string problem = check_each(s->get()); !problem.empty()) {
        BadValue(element, field, problem);
        ok = false;
        continue;
      }
    }
    values.push_back(s->get());
  }
  if (ok) *out = std::move(values);
}

std::optional<int64_t> TableReader::ReadInteger(std::string_view key, int64_t max,
                                                const IntegerCheck& check) {
  const toml::node* node = Take(key);
  if (node == nullptr) return std::nullopt;
  const auto* i = node->as_integer();
  if (i == nullptr) {
    WrongType(*node, Field(key), "an integer");
    return std::nullopt;
  }
  const int64_t value = i->get();
  std::string problem = check ? check(value) : "";
  if (problem.empty() && value < 0) problem = "must be >= 0";
  if (problem.empty() && value > max) problem = absl::StrCat("must be at most ", max);
  if (!problem.empty()) {
    BadValue(*node, Field(key), problem);
    return std::nullopt;
  }
  return value;
}

void TableReader::Uint32(std::string_view key, uint32_t* out, const IntegerCheck& check) {
  if (auto v = ReadInteger(key, std::numeric_limits<uint32_t>::max(), check)) {
    *out = static_cast<uint32_t>(*v);
  }
}

void TableReader::Uint64(std::string_view key, uint64_t* out, const IntegerCheck& check) {
  if (auto v = ReadInteger(key, std::numeric_limits<int64_t>::max(), check)) {
    *out = static_cast<uint64_t>(*v);
  }
}

void TableReader::OptionalUint32(std::string_view key, std::optional<uint32_t>* out,
                                 const IntegerCheck& check) {
  if (auto v = ReadInteger(key, std::numeric_limits<uint32_t>::max(), check)) {
    *out = static_cast<uint32_t>(*v);
  }
}

void TableReader::Number(std::string_view key, double* out, const NumberCheck& check) {
  std::optional<double> value;
  OptionalNumber(key, &value, check);
  if (value) *out = *value;
}

void TableReader::OptionalNumber(std::string_view key, std::optional<double>* out,
                                 const NumberCheck& check) {
  const toml::node* node = Take(key);
  if (node == nullptr) return;
  double value = 0;
  if (const auto* f = node->as_floating_point()) {
    value = f->get();
  } else if (const auto* i = node->as_integer()) {
    value = static_cast<double>(i->get());
  } else {
    return WrongType(*node, Field(key), "a number");
  }
  std::string problem = std::isfinite(value) ? "" : "must be a finite number";
  if (problem.empty() && check) problem = check(value);
  if (!problem.empty()) return BadValue(*node, Field(key), problem);
  *out = value;
}

void TableReader::Duration(std::string_view key, std::chrono::milliseconds* out) {
  const toml::node* node = Take(key);
  if (node == nullptr) return;
  std::chrono::milliseconds value{0};
  if (const auto* i = node->as_integer()) {
    value = std::chrono::milliseconds(i->get());
  } else if (const auto* s = node->as_string()) {
    auto parsed = ParseDuration(s->get());
    if (!parsed.ok()) return BadValue(*node, Field(key), Std(parsed.status().message()));
    value = *parsed;
  } else {
    return WrongType(*node, Field(key),
                     "a duration like \"30s\", \"500ms\" or \"2m\", or an integer of milliseconds");
  }
  if (value.count() <= 0) return BadValue(*node, Field(key), "must be longer than zero");
  *out = value;
}

void TableReader::ByteCount(std::string_view key, uint64_t* out, uint64_t min, uint64_t max) {
  const toml::node* node = Take(key);
  if (node == nullptr) return;
  uint64_t value = 0;
  if (const auto* i = node->as_integer()) {
    if (i->get() < 0) return BadValue(*node, Field(key), "must be >= 0");
    value = static_cast<uint64_t>(i->get());
  } else if (const auto* s = node->as_string()) {
    auto parsed = ParseByteSize(s->get());
    if (!parsed.ok()) return BadValue(*node, Field(key), Std(parsed.status().message()));
    value = *parsed;
  } else {
    return WrongType(*node, Field(key), "a byte count or a size like \"4MiB\"");
  }
  if (value < min || value > max) {
    const std::string range = max == std::numeric_limits<uint64_t>::max()
                                  ? absl::StrCat("must be at least ", min, " bytes")
                                  : absl::StrCat("must be between ", min, " and ", max, " bytes");
    return BadValue(*node, Field(key), range);
  }
  *out = value;
}

void TableReader::SocketMode(std::string_view key, uint32_t* out) {
  const toml::node* node = Take(key);
  if (node == nullptr) return;
  std::string text;
  if (const auto* s = node->as_string()) {
    text = s->get();
  } else if (const auto* i = node->as_integer();
             i != nullptr && i->get() >= 0 &&
             (i->flags() & toml::value_flags::format_as_octal) != toml::value_flags::none) {
    // 0o660 is an octal integer in TOML and means what the operator wrote.
    for (int64_t v = i->get(); v > 0; v /= 8) text.insert(text.begin(), char('0' + v % 8));
  } else {
    return WrongType(*node, Field(key), "an octal string like \"0660\"");
  }
  auto mode = ParseSocketMode(text);
  if (!mode.ok()) return BadValue(*node, Field(key), Std(mode.status().message()));
  *out = *mode;
}

void TableReader::KvMemory(std::string_view key, MemoryAmount* out) {
  const toml::node* node = Take(key);
  if (node == nullptr) return;
  MemoryAmount amount;
  if (const auto* i = node->as_integer()) {
    if (i->get() <= 0) return BadValue(*node, Field(key), "must be > 0 bytes");
    amount.bytes = static_cast<uint64_t>(i->get());
  } else if (const auto* s = node->as_string()) {
    const std::string& text = s->get();
    if (!text.empty() && text.back() == '%') {
      auto fraction = ParsePercent(text);
      if (!fraction.ok()) return BadValue(*node, Field(key), Std(fraction.status().message()));
      amount.fraction = *fraction;
    } else {
      auto bytes = ParseByteSize(text);
      if (!bytes.ok()) {
        return BadValue(*node, Field(key),
                        "must be a percentage like \"80%\", a size like \"8GiB\" or a byte count");
      }
      if (*bytes == 0) return BadValue(*node, Field(key), "must be > 0 bytes");
      amount.bytes = *bytes;
    }
  } else {
    return WrongType(*node, Field(key),
                     "a percentage like \"80%\", a size like \"8GiB\" or a byte count");
  }
  *out = amount;
}

void TableReader::DurabilityLevel(std::string_view key, Durability* out) {
  std::string text;
  String(key, &text, [](std::string_view v) -> std::string {
    return v == "process" || v == "power" ? "" : "must be \"process\" or \"power\"";
  });
  if (text == "process") *out = Durability::kProcess;
  if (text == "power") *out = Durability::kPower;
}

void TableReader::Required(std::string_view key) {
  if (table_.get(key) == nullptr) {
    problems_.Add(table_.source().begin,
                  absl::StrCat(context_, " is missing required key '", Absl(key), "'"));
  }
}

void TableReader::Finish() {
  for (const auto& [key, node] : table_) {
    if (std::find(known_.begin(), known_.end(), key.str()) != known_.end()) continue;
    std::string message = absl::StrCat("unknown key '", Absl(key.str()), "' in ", context_);
    if (std::string near = ClosestKey(key.str(), known_); !near.empty()) {
      absl::StrAppend(&message, " (did you mean '", near, "'?)");
    }
    problems_.Add(key.source().begin, std::move(message));
  }
}

}  // namespace tokenmill::config
