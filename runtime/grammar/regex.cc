#include "runtime/grammar/regex.h"

#include <algorithm>
#include <functional>
#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"

namespace tokenmill::grammar {

namespace {

constexpr uint32_t kMaxCodepoint = 0x10FFFF;
constexpr int32_t kMaxRepeatCount = 1000;

}  // namespace

CodepointSet CodepointSet::Range(uint32_t lo, uint32_t hi) {
  CodepointSet s;
  s.Add(lo, hi);
  return s;
}

void CodepointSet::Add(uint32_t lo, uint32_t hi) {
  if (lo > hi) return;
  ranges_.emplace_back(lo, hi);
  std::sort(ranges_.begin(), ranges_.end());
  std::vector<std::pair<uint32_t, uint32_t>> merged;
  for (const auto& r : ranges_) {
    if (!merged.empty() && r.first <= merged.back().second + 1) {
      merged.back().second = std::max(merged.back().second, r.second);
    } else {
      merged.push_back(r);
    }
  }
  ranges_ = std::move(merged);
}

void CodepointSet::AddSet(const CodepointSet& other) {
  for (const auto& [lo, hi] : other.ranges_) Add(lo, hi);
}

CodepointSet CodepointSet::Complement() const {
  CodepointSet out;
  uint32_t next = 0;
  for (const auto& [lo, hi] : ranges_) {
    if (lo > next) out.Add(next, lo - 1);
    next = hi + 1;
  }
  if (next <= kMaxCodepoint) out.Add(next, kMaxCodepoint);
  return out.Intersect(Range(0, 0xD7FF).Union(Range(0xE000, kMaxCodepoint)));
}

CodepointSet CodepointSet::Intersect(const CodepointSet& other) const {
  CodepointSet out;
  for (const auto& [a, b] : ranges_) {
    for (const auto& [c, d] : other.ranges_) {
      const uint32_t lo = std::max(a, c);
      const uint32_t hi = std::min(b, d);
      if (lo <= hi) out.ranges_.emplace_back(lo, hi);
    }
  }
  std::sort(out.ranges_.begin(), out.ranges_.end());
  return out;
}

CodepointSet CodepointSet::Union(const CodepointSet& other) const {
  CodepointSet out = *this;
  out.AddSet(other);
  return out;
}

CodepointSet JsonPlainChars() {
  CodepointSet s;
  s.Add(0x20, 0x21);
  s.Add(0x23, 0x5B);
  s.Add(0x5D, 0xD7FF);
  s.Add(0xE000, kMaxCodepoint);
  return s;
}

namespace {

int Utf8Encode(uint32_t cp, uint8_t* out) {
  if (cp < 0x80) {
    out[0] = static_cast<uint8_t>(cp);
    return 1;
  }
  if (cp < 0x800) {
    out[0] = static_cast<uint8_t>(0xC0 | (cp >> 6));
    out[1] = static_cast<uint8_t>(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    out[0] = static_cast<uint8_t>(0xE0 | (cp >> 12));
    out[1] = static_cast<uint8_t>(0x80 | ((cp >> 6) & 0x3F));
    out[2] = static_cast<uint8_t>(0x80 | (cp & 0x3F));
    return 3;
  }
  out[0] = static_cast<uint8_t>(0xF0 | (cp >> 18));
  out[1] = static_cast<uint8_t>(0x80 | ((cp >> 12) & 0x3F));
  out[2] = static_cast<uint8_t>(0x80 | ((cp >> 6) & 0x3F));
  out[3] = static_cast<uint8_t>(0x80 | (cp & 0x3F));
  return 4;
}

// Splits [lo, hi] (same UTF-8 length) until every byte position of the
// encodings spans a plain range, then emits one byte-range sequence each.
void Utf8Split(uint32_t lo, uint32_t hi, NfaBuilder* nfa, std::vector<NfaBuilder::Frag>* alts) {
  static constexpr uint32_t kLengthEnds[] = {0x7F, 0x7FF, 0xFFFF, kMaxCodepoint};
  for (const uint32_t end : kLengthEnds) {
    if (lo <= end && hi > end) {
      Utf8Split(lo, end, nfa, alts);
      Utf8Split(end + 1, hi, nfa, alts);
      return;
    }
  }
  for (int i = 1; i < 4; ++i) {
    const uint32_t m = (1u << (6 * i)) - 1;
    if ((lo & ~m) != (hi & ~m)) {
      if ((lo & m) != 0) {
        Utf8Split(lo, lo | m, nfa, alts);
        Utf8Split((lo | m) + 1, hi, nfa, alts);
        return;
      }
      if ((hi & m) != m) {
        Utf8Split(lo, (hi & ~m) - 1, nfa, alts);
        Utf8Split(hi & ~m, hi, nfa, alts);
        return;
      }
    }
  }
  uint8_t a[4];
  uint8_t b[4];
  const int n = Utf8Encode(lo, a);
  Utf8Encode(hi, b);
  std::vector<NfaBuilder::Frag> seq;
  for (int i = 0; i < n; ++i) seq.push_back(nfa->ByteRange(a[i], b[i]));
  alts->push_back(nfa->Seq(seq));
}

}  // namespace

NfaBuilder::Frag Utf8Set(NfaBuilder* nfa, const CodepointSet& set) {
  std::vector<NfaBuilder::Frag> alts;
  for (const auto& [lo, hi] : set.ranges()) Utf8Split(lo, hi, nfa, &alts);
  if (alts.size() == 1) return alts[0];
  return nfa->Alt(alts);
}

namespace {

struct RegexNode;
using RegexNodePtr = std::unique_ptr<RegexNode>;

struct RegexNode {
  enum Kind { kSet, kConcat, kAlt, kRepeat } kind = kConcat;
  CodepointSet set;
  std::vector<RegexNodePtr> children;
  int32_t min = 0;
  int32_t max = -1;
};

class RegexParser {
 public:
  explicit RegexParser(std::string_view text) : text_(text) {}

