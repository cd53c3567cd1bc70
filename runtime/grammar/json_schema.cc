#include "runtime/grammar/json_schema.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "runtime/grammar/regex.h"

namespace tokenmill::grammar {

namespace {

using Json = nlohmann::ordered_json;
using Frag = NfaBuilder::Frag;

// Largest magnitude emitted for integers (15 digits: exact as doubles).
constexpr int64_t kIntegerLimit = 999'999'999'999'999;
constexpr int32_t kFractionDigits = 15;

bool IsAnnotation(std::string_view key) {
  static const absl::flat_hash_set<std::string_view> kAnnotations = {
      "title",      "description", "examples",    "default",          "$comment",
      "deprecated", "readOnly",    "writeOnly",   "$schema",          "$id",
      "$anchor",    "$defs",       "definitions", "contentMediaType", "contentEncoding"};
  return kAnnotations.contains(key);
}

bool IsSupported(std::string_view key) {
  static const absl::flat_hash_set<std::string_view> kSupported = {"type",
                                                                   "properties",
                                                                   "required",
                                                                   "additionalProperties",
                                                                   "items",
                                                                   "minItems",
                                                                   "maxItems",
                                                                   "enum",
                                                                   "const",
                                                                   "minLength",
                                                                   "maxLength",
                                                                   "pattern",
                                                                   "format",
                                                                   "minimum",
                                                                   "maximum",
                                                                   "exclusiveMinimum",
                                                                   "exclusiveMaximum",
                                                                   "anyOf",
                                                                   "allOf",
                                                                   "$ref",
                                                                   "uniqueItems"};
  return kSupported.contains(key);
}

bool IsRefusedAssertion(std::string_view key) {
  static const absl::flat_hash_set<std::string_view> kRefused = {"not",
                                                                 "oneOf",
                                                                 "if",
                                                                 "then",
                                                                 "else",
                                                                 "multipleOf",
                                                                 "minProperties",
                                                                 "maxProperties",
                                                                 "patternProperties",
                                                                 "propertyNames",
                                                                 "contains",
                                                                 "minContains",
                                                                 "maxContains",
                                                                 "prefixItems",
                                                                 "dependentRequired",
                                                                 "dependentSchemas",
                                                                 "dependencies",
                                                                 "unevaluatedProperties",
                                                                 "unevaluatedItems",
                                                                 "additionalItems",
                                                                 "$dynamicRef",
                                                                 "$dynamicAnchor",
                                                                 "$recursiveRef"};
  return kRefused.contains(key);
}

std::string PointerToken(std::string_view key) {
  std::string out;
  for (const char c : key) {
    if (c == '~') {
      out += "~0";
    } else if (c == '/') {
      out += "~1";
    } else {
      out += c;
    }
  }
  return out;
}

absl::Status Invalid(std::string_view pointer, std::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat("schema at \"#", std::string(pointer), "\": ", std::string(what)));
}

// Patterns for `format`, as the regex subset; anchored. Chosen so that every
// match is valid for ajv-formats' full mode (days within each month, Feb 29
// left out, times with a zone).
std::optional<std::string_view> FormatPattern(std::string_view format) {
  static constexpr std::string_view kDate =
      R"([0-9]{4}-(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])|(?:0[13-9]|1[0-2])-(?:29|30)|(?:0[13578]|1[02])-31))";
  static constexpr std::string_view kTime =
      R"((?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9]))";
  static const std::string kDateTime =
      absl::StrCat("^", std::string(kDate), "T", std::string(kTime), "$");
  static const std::string kDateOnly = absl::StrCat("^", std::string(kDate), "$");
  static const std::string kTimeOnly = absl::StrCat("^", std::string(kTime), "$");
  if (format == "date-time") return kDateTime;
  if (format == "date") return kDateOnly;
  if (format == "time") return kTimeOnly;
  if (format == "email") {
    return R"(^[a-zA-Z0-9_+-]+(?:\.[a-zA-Z0-9_+-]+)*@(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?\.)+[a-zA-Z][a-zA-Z]+$)";
  }
  if (format == "uuid") {
    return "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$";
  }
  if (format == "ipv4") {
    return R"(^(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$)";
  }
  if (format == "uri") {
    return R"(^https?://[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*(?:/[a-zA-Z0-9._~-]*)*$)";
  }
  return std::nullopt;
}

class SchemaCompiler {
 public:
  SchemaCompiler(const Json& root, const JsonSchemaOptions& options)
      : root_(root), options_(options), nfa_(options.limits.max_nfa_states) {}

