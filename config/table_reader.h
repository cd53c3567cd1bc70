// Reads one TOML table into struct fields, checking types and values, and
// collects every problem with its position instead of stopping at the first,
// so that an operator fixes a config file in one pass.
//
// Internal to config/: node_config.cc describes each section with a
// TableReader; nothing outside config/ includes this header.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <toml++/toml.h>

#include "absl/strings/string_view.h"
#include "config/node_config.h"

namespace tokenmill::config {

// Debian's Abseil is built with its own absl::string_view
// (ABSL_OPTION_USE_STD_STRING_VIEW 0), which std::string_view does not convert
// to implicitly; these convert where the two meet (StrCat, Status messages).
inline absl::string_view Absl(std::string_view s) { return absl::string_view(s.data(), s.size()); }
inline std::string_view Std(absl::string_view s) { return std::string_view(s.data(), s.size()); }

// Problems found in one config text, each at a line and column.
class ProblemList {
 public:
  void Add(const toml::source_position& where, std::string message);
  bool empty() const { return problems_.empty(); }
  // One "SOURCE:LINE:COL: message" line per problem, in file order (problems
  // at the same position keep the order they were found in).
  std::string Format(std::string_view source) const;

 private:
  struct Problem {
    toml::source_position where;
    std::string message;
  };
  std::vector<Problem> problems_;
};

// A check on a value that has the right type: returns "" when the value is
// fine, otherwise a phrase that completes "<field> ...", e.g. "must be > 0".
using StringCheck = std::function<std::string(std::string_view)>;
using IntegerCheck = std::function<std::string(int64_t)>;
using NumberCheck = std::function<std::string(double)>;

// Common checks.
IntegerCheck IntegerAtLeast(int64_t min);
NumberCheck NumberAtLeast(double min);
NumberCheck NumberAbove(double min);

// Reads the keys of one table. Each read names a key the section accepts, so
// that Finish() can refuse every other key; a key that is absent leaves the
// field at its default. Not thread-safe; lives for one section.
class TableReader {
 public:
  // `context` names the table in messages: "[api]" or "[[tenant]]". The table
  // and the problem list must outlive the reader.
  TableReader(const toml::table& table, std::string context, ProblemList& problems);
  TableReader(const TableReader&) = delete;
  TableReader& operator=(const TableReader&) = delete;

  void String(std::string_view key, std::string* out, const StringCheck& check = nullptr);
  void Path(std::string_view key, std::filesystem::path* out, const StringCheck& check);
  void StringArray(std::string_view key, std::vector<std::string>* out,
                   const StringCheck& check_each);

  // Integers in the range of the field's type, then `check`.
  void Uint32(std::string_view key, uint32_t* out, const IntegerCheck& check = nullptr);
  void Uint64(std::string_view key, uint64_t* out, const IntegerCheck& check = nullptr);
  void OptionalUint32(std::string_view key, std::optional<uint32_t>* out,
                      const IntegerCheck& check = nullptr);

  // Finite floats or integers.
  void Number(std::string_view key, double* out, const NumberCheck& check = nullptr);
  void OptionalNumber(std::string_view key, std::optional<double>* out,
                      const NumberCheck& check = nullptr);

  // A duration string ("30s") or integer milliseconds; must be > 0.
  void Duration(std::string_view key, std::chrono::milliseconds* out);
  // A byte count: an integer or a size string ("4MiB"), within [min, max].
  void ByteCount(std::string_view key, uint64_t* out, uint64_t min, uint64_t max);
  // An octal mode string "0660" (or a TOML octal integer 0o660).
  void SocketMode(std::string_view key, uint32_t* out);
  // "80%", a size string, or an integer byte count; must be > 0.
  void KvMemory(std::string_view key, MemoryAmount* out);
  // "process" | "power".
  void DurabilityLevel(std::string_view key, Durability* out);

  // Reports `key` as missing when the table lacks it.
  void Required(std::string_view key);

  // The value of `key` (nullptr when absent) without reading it, for checks
  // that span tables, such as unique names.
  const toml::node* Peek(std::string_view key) const;

  // Reports each key of the table that no read named, with a did-you-mean
  // hint when a known key is within edit distance 2.
  void Finish();

  // The keys read so far, in order: the keys this section accepts once all
  // reads have run.
  const std::vector<std::string>& known_keys() const { return known_; }

 private:
  // Marks `key` as known and returns its value, or nullptr when absent.
  const toml::node* Take(std::string_view key);
  std::string Field(std::string_view key) const;
  void WrongType(const toml::node& node, std::string_view field, std::string_view expected);
  void BadValue(const toml::node& node, std::string_view field, std::string_view what);
  // Integer read shared by the unsigned readers; nullopt after a problem.
  std::optional<int64_t> ReadInteger(std::string_view key, int64_t max, const IntegerCheck& check);

  const toml::table& table_;
  std::string context_;
  ProblemList& problems_;
  std::vector<std::string> known_;
};

// How a node reads in a message: `integer 660`, `string "abc"`, `table`.
std::string DescribeNode(const toml::node& node);

// A key spelled close to `key` among `candidates` (edit distance <= 2 and at
// most half the key's length), or "" when none is.
std::string ClosestKey(std::string_view key, const std::vector<std::string>& candidates);

}  // namespace tokenmill::config