  absl::StatusOr<RegexNodePtr> ParseAlt(int depth) {
    if (depth > 32) return Error("groups nested over 32 deep");
    auto node = std::make_unique<RegexNode>();
    node->kind = RegexNode::kAlt;
    while (true) {
      absl::StatusOr<RegexNodePtr> branch = ParseConcat(depth);
      if (!branch.ok()) return branch.status();
      node->children.push_back(*std::move(branch));
      if (pos_ < text_.size() && text_[pos_] == '|') {
        ++pos_;
        continue;
      }
      return node;
    }
  }

  bool done() const { return pos_ >= text_.size(); }
  size_t pos() const { return pos_; }

  absl::Status Error(std::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat("pattern \"", std::string(text_),
                                                   "\": ", std::string(what), " at offset ", pos_));
  }

 private:
  absl::StatusOr<RegexNodePtr> ParseConcat(int depth) {
    auto node = std::make_unique<RegexNode>();
    node->kind = RegexNode::kConcat;
    while (pos_ < text_.size() && text_[pos_] != '|' && text_[pos_] != ')') {
      absl::StatusOr<RegexNodePtr> atom = ParseAtom(depth);
      if (!atom.ok()) return atom.status();
      absl::StatusOr<RegexNodePtr> repeated = ParseQuantifier(*std::move(atom));
      if (!repeated.ok()) return repeated.status();
      node->children.push_back(*std::move(repeated));
    }
    return node;
  }

