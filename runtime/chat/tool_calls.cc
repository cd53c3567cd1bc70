#include "runtime/chat/tool_calls.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace tokenmill::chat {
namespace {

using nlohmann::ordered_json;

constexpr std::string_view kHermesOpen = "<tool_call>";
constexpr std::string_view kHermesClose = "</tool_call>";
constexpr std::string_view kPythonTag = "<|python_tag|>";
constexpr std::string_view kMistralCalls = "[TOOL_CALLS]";
constexpr std::string_view kMistralArgs = "[ARGS]";
// A Mistral name longer than this before [ARGS] is not a name.
constexpr size_t kMaxNameBytes = 256;

bool Contains(std::string_view text, std::string_view part) {
  return text.find(part) != std::string_view::npos;
}

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// Bytes at the end of `text` that may begin `marker` (a proper prefix of it).
size_t MarkerPrefixAtEnd(std::string_view text, std::string_view marker) {
  for (size_t n = std::min(text.size(), marker.size() - 1); n > 0; --n) {
    if (text.substr(text.size() - n) == marker.substr(0, n)) return n;
  }
  return 0;
}

// A JSON string literal's value; nullopt when it is not one.
std::optional<std::string> Unquote(std::string_view literal) {
  ordered_json parsed = ordered_json::parse(literal, nullptr, /*allow_exceptions=*/false);
  if (!parsed.is_string()) return std::nullopt;
  return parsed.get<std::string>();
}

std::string_view TrimRight(std::string_view s) {
  while (!s.empty() && IsSpace(s.back())) s.remove_suffix(1);
  return s;
}

// Points every local $ref of a schema placed at `base` (a JSON pointer
// fragment such as "#/$defs/tool0") at the same place under it.
void RebaseRefs(ordered_json& node, const std::string& base) {
  if (node.is_object()) {
    for (auto it = node.begin(); it != node.end(); ++it) {
      if (it.key() == "$ref" && it->is_string()) {
        const std::string ref = it->get<std::string>();
        if (!ref.empty() && ref[0] == '#') *it = base + ref.substr(1);
      } else {
        RebaseRefs(*it, base);
      }
    }
  } else if (node.is_array()) {
    for (ordered_json& item : node) RebaseRefs(item, base);
  }
}

}  // namespace

std::string_view ToolCallFormatName(ToolCallFormat format) {
  switch (format) {
    case ToolCallFormat::kHermes:
      return "hermes";
    case ToolCallFormat::kLlama3:
      return "llama3_json";
    case ToolCallFormat::kMistral:
      return "mistral";
    case ToolCallFormat::kNone:
      break;
  }
  return "none";
}

std::span<const std::string_view> ToolCallMarkers(ToolCallFormat format) {
  static constexpr std::string_view kHermes[] = {kHermesOpen, kHermesClose};
  static constexpr std::string_view kLlama3[] = {kPythonTag};
  static constexpr std::string_view kMistral[] = {kMistralCalls, kMistralArgs};
  switch (format) {
    case ToolCallFormat::kHermes:
      return kHermes;
    case ToolCallFormat::kLlama3:
      return kLlama3;
    case ToolCallFormat::kMistral:
      return kMistral;
    case ToolCallFormat::kNone:
      break;
  }
  return {};
}

ToolCallFormat DetectToolCallFormat(std::string_view src) {
  if (!Contains(src, "tools")) return ToolCallFormat::kNone;
  if (Contains(src, kMistralCalls)) return ToolCallFormat::kMistral;
  // GLM writes <tool_call>name<arg_key>...: not JSON inside.
  if (Contains(src, kHermesOpen) && Contains(src, kHermesClose) && !Contains(src, "<arg_key>")) {
    return ToolCallFormat::kHermes;
  }
  if (Contains(src, "<|start_header_id|>") &&
      (Contains(src, kPythonTag) || Contains(src, "\"parameters\""))) {
    return ToolCallFormat::kLlama3;
  }
  return ToolCallFormat::kNone;
}