  absl::StatusOr<ByteAutomaton> CompileRoot() {
    rules_.push_back({"root", {}});
    absl::StatusOr<Frag> body = Value(root_, "", 0);
    if (!body.ok()) return body.status();
    rules_[0].body = Wrap(*body);
    if (absl::Status s = CompilePendingRules(); !s.ok()) return s;
    return BuildAutomaton(nfa_, rules_, 0, options_.limits);
  }

  absl::StatusOr<ByteAutomaton> CompileAnyObject() {
    rules_.push_back({"root", {}});
    rules_[0].body = Wrap(nfa_.Call(AnyObjectRule()));
    if (absl::Status s = CompilePendingRules(); !s.ok()) return s;
    return BuildAutomaton(nfa_, rules_, 0, options_.limits);
  }

 private:
  // The root value between the options' literal prefix and suffix.
  Frag Wrap(Frag value) {
    return nfa_.Seq({nfa_.Literal(options_.prefix), value, nfa_.Literal(options_.suffix)});
  }

  struct PendingRule {
    int32_t rule;
    const Json* schema;
    std::string pointer;
  };

  absl::Status CompilePendingRules() {
    while (!pending_.empty()) {
      PendingRule p = std::move(pending_.back());
      pending_.pop_back();
      absl::StatusOr<Frag> body = Value(*p.schema, p.pointer, 0);
      if (!body.ok()) return body.status();
      rules_[p.rule].body = *body;
    }
    return absl::OkStatus();
  }

  absl::StatusOr<int32_t> NewRule(std::string name) {
    if (static_cast<int32_t>(rules_.size()) >= options_.limits.max_rules) {
      return absl::InvalidArgumentError(
          absl::StrCat("schema too large: over ", options_.limits.max_rules, " rules"));
    }
    rules_.push_back({std::move(name), {}});
    return static_cast<int32_t>(rules_.size() - 1);
  }

  Frag Colon() {
    Frag f = nfa_.Literal(":");
    return options_.space_after_separators ? nfa_.Seq(f, nfa_.Optional(nfa_.Literal(" "))) : f;
  }
  Frag Comma() {
    Frag f = nfa_.Literal(",");
    return options_.space_after_separators ? nfa_.Seq(f, nfa_.Optional(nfa_.Literal(" "))) : f;
  }

  // ---- strings ----

  Frag StringChar() {
    std::vector<Frag> alts = {Utf8Set(&nfa_, JsonPlainChars())};
    CodepointSet simple_escapes;
    for (const char c : std::string_view("\"\\/bfnrt")) simple_escapes.Add(c, c);
    alts.push_back(nfa_.Seq(nfa_.Literal("\\"), Utf8Set(&nfa_, simple_escapes)));
    // \uXXXX without surrogates (D800-DFFF): one code point each.
    const auto hex = [&] {
      CodepointSet h = CodepointSet::Range('0', '9');
      h.Add('a', 'f');
      h.Add('A', 'F');
      return Utf8Set(&nfa_, h);
    };
    CodepointSet first = CodepointSet::Range('0', '9');
    first.Add('a', 'c');
    first.Add('A', 'C');
    first.Add('e', 'f');
    first.Add('E', 'F');
    CodepointSet d = CodepointSet::Of('d');
    d.Add('D', 'D');
    alts.push_back(
        nfa_.Seq({nfa_.Literal("\\u"),
                  nfa_.Alt({nfa_.Seq({Utf8Set(&nfa_, first), hex(), hex()}),
                            nfa_.Seq({Utf8Set(&nfa_, d), nfa_.ByteRange('0', '7'), hex()})}),
                  hex()}));
    return nfa_.Alt(alts);
  }

  Frag AnyString() {
    return nfa_.Seq({nfa_.Literal("\""), nfa_.Star(StringChar()), nfa_.Literal("\"")});
  }