  absl::StatusOr<RegexNodePtr> ParseQuantifier(RegexNodePtr atom) {
    if (pos_ >= text_.size()) return atom;
    int32_t min = 0;
    int32_t max = -1;
    const char c = text_[pos_];
    if (c == '*') {
      ++pos_;
    } else if (c == '+') {
      min = 1;
      ++pos_;
    } else if (c == '?') {
      max = 1;
      ++pos_;
    } else if (c == '{') {
      ++pos_;
      absl::StatusOr<int32_t> lo = ParseCount();
      if (!lo.ok()) return lo.status();
      min = *lo;
      max = *lo;
      if (pos_ < text_.size() && text_[pos_] == ',') {
        ++pos_;
        max = -1;
        if (pos_ < text_.size() && text_[pos_] != '}') {
          absl::StatusOr<int32_t> hi = ParseCount();
          if (!hi.ok()) return hi.status();
          max = *hi;
        }
      }
      if (pos_ >= text_.size() || text_[pos_] != '}') return Error("unterminated {n,m}");
      ++pos_;
      if (max >= 0 && max < min) return Error("{n,m} with m < n");
    } else {
      return atom;
    }
    if (pos_ < text_.size() && text_[pos_] == '?') ++pos_;  // lazy: same strings
    if (pos_ < text_.size() &&
        (text_[pos_] == '*' || text_[pos_] == '+' || text_[pos_] == '?' || text_[pos_] == '{')) {
      return Error("quantifier after a quantifier");
    }
    auto node = std::make_unique<RegexNode>();
    node->kind = RegexNode::kRepeat;
    node->min = min;
    node->max = max;
    node->children.push_back(std::move(atom));
    return node;
  }

  absl::StatusOr<int32_t> ParseCount() {
    int64_t n = 0;
    const size_t start = pos_;
    while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9') {
      n = n * 10 + (text_[pos_] - '0');
      if (n > kMaxRepeatCount) return Error("repeat count over 1000");
      ++pos_;
    }
    if (pos_ == start) return Error("expected a count in {}");
    return static_cast<int32_t>(n);
  }

  absl::StatusOr<RegexNodePtr> ParseAtom(int depth) {
    const char c = text_[pos_];
    auto set_node = [](CodepointSet set) {
      auto node = std::make_unique<RegexNode>();
      node->kind = RegexNode::kSet;
      node->set = std::move(set);
      return node;
    };
    if (c == '(') {
      ++pos_;
      if (text_.substr(pos_, 2) == "?:") {
        pos_ += 2;
      } else if (pos_ < text_.size() && text_[pos_] == '?') {
        return Error("lookaround and named groups are not supported");
      }
      absl::StatusOr<RegexNodePtr> inner = ParseAlt(depth + 1);
      if (!inner.ok()) return inner.status();
      if (pos_ >= text_.size() || text_[pos_] != ')') return Error("unbalanced (");
      ++pos_;
      return inner;
    }
    if (c == '[') return ParseClass();
    if (c == '.') {
      ++pos_;
      CodepointSet line_ends;
      line_ends.Add('\n', '\n');
      line_ends.Add('\r', '\r');
      line_ends.Add(0x2028, 0x2029);
      return set_node(line_ends.Complement());
    }
    if (c == '\\') {
      absl::StatusOr<CodepointSet> set = ParseEscape(/*in_class=*/false);
      if (!set.ok()) return set.status();
      return set_node(*std::move(set));
    }
    if (c == '^' || c == '$') return Error("anchor ^ or $ away from the pattern's ends");
    if (c == '*' || c == '+' || c == '?' || c == '{') return Error("quantifier without an atom");
    if (c == ')') return Error("unbalanced )");
    absl::StatusOr<uint32_t> cp = ParseLiteral();
    if (!cp.ok()) return cp.status();
    return set_node(CodepointSet::Of(*cp));
  }