absl::StatusOr<ForcedToolCall> ForcedToolCallGrammar(ToolCallFormat format,
                                                     const ordered_json& tools,
                                                     std::string_view name, bool parallel) {
  if (format == ToolCallFormat::kNone) {
    return absl::InvalidArgumentError("the model's chat template has no tool-call format");
  }
  const char* args_key = format == ToolCallFormat::kLlama3 ? "parameters" : "arguments";
  ordered_json defs = ordered_json::object();
  ordered_json calls = ordered_json::array();
  for (size_t i = 0; i < tools.size(); ++i) {
    const ordered_json& function = tools[i]["function"];
    const std::string tool = function["name"].get<std::string>();
    if (!name.empty() && tool != name) continue;
    ordered_json parameters =
        ordered_json{{"type", "object"}, {"properties", ordered_json::object()}};
    if (auto it = function.find("parameters"); it != function.end() && !it->is_null()) {
      parameters = *it;
    }
    const std::string def = absl::StrCat("tool", i);
    RebaseRefs(parameters, "#/$defs/" + def);
    defs[def] = std::move(parameters);
    ordered_json properties = ordered_json::object();
    properties["name"] = {{"const", tool}};
    properties[args_key] = {{"$ref", "#/$defs/" + def}};
    calls.push_back({{"type", "object"},
                     {"properties", std::move(properties)},
                     {"required", {"name", args_key}},
                     {"additionalProperties", false}});
  }
  if (calls.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("no tool named '", std::string(name), "' in 'tools'"));
  }
  ordered_json call = calls.size() == 1 ? calls[0] : ordered_json{{"anyOf", std::move(calls)}};
  ForcedToolCall out;
  ordered_json schema;
  if (format == ToolCallFormat::kMistral) {
    schema = {{"type", "array"}, {"items", std::move(call)}, {"minItems", 1}};
    if (!parallel) schema["maxItems"] = 1;
  } else {
    schema = std::move(call);
    if (format == ToolCallFormat::kHermes) {
      out.prefix = std::string(kHermesOpen) + "\n";
      out.suffix = "\n" + std::string(kHermesClose);
    }
  }
  schema["$defs"] = std::move(defs);
  out.schema = schema.dump();
  return out;
}

ToolCallParser::ToolCallParser(ToolCallFormat format, bool forced, bool parallel, uint64_t id_seed)
    : format_(format), parallel_(parallel), id_state_(id_seed) {
  state_ = format == ToolCallFormat::kLlama3 ? State::kLlamaStart : State::kContent;
  if (forced && format == ToolCallFormat::kMistral) state_ = State::kAfterMarker;
}