  absl::StatusOr<Frag> String(const Json& s, const std::string& ptr) {
    std::optional<std::string> pattern;
    std::string pattern_ptr;
    if (s.contains("format")) {
      if (!s["format"].is_string()) return Invalid(ptr + "/format", "format must be a string");
      const std::string format = s["format"].get<std::string>();
      std::optional<std::string_view> p = FormatPattern(format);
      if (p) {
        pattern = std::string(*p);
        pattern_ptr = ptr + "/format";
      } else if (options_.strict) {
        return Invalid(ptr + "/format", absl::StrCat("unsupported format \"", format, "\""));
      }
    }
    if (s.contains("pattern")) {
      if (!s["pattern"].is_string()) return Invalid(ptr + "/pattern", "pattern must be a string");
      if (pattern) return Invalid(ptr + "/pattern", "pattern together with format");
      pattern = s["pattern"].get<std::string>();
      pattern_ptr = ptr + "/pattern";
    }
    absl::StatusOr<int64_t> min_length = Count(s, "minLength", ptr, 0);
    absl::StatusOr<int64_t> max_length = Count(s, "maxLength", ptr, -1);
    if (!min_length.ok()) return min_length.status();
    if (!max_length.ok()) return max_length.status();
    if (*max_length >= 0 && *max_length < *min_length) {
      return Invalid(ptr, "maxLength below minLength");
    }
    if (pattern) {
      absl::StatusOr<Frag> body = CompilePattern(*pattern, JsonPlainChars(), &nfa_);
      if (!body.ok()) return Invalid(pattern_ptr, std::string(body.status().message()));
      if (s.contains("minLength") || s.contains("maxLength")) {
        // The pattern's strings of an allowed length: its automaton paired
        // with a character counter.
        body = LimitCharacters(*body, static_cast<int32_t>(*min_length),
                               static_cast<int32_t>(*max_length), &nfa_);
        if (!body.ok()) {
          return Invalid(ptr, absl::StrCat("minLength/maxLength with ",
                                           pattern_ptr.substr(pattern_ptr.rfind('/') + 1), ": ",
                                           body.status().message()));
        }
      }
      return nfa_.Seq({nfa_.Literal("\""), *body, nfa_.Literal("\"")});
    }
    const Frag chars = nfa_.Repeat([&] { return StringChar(); }, static_cast<int32_t>(*min_length),
                                   static_cast<int32_t>(*max_length));
    return nfa_.Seq({nfa_.Literal("\""), chars, nfa_.Literal("\"")});
  }

  // A non-negative integer keyword, `absent` when missing.
  absl::StatusOr<int64_t> Count(const Json& s, const char* key, const std::string& ptr,
                                int64_t absent) {
    if (!s.contains(key)) return absent;
    const Json& v = s[key];
    if (!v.is_number_integer() &&
        !(v.is_number_float() && std::floor(v.get<double>()) == v.get<double>())) {
      return Invalid(ptr + "/" + key, "must be a non-negative integer");
    }
    const double d = v.get<double>();
    if (d < 0) return Invalid(ptr + "/" + key, "must be a non-negative integer");
    if (d > 100000) return Invalid(ptr + "/" + key, "over 100000 is not supported");
    return static_cast<int64_t>(d);
  }

  // ---- numbers ----

  static std::string Nines(size_t n) { return std::string(n, '9'); }

  // Decimal strings of equal length from lo to hi (digit-wise ranges).
  Frag SameLengthRange(const std::string& lo, const std::string& hi) {
    if (lo.size() == 1) return nfa_.ByteRange(lo[0], hi[0]);
    const std::string lo_rest = lo.substr(1);
    const std::string hi_rest = hi.substr(1);
    if (lo[0] == hi[0])
      return nfa_.Seq(nfa_.Literal(lo.substr(0, 1)), SameLengthRange(lo_rest, hi_rest));
    const bool lo_zero = lo_rest == std::string(lo_rest.size(), '0');
    const bool hi_nine = hi_rest == Nines(hi_rest.size());
    const auto digits = [&](size_t n) {
      return nfa_.Repeat([&] { return nfa_.ByteRange('0', '9'); }, static_cast<int32_t>(n),
                         static_cast<int32_t>(n));
    };
    std::vector<Frag> alts;
    char mid_lo = static_cast<char>(lo[0] + 1);
    char mid_hi = static_cast<char>(hi[0] - 1);
    if (lo_zero) {
      mid_lo = lo[0];
    } else {
      alts.push_back(
          nfa_.Seq(nfa_.Literal(lo.substr(0, 1)), SameLengthRange(lo_rest, Nines(lo_rest.size()))));
    }
    if (hi_nine) {
      mid_hi = hi[0];
    } else {
      alts.push_back(nfa_.Seq(nfa_.Literal(hi.substr(0, 1)),
                              SameLengthRange(std::string(hi_rest.size(), '0'), hi_rest)));
    }
    if (mid_lo <= mid_hi)
      alts.push_back(nfa_.Seq(nfa_.ByteRange(mid_lo, mid_hi), digits(lo_rest.size())));
    return nfa_.Alt(alts);
  }

  // Canonical decimals (no leading zeros) of the integers in [lo, hi], lo >= 0.
  Frag NonNegativeRange(int64_t lo, int64_t hi) {
    std::vector<Frag> alts;
    int64_t low_of_length = 0;
    int64_t high_of_length = 9;
    for (size_t length = 1; length <= 16 && low_of_length <= hi; ++length) {
      const int64_t a = std::max(lo, low_of_length);
      const int64_t b = std::min(hi, high_of_length);
      if (a <= b) alts.push_back(SameLengthRange(std::to_string(a), std::to_string(b)));
      low_of_length = high_of_length + 1;
      high_of_length = high_of_length * 10 + 9;
    }
    return nfa_.Alt(alts);
  }