  // One UTF-8 character of the pattern.
  absl::StatusOr<uint32_t> ParseLiteral() {
    const auto b0 = static_cast<uint8_t>(text_[pos_]);
    int n = b0 < 0x80 ? 1 : b0 >= 0xF0 ? 4 : b0 >= 0xE0 ? 3 : b0 >= 0xC0 ? 2 : 0;
    if (n == 0 || pos_ + n > text_.size()) return Error("invalid UTF-8");
    uint32_t cp = n == 1 ? b0 : b0 & (0x3F >> (n - 1));
    for (int i = 1; i < n; ++i) {
      const auto b = static_cast<uint8_t>(text_[pos_ + i]);
      if ((b & 0xC0) != 0x80) return Error("invalid UTF-8");
      cp = (cp << 6) | (b & 0x3F);
    }
    pos_ += n;
    return cp;
  }

  absl::StatusOr<uint32_t> ParseHex(size_t digits) {
    if (pos_ + digits > text_.size()) return Error("short hex escape");
    uint32_t v = 0;
    for (size_t i = 0; i < digits; ++i) {
      const char h = text_[pos_ + i];
      const int d = h >= '0' && h <= '9'   ? h - '0'
                    : h >= 'a' && h <= 'f' ? h - 'a' + 10
                    : h >= 'A' && h <= 'F' ? h - 'A' + 10
                                           : -1;
      if (d < 0) return Error("bad hex digit");
      v = v * 16 + d;
    }
    pos_ += digits;
    return v;
  }

  absl::StatusOr<CodepointSet> ParseEscape(bool in_class) {
    ++pos_;  // the backslash
    if (pos_ >= text_.size()) return Error("trailing backslash");
    const char c = text_[pos_++];
    CodepointSet digits = CodepointSet::Range('0', '9');
    CodepointSet word = digits;
    word.Add('A', 'Z');
    word.Add('a', 'z');
    word.Add('_', '_');
    CodepointSet space;
    for (const uint32_t cp : {0x09u, 0x0Au, 0x0Bu, 0x0Cu, 0x0Du, 0x20u, 0xA0u, 0x1680u, 0x2028u,
                              0x2029u, 0x202Fu, 0x205Fu, 0x3000u, 0xFEFFu}) {
      space.Add(cp, cp);
    }
    space.Add(0x2000, 0x200A);
    switch (c) {
      case 'd':
        return digits;
      case 'D':
        return digits.Complement();
      case 'w':
        return word;
      case 'W':
        return word.Complement();
      case 's':
        return space;
      case 'S':
        return space.Complement();
      case 't':
        return CodepointSet::Of('\t');
      case 'n':
        return CodepointSet::Of('\n');
      case 'r':
        return CodepointSet::Of('\r');
      case 'f':
        return CodepointSet::Of('\f');
      case 'v':
        return CodepointSet::Of('\v');
      case '0':
        return CodepointSet::Of(0);
      case 'x': {
        absl::StatusOr<uint32_t> v = ParseHex(2);
        if (!v.ok()) return v.status();
        return CodepointSet::Of(*v);
      }
      case 'u': {
        if (pos_ < text_.size() && text_[pos_] == '{') {
          const size_t close = text_.find('}', pos_);
          if (close == std::string_view::npos || close - pos_ - 1 > 6 || close == pos_ + 1) {
            return Error("bad \\u{...}");
          }
          ++pos_;
          absl::StatusOr<uint32_t> v = ParseHex(close - pos_);
          if (!v.ok()) return v.status();
          ++pos_;
          if (*v > kMaxCodepoint) return Error("code point out of range");
          return CodepointSet::Of(*v);
        }
        absl::StatusOr<uint32_t> v = ParseHex(4);
        if (!v.ok()) return v.status();
        if (*v >= 0xD800 && *v <= 0xDFFF) return Error("surrogate escapes are not supported");
        return CodepointSet::Of(*v);
      }
      default:
        break;
    }
    if (std::string_view("^$\\.*+?()[]{}|/").find(c) != std::string_view::npos ||
        (in_class && c == '-')) {
      return CodepointSet::Of(static_cast<uint8_t>(c));
    }
    --pos_;
    return Error(absl::StrCat("escape \\", std::string(1, c), " is not supported"));
  }