std::string ToolCallParser::NextId() {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  const size_t length = format_ == ToolCallFormat::kMistral ? 9 : 24;
  std::string id = format_ == ToolCallFormat::kMistral ? "" : "call_";
  for (size_t i = 0; i < length; ++i) {
    // splitmix64
    uint64_t z = (id_state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    id += kAlphabet[z % 62];
  }
  return id;
}

ToolCallUpdate ToolCallParser::Feed(std::string_view text) {
  ToolCallUpdate out;
  pending_.append(text);
  StepContent(out, /*at_end=*/false);
  return out;
}

ToolCallUpdate ToolCallParser::Finish() {
  ToolCallUpdate out;
  StepContent(out, /*at_end=*/true);
  switch (state_) {
    case State::kContent:
    case State::kDone:
    case State::kAfterCall:  // a partial closing marker: dropped
      break;
    case State::kLlamaStart:
      out.content += pending_;
      break;
    case State::kCall:
    case State::kMistralArgs:
      if (scan_.announced) {
        CloseCall(out);
      } else {
        Abandon(out);
      }
      break;
    case State::kAfterMarker:
    case State::kArray:
    case State::kMistralName:
      raw_ += mistral_name_;
      Abandon(out);
      break;
    case State::kPythonCode: {
      scan_ = ObjectScan{};
      scan_.name = "python";
      scan_.text = ordered_json{{"code", code_}}.dump();
      scan_.args_begin = 0;
      scan_.args_sent = 0;
      scan_.args_end = scan_.text.size();
      CloseCall(out);
      break;
    }
  }
  pending_.clear();
  state_ = State::kDone;
  return out;
}

void ToolCallParser::StepContent(ToolCallUpdate& out, bool at_end) {
  while (!pending_.empty()) {
    switch (state_) {
      case State::kDone:
        pending_.clear();
        return;
      case State::kContent: {
        std::string_view marker = format_ == ToolCallFormat::kHermes    ? kHermesOpen
                                  : format_ == ToolCallFormat::kMistral ? kMistralCalls
                                                                        : std::string_view();
        if (skip_space_) {
          size_t i = 0;
          while (i < pending_.size() && IsSpace(pending_[i])) ++i;
          pending_.erase(0, i);
          if (pending_.empty()) return;
          skip_space_ = false;
        }
        if (marker.empty()) {
          out.content += pending_;
          pending_.clear();
          return;
        }
        const size_t at = pending_.find(marker);
        if (at != std::string::npos) {
          out.content.append(pending_, 0, at);
          raw_ = std::string(marker);
          pending_.erase(0, at + marker.size());
          state_ = State::kAfterMarker;
          continue;
        }
        const size_t keep = at_end ? 0 : MarkerPrefixAtEnd(pending_, marker);
        out.content.append(pending_, 0, pending_.size() - keep);
        pending_.erase(0, pending_.size() - keep);
        return;
      }
      case State::kLlamaStart: {
        size_t i = 0;
        while (i < pending_.size() && IsSpace(pending_[i])) ++i;
        if (i == pending_.size()) return;  // only whitespace so far
        std::string_view rest = std::string_view(pending_).substr(i);
        if (rest.starts_with(kPythonTag)) {
          raw_ = pending_.substr(0, i + kPythonTag.size());
          pending_.erase(0, i + kPythonTag.size());
          state_ = State::kAfterMarker;
          continue;
        }
        if (!at_end && rest.size() < kPythonTag.size() &&
            kPythonTag.substr(0, rest.size()) == rest) {
          return;  // may still be the tag
        }
        if (rest[0] == '{') {
          raw_ = pending_.substr(0, i);
          pending_.erase(0, i);
          StartCall();
          continue;
        }
        state_ = State::kContent;
        continue;
      }
      case State::kAfterMarker: {
        const char c = pending_[0];
        if (IsSpace(c)) {
          raw_ += c;
          pending_.erase(0, 1);
          continue;
        }
        if (c == '{' && format_ != ToolCallFormat::kMistral) {
          StartCall();
          continue;
        }
        if (format_ == ToolCallFormat::kMistral) {
          if (c == '[') {
            raw_ += c;
            pending_.erase(0, 1);
            state_ = State::kArray;
          } else {
            mistral_name_.clear();
            state_ = State::kMistralName;
          }
          continue;
        }
        if (format_ == ToolCallFormat::kLlama3) {
          code_.clear();
          state_ = State::kPythonCode;
          continue;
        }
        Abandon(out);
        continue;
      }
      case State::kArray: {
        const char c = pending_[0];
        if (IsSpace(c) || c == ',') {
          raw_ += c;
          pending_.erase(0, 1);
        } else if (c == '{') {
          StartCall();
        } else if (c == ']') {
          pending_.erase(0, 1);
          raw_.clear();
          state_ = State::kContent;
        } else {
          Abandon(out);
        }
        continue;
      }
      case State::kCall: {
        size_t used = 0;
        while (used < pending_.size() && !scan_.complete) ScanObjectByte(pending_[used++]);
        raw_.append(pending_, 0, used);
        pending_.erase(0, used);
        if (!scan_.complete) {
          Report(out);
          return;
        }
        if (!scan_.name) {
          Abandon(out);
          continue;
        }
        CloseCall(out);
        AfterCall();
        continue;
      }
      case State::kAfterCall: {
        size_t i = 0;
        while (
            i < pending_.size() &&
            (IsSpace(pending_[i]) || (format_ == ToolCallFormat::kLlama3 && pending_[i] == ';'))) {
          ++i;
        }
        if (i == pending_.size()) {
          pending_.clear();
          return;
        }
        std::string_view rest = std::string_view(pending_).substr(i);
        if (format_ == ToolCallFormat::kHermes) {
          if (rest.starts_with(kHermesClose)) {
            pending_.erase(0, i + kHermesClose.size());
            state_ = parallel_ || calls_.empty() ? State::kContent : State::kDone;
            skip_space_ = true;  // the line break after a block is not content
            continue;
          }
          if (rest.size() < kHermesClose.size() && kHermesClose.substr(0, rest.size()) == rest) {
            return;
          }
          pending_.erase(0, i);
          state_ = State::kContent;
          continue;
        }
        // Llama 3: another call, or text after the calls.
        const bool another = rest[0] == '{' && parallel_;
        pending_.erase(0, i);
        if (another) {
          raw_.clear();
          StartCall();
        } else {
          state_ = parallel_ ? State::kContent : State::kDone;
        }
        continue;
      }
      case State::kMistralName: {
        const size_t at = pending_.find(kMistralArgs);
        if (at == std::string::npos) {
          const size_t keep = MarkerPrefixAtEnd(pending_, kMistralArgs);
          mistral_name_.append(pending_, 0, pending_.size() - keep);
          pending_.erase(0, pending_.size() - keep);
          if (mistral_name_.size() > kMaxNameBytes) {
            raw_ += mistral_name_;
            Abandon(out);
            continue;
          }
          return;
        }
        mistral_name_.append(pending_, 0, at);
        raw_ += mistral_name_;
        raw_ += kMistralArgs;
        pending_.erase(0, at + kMistralArgs.size());
        std::string_view name = mistral_name_;
        while (!name.empty() && IsSpace(name.front())) name.remove_prefix(1);
        name = TrimRight(name);
        if (name.empty()) {
          Abandon(out);
          continue;
        }
        scan_ = ObjectScan{};
        scan_.name = std::string(name);
        mistral_depth_ = 0;
        mistral_in_string_ = mistral_escape_ = mistral_started_ = false;
        state_ = State::kMistralArgs;
        continue;
      }
      case State::kMistralArgs: {
        size_t used = 0;
        bool ended = false;
        while (used < pending_.size() && !ended) {
          const char c = pending_[used++];
          scan_.text += c;
          if (!mistral_started_) {
            if (IsSpace(c)) continue;
            if (c != '{' && c != '[') {
              ended = true;  // not a JSON object: no call
              break;
            }
            mistral_started_ = true;
            scan_.args_begin = scan_.args_sent = scan_.text.size() - 1;
            mistral_depth_ = 1;
            continue;
          }
          if (mistral_in_string_) {
            if (mistral_escape_) {
              mistral_escape_ = false;
            } else if (c == '\\') {
              mistral_escape_ = true;
            } else if (c == '"') {
              mistral_in_string_ = false;
            }
          } else if (c == '"') {
            mistral_in_string_ = true;
          } else if (c == '{' || c == '[') {
            ++mistral_depth_;
          } else if (c == '}' || c == ']') {
            if (--mistral_depth_ == 0) {
              scan_.args_end = scan_.text.size();
              ended = true;
            }
          }
        }
        raw_.append(pending_, 0, used);
        pending_.erase(0, used);
        if (!ended) {
          Report(out);
          return;
        }
        if (!mistral_started_) {
          Abandon(out);
          continue;
        }
        CloseCall(out);
        state_ = parallel_ ? State::kContent : State::kDone;
        continue;
      }
      case State::kPythonCode:
        code_ += pending_;
        raw_ += pending_;
        pending_.clear();
        return;
    }
  }
}

void ToolCallParser::StartCall() {
  scan_ = ObjectScan{};
  state_ = State::kCall;
}

void ToolCallParser::ScanObjectByte(char c) {
  ObjectScan& s = scan_;
  s.text += c;
  const size_t p = s.text.size() - 1;
  using Expect = ObjectScan::Expect;
  if (s.in_string) {
    if (s.escape) {
      s.escape = false;
    } else if (c == '\\') {
      s.escape = true;
    } else if (c == '"') {
      s.in_string = false;
      if (s.depth == 1 && s.expect == Expect::kKey) {
        s.key =
            Unquote(std::string_view(s.text).substr(s.key_begin, p + 1 - s.key_begin)).value_or("");
        s.expect = Expect::kColon;
      } else if (s.depth == 1 && s.expect == Expect::kInValue && s.value_is_string) {
        EndValue(p + 1);
      }
    }
    return;
  }
  auto begin_value = [&](bool is_string) {
    s.value_key = s.key;
    s.value_begin = p;
    s.value_is_string = is_string;
    s.expect = Expect::kInValue;
    if (s.key == "arguments" || s.key == "parameters") {
      s.args_begin = s.args_sent = p;
      s.args_end = std::string::npos;
      s.args_string = is_string;
    }
  };
  switch (c) {
    case ' ':
    case '\t':
    case '\n':
    case '\r':
      return;
    case '"':
      s.in_string = true;
      if (s.depth == 1 && s.expect == Expect::kKey) {
        s.key_begin = p;
      } else if (s.depth == 1 && s.expect == Expect::kValue) {
        begin_value(true);
      }
      return;
    case '{':
    case '[':
      if (s.depth == 0) {
        s.depth = 1;
        return;
      }
      if (s.depth == 1 && s.expect == Expect::kValue) begin_value(false);
      ++s.depth;
      return;
    case '}':
    case ']':
      if (s.depth == 1) {
        if (s.expect == Expect::kInValue) EndValue(p);
        s.depth = 0;
        s.complete = true;
        return;
      }
      --s.depth;
      if (s.depth == 1 && s.expect == Expect::kInValue && !s.value_is_string) EndValue(p + 1);
      return;
    case ':':
      if (s.depth == 1 && s.expect == Expect::kColon) s.expect = Expect::kValue;
      return;
    case ',':
      if (s.depth == 1) {
        if (s.expect == Expect::kInValue) EndValue(p);
        s.expect = Expect::kKey;
      }
      return;
    default:
      if (s.depth == 1 && s.expect == Expect::kValue) begin_value(false);
      return;
  }
}

void ToolCallParser::EndValue(size_t end) {
  ObjectScan& s = scan_;
  std::string_view value =
      TrimRight(std::string_view(s.text).substr(s.value_begin, end - s.value_begin));
  if (s.value_key == "name" && s.value_is_string) {
    s.name = Unquote(value);
  } else if (s.value_key == "arguments" || s.value_key == "parameters") {
    s.args_end = s.value_begin + value.size();
  }
  s.expect = ObjectScan::Expect::kAfterValue;
}

void ToolCallParser::Report(ToolCallUpdate& out) {
  ObjectScan& s = scan_;
  if (!s.name) return;
  ToolCallDelta delta;
  delta.index = static_cast<int32_t>(calls_.size());
  if (!s.announced) {
    s.announced = true;
    s.id = NextId();
    delta.id = s.id;
    delta.name = *s.name;
  }
  if (s.args_begin != std::string::npos) {
    if (s.args_string) {
      if (s.args_end != std::string::npos && s.args_sent == s.args_begin) {
        // Arguments sent as a JSON string holding the JSON: its value, once whole.
        delta.arguments =
            Unquote(std::string_view(s.text).substr(s.args_begin, s.args_end - s.args_begin))
                .value_or("");
        s.args_sent = s.args_end;
      }
    } else {
      const size_t end = s.args_end != std::string::npos ? s.args_end : s.text.size();
      if (end > s.args_sent) {
        delta.arguments = s.text.substr(s.args_sent, end - s.args_sent);
        s.args_sent = end;
      }
    }
  }
  if (!delta.name.empty() || !delta.arguments.empty()) out.calls.push_back(std::move(delta));
}

void ToolCallParser::CloseCall(ToolCallUpdate& out) {
  Report(out);
  ObjectScan& s = scan_;
  ToolCall call;
  call.id = s.id;
  call.name = *s.name;
  if (s.args_begin == std::string::npos) {
    call.arguments = "{}";
    out.calls.push_back({static_cast<int32_t>(calls_.size()), "", "", call.arguments});
  } else {
    const size_t end = s.args_end != std::string::npos ? s.args_end : s.text.size();
    std::string_view text = std::string_view(s.text).substr(s.args_begin, end - s.args_begin);
    call.arguments = s.args_string ? Unquote(text).value_or("") : std::string(text);
  }
  calls_.push_back(std::move(call));
  scan_ = ObjectScan{};
  raw_.clear();
}

void ToolCallParser::Abandon(ToolCallUpdate& out) {
  out.content += raw_;
  raw_.clear();
  scan_ = ObjectScan{};
  // Llama 3 has no marker to look for later: the rest is content.
  state_ = State::kContent;
}

void ToolCallParser::AfterCall() {
  switch (format_) {
    case ToolCallFormat::kHermes:
      state_ = State::kAfterCall;
      return;
    case ToolCallFormat::kLlama3:
      state_ = State::kAfterCall;
      return;
    case ToolCallFormat::kMistral:
      state_ = parallel_ ? State::kArray : State::kDone;
      return;
    case ToolCallFormat::kNone:
      state_ = State::kContent;
      return;
  }
}

}  // namespace tokenmill::chat