  Frag IntegerRange(int64_t lo, int64_t hi) {
    std::vector<Frag> alts;
    if (lo < 0)
      alts.push_back(
          nfa_.Seq(nfa_.Literal("-"), NonNegativeRange(-std::min(hi, int64_t{-1}), -lo)));
    if (hi >= 0) alts.push_back(NonNegativeRange(std::max(lo, int64_t{0}), hi));
    return nfa_.Alt(alts);
  }

  absl::StatusOr<Frag> Number(const Json& s, const std::string& ptr, bool integer) {
    int64_t lo = -kIntegerLimit;
    int64_t hi = kIntegerLimit;
    const auto bound = [&](const char* key) -> absl::StatusOr<std::optional<double>> {
      if (!s.contains(key)) return std::optional<double>();
      if (!s[key].is_number()) return Invalid(ptr + "/" + key, "must be a number");
      return std::optional<double>(s[key].get<double>());
    };
    const auto clamp = [](double v) { return static_cast<int64_t>(std::clamp(v, -1e16, 1e16)); };
    absl::StatusOr<std::optional<double>> minimum = bound("minimum");
    absl::StatusOr<std::optional<double>> maximum = bound("maximum");
    absl::StatusOr<std::optional<double>> ex_min = bound("exclusiveMinimum");
    absl::StatusOr<std::optional<double>> ex_max = bound("exclusiveMaximum");
    for (const auto* b : {&minimum, &maximum, &ex_min, &ex_max}) {
      if (!b->ok()) return b->status();
    }
    if (*minimum) lo = std::max(lo, clamp(std::ceil(**minimum)));
    if (*ex_min) lo = std::max(lo, clamp(std::floor(**ex_min)) + 1);
    if (*maximum) hi = std::min(hi, clamp(std::floor(**maximum)));
    if (*ex_max) hi = std::min(hi, clamp(std::ceil(**ex_max)) - 1);
    if (lo > hi) {
      return Invalid(ptr, integer ? "no integer in the range"
                                  : "range holds no integer (narrower ranges are not supported)");
    }
    if (lo > kIntegerLimit || hi < -kIntegerLimit) {
      return Invalid(ptr, "bounds beyond 15 digits are not supported");
    }
    lo = std::max(lo, -kIntegerLimit);
    hi = std::min(hi, kIntegerLimit);
    std::vector<Frag> alts = {IntegerRange(lo, hi)};
    if (!integer) {
      const auto fraction = [&] {
        return nfa_.Seq(nfa_.Literal("."),
                        nfa_.Repeat([&] { return nfa_.ByteRange('0', '9'); }, 1, kFractionDigits));
      };
      // n.f lies in [n, n + 1): whole units inside [lo, hi].
      if (hi >= 1 && std::max(lo, int64_t{0}) <= hi - 1) {
        alts.push_back(nfa_.Seq(NonNegativeRange(std::max(lo, int64_t{0}), hi - 1), fraction()));
      }
      // -n.f lies in (-(n + 1), -n].
      if (lo <= -1 && std::max(int64_t{0}, -hi) <= -lo - 1) {
        alts.push_back(nfa_.Seq(
            {nfa_.Literal("-"), NonNegativeRange(std::max(int64_t{0}, -hi), -lo - 1), fraction()}));
      }
    }
    return nfa_.Alt(alts);
  }

  // ---- objects and arrays ----