  absl::StatusOr<RegexNodePtr> ParseClass() {
    ++pos_;  // [
    bool negate = false;
    if (pos_ < text_.size() && text_[pos_] == '^') {
      negate = true;
      ++pos_;
    }
    CodepointSet set;
    bool first = true;
    while (true) {
      if (pos_ >= text_.size()) return Error("unterminated [");
      if (text_[pos_] == ']' && !first) break;
      if (text_[pos_] == ']' && first) {
        // "[]" matches nothing in ECMAScript; "[^]" everything.
        break;
      }
      first = false;
      absl::StatusOr<CodepointSet> lo = ClassAtom();
      if (!lo.ok()) return lo.status();
      if (pos_ + 1 < text_.size() && text_[pos_] == '-' && text_[pos_ + 1] != ']') {
        ++pos_;
        absl::StatusOr<CodepointSet> hi = ClassAtom();
        if (!hi.ok()) return hi.status();
        if (lo->ranges().size() != 1 || hi->ranges().size() != 1 ||
            lo->ranges()[0].first != lo->ranges()[0].second ||
            hi->ranges()[0].first != hi->ranges()[0].second) {
          return Error("class range with a class escape as an end");
        }
        if (hi->ranges()[0].first < lo->ranges()[0].first) return Error("class range out of order");
        set.Add(lo->ranges()[0].first, hi->ranges()[0].first);
      } else {
        set.AddSet(*lo);
      }
    }
    ++pos_;  // ]
    auto node = std::make_unique<RegexNode>();
    node->kind = RegexNode::kSet;
    node->set = negate ? set.Complement() : set;
    return node;
  }

  absl::StatusOr<CodepointSet> ClassAtom() {
    if (text_[pos_] == '\\') {
      if (pos_ + 1 < text_.size() && text_[pos_ + 1] == 'b') {
        pos_ += 2;
        return CodepointSet::Of(8);
      }
      return ParseEscape(/*in_class=*/true);
    }
    absl::StatusOr<uint32_t> cp = ParseLiteral();
    if (!cp.ok()) return cp.status();
    return CodepointSet::Of(*cp);
  }

  std::string_view text_;
  size_t pos_ = 0;
};

NfaBuilder::Frag Emit(const RegexNode& node, const CodepointSet& alphabet, NfaBuilder* nfa) {
  switch (node.kind) {
    case RegexNode::kSet: {
      const CodepointSet set = node.set.Intersect(alphabet);
      if (set.empty()) return nfa->Alt({});
      return Utf8Set(nfa, set);
    }
    case RegexNode::kConcat: {
      std::vector<NfaBuilder::Frag> parts;
      for (const RegexNodePtr& child : node.children) parts.push_back(Emit(*child, alphabet, nfa));
      return nfa->Seq(parts);
    }
    case RegexNode::kAlt: {
      if (node.children.size() == 1) return Emit(*node.children[0], alphabet, nfa);
      std::vector<NfaBuilder::Frag> alts;
      for (const RegexNodePtr& child : node.children) alts.push_back(Emit(*child, alphabet, nfa));
      return nfa->Alt(alts);
    }
    case RegexNode::kRepeat: {
      const RegexNode& child = *node.children[0];
      return nfa->Repeat([&] { return Emit(child, alphabet, nfa); }, node.min, node.max);
    }
  }
  return nfa->Alt({});
}

}  // namespace