  absl::StatusOr<Frag> Object(const Json& s, const std::string& ptr, int depth) {
    const bool has_properties = s.contains("properties");
    if (has_properties && !s["properties"].is_object()) {
      return Invalid(ptr + "/properties", "must be an object");
    }
    const Json* additional =
        s.contains("additionalProperties") ? &s["additionalProperties"] : nullptr;
    if (additional && !additional->is_boolean() && !additional->is_object()) {
      return Invalid(ptr + "/additionalProperties", "must be a schema");
    }
    std::vector<std::string> required;
    if (s.contains("required")) {
      if (!s["required"].is_array()) return Invalid(ptr + "/required", "must be an array");
      for (const Json& r : s["required"]) {
        if (!r.is_string()) return Invalid(ptr + "/required", "must hold strings");
        required.push_back(r.get<std::string>());
      }
    }
    struct Member {
      std::string key;
      const Json* schema;
      std::string pointer;
      bool required;
    };
    std::vector<Member> members;
    static const Json kAnySchema = true;
    if (has_properties) {
      for (const auto& [key, value] : s["properties"].items()) {
        const bool req = std::find(required.begin(), required.end(), key) != required.end();
        members.push_back({key, &value, ptr + "/properties/" + PointerToken(key), req});
      }
    }
    for (const std::string& r : required) {
      const bool listed =
          std::any_of(members.begin(), members.end(), [&](const Member& m) { return m.key == r; });
      if (listed) continue;
      if (additional && additional->is_boolean() && !additional->get<bool>()) {
        return Invalid(ptr + "/required", absl::StrCat("\"", r, "\" is required but not allowed"));
      }
      const Json* schema = additional && additional->is_object() ? additional : &kAnySchema;
      members.push_back({r, schema, ptr + "/additionalProperties", true});
    }
    if (members.empty() && !(additional && additional->is_boolean() && !additional->get<bool>())) {
      if (!additional || additional->is_boolean()) return nfa_.Call(AnyObjectRule());
      // A map: any keys, values of the additionalProperties schema.
      absl::StatusOr<Frag> first =
          Member_(AnyString(), *additional, ptr + "/additionalProperties", depth);
      if (!first.ok()) return first.status();
      absl::StatusOr<Frag> more =
          Member_(AnyString(), *additional, ptr + "/additionalProperties", depth);
      if (!more.ok()) return more.status();
      return nfa_.Seq({nfa_.Literal("{"),
                       nfa_.Optional(nfa_.Seq(*first, nfa_.Star(nfa_.Seq(Comma(), *more)))),
                       nfa_.Literal("}")});
    }
    // first[i]: nothing written yet before member i; rest[i]: something was.
    const Frag open = nfa_.Literal("{");
    std::vector<int32_t> first(members.size() + 1);
    std::vector<int32_t> rest(members.size() + 1);
    for (size_t i = 0; i <= members.size(); ++i) {
      first[i] = nfa_.Empty().start;
      rest[i] = nfa_.Empty().start;
    }
    nfa_.Connect(open.end, first[0]);
    for (size_t i = 0; i < members.size(); ++i) {
      const Member& m = members[i];
      absl::StatusOr<Frag> value = Value(*m.schema, m.pointer, depth + 1);
      if (!value.ok()) return value.status();
      const std::string key = Json(m.key).dump();
      const Frag key_first = nfa_.Seq(nfa_.Literal(key), Colon());
      const Frag key_rest = nfa_.Seq({Comma(), nfa_.Literal(key), Colon()});
      nfa_.Connect(first[i], key_first.start);
      nfa_.Connect(key_first.end, value->start);
      nfa_.Connect(rest[i], key_rest.start);
      nfa_.Connect(key_rest.end, value->start);
      nfa_.Connect(value->end, rest[i + 1]);
      if (!m.required) {
        nfa_.Connect(first[i], first[i + 1]);
        nfa_.Connect(rest[i], rest[i + 1]);
      }
    }
    const Frag close = nfa_.Literal("}");
    nfa_.Connect(first[members.size()], close.start);
    nfa_.Connect(rest[members.size()], close.start);
    return Frag{open.start, close.end};
  }

  // `"key":value` with the key fragment given.
  absl::StatusOr<Frag> Member_(Frag key, const Json& schema, const std::string& ptr, int depth) {
    absl::StatusOr<Frag> value = Value(schema, ptr, depth + 1);
    if (!value.ok()) return value.status();
    return nfa_.Seq({key, Colon(), *value});
  }

  absl::StatusOr<Frag> Array(const Json& s, const std::string& ptr, int depth) {
    static const Json kAnySchema = true;
    const Json* items = s.contains("items") ? &s["items"] : &kAnySchema;
    const std::string items_ptr = ptr + "/items";
    if (!items->is_object() && !items->is_boolean()) return Invalid(items_ptr, "must be a schema");
    if (s.contains("uniqueItems") &&
        !(s["uniqueItems"].is_boolean() && !s["uniqueItems"].get<bool>())) {
      return Invalid(ptr + "/uniqueItems", "uniqueItems: true is not supported");
    }
    absl::StatusOr<int64_t> min_items = Count(s, "minItems", ptr, 0);
    absl::StatusOr<int64_t> max_items = Count(s, "maxItems", ptr, -1);
    if (!min_items.ok()) return min_items.status();
    if (!max_items.ok()) return max_items.status();
    if (*max_items >= 0 && *max_items < *min_items) return Invalid(ptr, "maxItems below minItems");
    if (items->is_boolean() && !items->get<bool>()) {
      if (*min_items > 0) return Invalid(items_ptr, "items: false with minItems");
      return nfa_.Literal("[]");
    }
    absl::Status error;
    int32_t item_rule = -1;
    const auto item = [&]() -> Frag {
      if (item_rule >= 0) return nfa_.Call(item_rule);
      absl::StatusOr<Frag> f = Value(*items, items_ptr, depth + 1);
      if (!f.ok()) {
        if (error.ok()) error = f.status();
        return nfa_.Alt({});
      }
      return *f;
    };
    if (*max_items == 0) return nfa_.Literal("[]");
    const Frag open = nfa_.Literal("[");
    const Frag close = nfa_.Literal("]");
    if (*max_items < 0 && *min_items <= 1) {
      // One copy of the item with a loop back through a comma.
      const Frag one = item();
      if (!error.ok()) return error;
      const Frag comma = Comma();
      nfa_.Connect(open.end, one.start);
      if (*min_items == 0) nfa_.Connect(open.end, close.start);
      nfa_.Connect(one.end, comma.start);
      nfa_.Connect(comma.end, one.start);
      nfa_.Connect(one.end, close.start);
      return Frag{open.start, close.end};
    }
    // Counted copies. A large item becomes a rule of its own, so that nested
    // counted arrays do not multiply the automaton.
    const int32_t before = nfa_.num_states();
    const Frag first = item();
    if (!error.ok()) return error;
    const int64_t copies = std::max(*min_items, *max_items);
    // Scalars never nest, so their copies only add up: allow more of them
    // inline (a rule boundary makes every token that closes the item
    // undecided, costing a walk per step).
    const bool scalar = items->is_object() && !items->contains("$ref") &&
                        !items->contains("anyOf") &&
                        ((items->contains("type") && (*items)["type"].is_string() &&
                          (*items)["type"] != "object" && (*items)["type"] != "array") ||
                         items->contains("enum") || items->contains("const"));
    if (copies > 1 && (nfa_.num_states() - before) * copies > (scalar ? 40000 : 3000)) {
      absl::StatusOr<int32_t> rule = RuleFor(items, items_ptr);
      if (!rule.ok()) return rule.status();
      item_rule = *rule;
    }
    const auto comma_item = [&] { return nfa_.Seq(Comma(), item()); };
    const int32_t min_rest = static_cast<int32_t>(std::max<int64_t>(*min_items - 1, 0));
    const int32_t max_rest = *max_items < 0 ? -1 : static_cast<int32_t>(*max_items - 1);
    Frag body = nfa_.Seq(item_rule >= 0 ? nfa_.Call(item_rule) : first,
                         nfa_.Repeat(comma_item, min_rest, max_rest));
    if (*min_items == 0) body = nfa_.Optional(body);
    if (!error.ok()) return error;
    return nfa_.Seq({open, body, close});
  }

  // ---- rules ----

  // The rule compiling `schema` (at `pointer`), one per pointer.
  absl::StatusOr<int32_t> RuleFor(const Json* schema, const std::string& pointer) {
    auto it = pointer_rules_.find(pointer);
    if (it != pointer_rules_.end()) return it->second;
    absl::StatusOr<int32_t> rule = NewRule(pointer.empty() ? "#" : pointer);
    if (!rule.ok()) return rule.status();
    pointer_rules_[pointer] = *rule;
    pending_.push_back({*rule, schema, pointer});
    return *rule;
  }

  absl::StatusOr<int32_t> RefRule(const std::string& ref, const std::string& ptr) {
    if (ref.empty() || ref[0] != '#') {
      return Invalid(
          ptr, absl::StrCat("$ref \"", ref, "\": only local references (#...) are supported"));
    }
    const Json* at = &root_;
    std::string pointer;
    std::string_view rest = std::string_view(ref).substr(1);
    while (!rest.empty()) {
      if (rest[0] != '/')
        return Invalid(ptr, absl::StrCat("$ref \"", ref, "\" is not a JSON pointer"));
      rest.remove_prefix(1);
      const size_t slash = rest.find('/');
      const std::string_view raw = rest.substr(0, slash);
      rest = slash == std::string_view::npos ? std::string_view() : rest.substr(slash);
      std::string token;
      for (size_t i = 0; i < raw.size(); ++i) {
        if (raw[i] == '~' && i + 1 < raw.size() && (raw[i + 1] == '0' || raw[i + 1] == '1')) {
          token += raw[i + 1] == '0' ? '~' : '/';
          ++i;
        } else {
          token += raw[i];
        }
      }
      if (at->is_object() && at->contains(token)) {
        at = &(*at)[token];
      } else if (at->is_array() && !token.empty() &&
                 std::all_of(token.begin(), token.end(),
                             [](char c) { return c >= '0' && c <= '9'; }) &&
                 std::stoul(token) < at->size()) {
        at = &(*at)[std::stoul(token)];
      } else {
        return Invalid(ptr, absl::StrCat("$ref \"", ref, "\" does not resolve"));
      }
      pointer += "/" + PointerToken(token);
    }
    return RuleFor(at, pointer);
  }