absl::StatusOr<NfaBuilder::Frag> CompilePattern(std::string_view pattern,
                                                const CodepointSet& alphabet, NfaBuilder* nfa) {
  bool anchored_start = false;
  bool anchored_end = false;
  std::string_view body = pattern;
  if (!body.empty() && body.front() == '^') {
    anchored_start = true;
    body.remove_prefix(1);
  }
  if (!body.empty() && body.back() == '$') {
    size_t backslashes = 0;
    for (size_t i = body.size() - 1; i > 0 && body[i - 1] == '\\'; --i) ++backslashes;
    if (backslashes % 2 == 0) {
      anchored_end = true;
      body.remove_suffix(1);
    }
  }
  RegexParser parser(body);
  absl::StatusOr<RegexNodePtr> root = parser.ParseAlt(0);
  if (!root.ok()) return root.status();
  if (!parser.done()) return parser.Error("unbalanced )");
  if ((anchored_start || anchored_end) && (*root)->children.size() > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("pattern \"", std::string(pattern),
                     "\": top-level | with ^ or $ is not supported (group it)"));
  }
  std::vector<NfaBuilder::Frag> parts;
  if (!anchored_start) parts.push_back(nfa->Star(Utf8Set(nfa, alphabet)));
  parts.push_back(Emit(**root, alphabet, nfa));
  if (!anchored_end) parts.push_back(nfa->Star(Utf8Set(nfa, alphabet)));
  return nfa->Seq(parts);
}

absl::StatusOr<NfaBuilder::Frag> LimitCharacters(NfaBuilder::Frag body, int32_t min_chars,
                                                 int32_t max_chars, NfaBuilder* nfa) {
  // Counts run 0..cap; without an upper bound, cap (= min_chars) stands for
  // "at least min_chars".
  const int32_t cap = max_chars >= 0 ? max_chars : min_chars;
  const auto next_count = [&](int32_t count) {
    return max_chars >= 0 ? count + 1 : std::min(count + 1, cap);
  };
  absl::flat_hash_map<std::pair<int32_t, int32_t>, int32_t> product;
  std::vector<std::pair<int32_t, int32_t>> queue;
  const auto state_of = [&](int32_t state, int32_t count) {
    auto [it, inserted] = product.try_emplace({state, count}, 0);
    if (inserted) {
      it->second = nfa->Empty().start;
      queue.emplace_back(state, count);
    }
    return it->second;
  };
  const int32_t start = state_of(body.start, 0);
  const int32_t end = nfa->Empty().start;
  bool reachable_end = false;
  for (size_t i = 0; i < queue.size() && !nfa->overflow(); ++i) {
    const auto [state, count] = queue[i];
    const int32_t from = product.at({state, count});
    if (state == body.end && count >= min_chars) {
      nfa->Connect(from, end);
      reachable_end = true;
    }
    // Copied: creating states may move the builder's edge lists.
    const std::vector<NfaBuilder::Edge> edges = nfa->edges(state);
    for (const NfaBuilder::Edge& e : edges) {
      if (e.kind == NfaBuilder::Edge::kCall) {
        return absl::InvalidArgumentError("a character count over a rule call");
      }
      if (e.kind == NfaBuilder::Edge::kEpsilon) {
        nfa->Connect(from, state_of(e.to, count));
        continue;
      }
      // Continuation bytes keep the count; every other byte starts a
      // character. A range is split where it crosses 0x80 or 0xBF.
      const auto add = [&](int lo, int hi, bool starts) {
        lo = std::max<int>(lo, e.lo);
        hi = std::min<int>(hi, e.hi);
        if (lo > hi) return;
        const int32_t to_count = starts ? next_count(count) : count;
        if (to_count > cap) return;
        const int32_t to = state_of(e.to, to_count);
        nfa->ConnectBytes(product.at({state, count}), static_cast<uint8_t>(lo),
                          static_cast<uint8_t>(hi), to);
      };
      add(0x00, 0x7F, true);
      add(0x80, 0xBF, false);
      add(0xC0, 0xFF, true);
    }
  }
  if (nfa->overflow()) return NfaBuilder::Frag{start, end};  // the caller reports it
  if (!reachable_end) return absl::InvalidArgumentError("no string of that length matches");
  return NfaBuilder::Frag{start, end};
}

}  // namespace tokenmill::grammar