  int32_t AnyObjectRule() {
    if (any_object_rule_ < 0) BuildAnyValueRules();
    return any_object_rule_;
  }
  int32_t AnyArrayRule() {
    if (any_array_rule_ < 0) BuildAnyValueRules();
    return any_array_rule_;
  }

  // Any JSON value, with objects and arrays as calls (values nest without
  // bound, up to the matcher's stack limit).
  Frag AnyValueInline() {
    return nfa_.Alt({AnyString(), *Number(Json::object(), "", false), nfa_.Literal("true"),
                     nfa_.Literal("false"), nfa_.Literal("null"), nfa_.Call(any_object_rule_),
                     nfa_.Call(any_array_rule_)});
  }

  void BuildAnyValueRules() {
    // The two rules take ids past the limit check: they are fixed cost.
    any_object_rule_ = static_cast<int32_t>(rules_.size());
    rules_.push_back({"any object", {}});
    any_array_rule_ = static_cast<int32_t>(rules_.size());
    rules_.push_back({"any array", {}});
    const auto member = [&] { return nfa_.Seq({AnyString(), Colon(), AnyValueInline()}); };
    rules_[any_object_rule_].body =
        nfa_.Seq({nfa_.Literal("{"),
                  nfa_.Optional(nfa_.Seq(member(), nfa_.Star(nfa_.Seq(Comma(), member())))),
                  nfa_.Literal("}")});
    rules_[any_array_rule_].body = nfa_.Seq(
        {nfa_.Literal("["),
         nfa_.Optional(nfa_.Seq(AnyValueInline(), nfa_.Star(nfa_.Seq(Comma(), AnyValueInline())))),
         nfa_.Literal("]")});
  }

  Frag AnyValue() {
    if (any_object_rule_ < 0) BuildAnyValueRules();
    return AnyValueInline();
  }

  // ---- values ----

  absl::StatusOr<Frag> Value(const Json& s, const std::string& ptr, int depth) {
    if (depth > options_.limits.max_schema_depth) {
      return Invalid(ptr, absl::StrCat("nested over ", options_.limits.max_schema_depth, " deep"));
    }
    if (nfa_.overflow()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "schema too large: over ", options_.limits.max_nfa_states, " automaton states"));
    }
    if (s.is_boolean()) {
      if (s.get<bool>()) return AnyValue();
      return Invalid(ptr, "schema false admits no value");
    }
    if (!s.is_object()) return Invalid(ptr, "a schema must be an object or a boolean");
    bool only_annotations = true;
    for (const auto& [key, value] : s.items()) {
      if (IsAnnotation(key)) continue;
      only_annotations = false;
      if (IsRefusedAssertion(key)) {
        return Invalid(ptr + "/" + PointerToken(key),
                       absl::StrCat("\"", key, "\" is not supported"));
      }
      if (!IsSupported(key) && options_.strict) {
        return Invalid(ptr + "/" + PointerToken(key),
                       absl::StrCat("unknown keyword \"", key, "\""));
      }
    }
    if (only_annotations) return AnyValue();
    const auto siblings_only_annotations = [&](std::string_view keyword) {
      for (const auto& [key, value] : s.items()) {
        if (key != keyword && !IsAnnotation(key) && (IsSupported(key) || options_.strict))
          return false;
      }
      return true;
    };
    if (s.contains("$ref")) {
      if (!siblings_only_annotations("$ref"))
        return Invalid(ptr + "/$ref", "keywords beside $ref are not supported");
      if (!s["$ref"].is_string()) return Invalid(ptr + "/$ref", "must be a string");
      absl::StatusOr<int32_t> rule = RefRule(s["$ref"].get<std::string>(), ptr + "/$ref");
      if (!rule.ok()) return rule.status();
      return nfa_.Call(*rule);
    }
    if (s.contains("allOf")) {
      if (!s["allOf"].is_array() || s["allOf"].size() != 1 || !siblings_only_annotations("allOf")) {
        return Invalid(ptr + "/allOf",
                       "only allOf with one schema and nothing beside it is supported");
      }
      return Value(s["allOf"][0], ptr + "/allOf/0", depth + 1);
    }
    if (s.contains("anyOf")) {
      if (!s["anyOf"].is_array() || s["anyOf"].empty())
        return Invalid(ptr + "/anyOf", "must be a non-empty array");
      if (!siblings_only_annotations("anyOf"))
        return Invalid(ptr + "/anyOf", "keywords beside anyOf are not supported");
      std::vector<Frag> alts;
      for (size_t i = 0; i < s["anyOf"].size(); ++i) {
        absl::StatusOr<Frag> f = Value(s["anyOf"][i], absl::StrCat(ptr, "/anyOf/", i), depth + 1);
        if (!f.ok()) return f.status();
        alts.push_back(*f);
      }
      return nfa_.Alt(alts);
    }
    std::vector<std::string> types;
    if (s.contains("type")) {
      if (s["type"].is_string()) {
        types.push_back(s["type"].get<std::string>());
      } else if (s["type"].is_array() && !s["type"].empty()) {
        for (const Json& t : s["type"]) {
          if (!t.is_string()) return Invalid(ptr + "/type", "must hold type names");
          types.push_back(t.get<std::string>());
        }
      } else {
        return Invalid(ptr + "/type", "must be a type name or a list of them");
      }
    }
    if (s.contains("const") || s.contains("enum")) {
      std::vector<const Json*> values;
      if (s.contains("const")) {
        values.push_back(&s["const"]);
      } else {
        if (!s["enum"].is_array() || s["enum"].empty())
          return Invalid(ptr + "/enum", "must be a non-empty array");
        for (const Json& v : s["enum"]) values.push_back(&v);
      }
      std::vector<Frag> alts;
      for (const Json* v : values) {
        if (!types.empty() && !HasType(*v, types)) continue;
        alts.push_back(nfa_.Literal(v->dump()));
      }
      if (alts.empty()) return Invalid(ptr, "no enum/const value has the schema's type");
      return nfa_.Alt(alts);
    }
    if (types.empty()) {
      // Infer the type from the keywords present.
      if (s.contains("properties") || s.contains("required") ||
          s.contains("additionalProperties")) {
        types.push_back("object");
      } else if (s.contains("items") || s.contains("minItems") || s.contains("maxItems")) {
        types.push_back("array");
      } else if (s.contains("pattern") || s.contains("format") || s.contains("minLength") ||
                 s.contains("maxLength")) {
        types.push_back("string");
      } else if (s.contains("minimum") || s.contains("maximum") || s.contains("exclusiveMinimum") ||
                 s.contains("exclusiveMaximum")) {
        types.push_back("number");
      } else {
        return AnyValue();
      }
    }
    std::vector<Frag> alts;
    for (const std::string& type : types) {
      absl::StatusOr<Frag> f = OfType(s, type, ptr, depth);
      if (!f.ok()) return f.status();
      alts.push_back(*f);
    }
    return alts.size() == 1 ? alts[0] : nfa_.Alt(alts);
  }

  static bool HasType(const Json& v, const std::vector<std::string>& types) {
    for (const std::string& t : types) {
      if ((t == "string" && v.is_string()) || (t == "object" && v.is_object()) ||
          (t == "array" && v.is_array()) || (t == "boolean" && v.is_boolean()) ||
          (t == "null" && v.is_null()) || (t == "number" && v.is_number()) ||
          (t == "integer" &&
           (v.is_number_integer() ||
            (v.is_number_float() && std::floor(v.get<double>()) == v.get<double>())))) {
        return true;
      }
    }
    return false;
  }

  absl::StatusOr<Frag> OfType(const Json& s, const std::string& type, const std::string& ptr,
                              int depth) {
    if (type == "null") return nfa_.Literal("null");
    if (type == "boolean") return nfa_.Alt({nfa_.Literal("true"), nfa_.Literal("false")});
    if (type == "string") return String(s, ptr);
    if (type == "integer") return Number(s, ptr, true);
    if (type == "number") return Number(s, ptr, false);
    if (type == "object") return Object(s, ptr, depth);
    if (type == "array") return Array(s, ptr, depth);
    return Invalid(ptr + "/type", absl::StrCat("unknown type \"", type, "\""));
  }

  const Json& root_;
  const JsonSchemaOptions& options_;
  NfaBuilder nfa_;
  std::vector<RuleSpec> rules_;
  std::vector<PendingRule> pending_;
  absl::flat_hash_map<std::string, int32_t> pointer_rules_;
  int32_t any_object_rule_ = -1;
  int32_t any_array_rule_ = -1;
};

}  // namespace

absl::StatusOr<ByteAutomaton> CompileJsonSchema(std::string_view schema_json,
                                                const JsonSchemaOptions& options) {
  Json root = Json::parse(schema_json, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) return absl::InvalidArgumentError("schema is not valid JSON");
  SchemaCompiler compiler(root, options);
  return compiler.CompileRoot();
}

absl::StatusOr<ByteAutomaton> CompileAnyJsonObject(const JsonSchemaOptions& options) {
  const Json root = Json::object();
  SchemaCompiler compiler(root, options);
  return compiler.CompileAnyObject();
}

}  // namespace tokenmill::grammar
