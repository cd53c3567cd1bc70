#include "daemon/openai_protocol.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "daemon/api_errors.h"

namespace tokenmill::daemon {
namespace {

using nlohmann::json;
// Requests keep their members in the client's order (a schema's properties
// are emitted in it; templates print tool-call arguments in it).
using RequestJson = nlohmann::ordered_json;

#define TM_RETURN_IF_ERROR(expr)           \
  do {                                     \
    absl::Status tm_status = (expr);       \
    if (!tm_status.ok()) return tm_status; \
  } while (0)

absl::Status Bad(std::string_view param, std::string_view message) {
  return WithErrorParam(absl::InvalidArgumentError(std::string(message)), param);
}

absl::Status Unsupported(std::string_view param, std::string_view what) {
  return Bad(param,
             absl::StrCat("'", std::string(param), "': ", std::string(what), " is not supported"));
}

// Reads optional fields of a JSON object; an absent or null field leaves the
// output unchanged. Errors name the field.
class Fields {
 public:
  explicit Fields(const RequestJson& object, std::string prefix = "")
      : object_(object), prefix_(std::move(prefix)) {}

  const RequestJson* Find(std::string_view key) const {
    auto it = object_.find(key);
    if (it == object_.end() || it->is_null()) return nullptr;
    return &*it;
  }
  std::string Param(std::string_view key) const { return absl::StrCat(prefix_, std::string(key)); }

  absl::Status Number(std::string_view key, double lo, double hi, bool lo_open, float* out) const {
    const RequestJson* v = Find(key);
    if (v == nullptr) return absl::OkStatus();
    std::string param = Param(key);
    if (!v->is_number()) return Bad(param, absl::StrCat("'", param, "' must be a number"));
    double d = v->get<double>();
    if (!std::isfinite(d) || d < lo || d > hi || (lo_open && d == lo)) {
      return Bad(param, absl::StrCat("'", param, "' must be in ", lo_open ? "(" : "[", lo, ", ", hi,
                                     "], got ", d));
    }
    *out = static_cast<float>(d);
    return absl::OkStatus();
  }

  absl::Status Int(std::string_view key, int64_t lo, int64_t hi, int64_t* out) const {
    const RequestJson* v = Find(key);
    if (v == nullptr) return absl::OkStatus();
    std::string param = Param(key);
    if (!v->is_number_integer()) {
      return Bad(param, absl::StrCat("'", param, "' must be an integer"));
    }
    bool too_big = v->is_number_unsigned() &&
                   v->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
    int64_t i = too_big ? std::numeric_limits<int64_t>::max() : v->get<int64_t>();
    if (too_big || i < lo || i > hi) {
      return Bad(param, absl::StrCat("'", param, "' must be in [", lo, ", ", hi, "]"));
    }
    *out = i;
    return absl::OkStatus();
  }

  absl::Status Int32(std::string_view key, int64_t lo, int64_t hi, int32_t* out) const {
    int64_t value = *out;
    TM_RETURN_IF_ERROR(Int(key, lo, hi, &value));
    *out = static_cast<int32_t>(value);
    return absl::OkStatus();
  }

  absl::Status Bool(std::string_view key, bool* out) const {
    const RequestJson* v = Find(key);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_boolean()) {
      return Bad(Param(key), absl::StrCat("'", Param(key), "' must be a boolean"));
    }
    *out = v->get<bool>();
    return absl::OkStatus();
  }

  absl::Status String(std::string_view key, std::string* out) const {
    const RequestJson* v = Find(key);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_string()) {
      return Bad(Param(key), absl::StrCat("'", Param(key), "' must be a string"));
    }
    *out = v->get<std::string>();
    return absl::OkStatus();
  }

 private:
  const RequestJson& object_;
  std::string prefix_;
};

absl::Status ParseStop(const Fields& f, sampling::SamplingParams& sampling) {
  const RequestJson* v = f.Find("stop");
  if (v == nullptr) return absl::OkStatus();
  std::vector<std::string> stop;
  if (v->is_string()) {
    stop.push_back(v->get<std::string>());
  } else if (v->is_array()) {
    for (const RequestJson& s : *v) {
      if (!s.is_string()) return Bad("stop", "'stop' must be a string or an array of strings");
      stop.push_back(s.get<std::string>());
    }
  } else {
    return Bad("stop", "'stop' must be a string or an array of strings");
  }
  if (stop.size() > static_cast<size_t>(sampling::kMaxStopStrings)) {
    return Bad("stop", absl::StrCat("'stop' has ", stop.size(), " strings; at most ",
                                    sampling::kMaxStopStrings));
  }
  for (const std::string& s : stop) {
    if (s.empty()) return Bad("stop", "'stop' strings must not be empty");
    if (s.size() > static_cast<size_t>(sampling::kMaxStopStringBytes)) {
      return Bad("stop", absl::StrCat("'stop' strings are at most ", sampling::kMaxStopStringBytes,
                                      " bytes"));
    }
  }
  sampling.stop = std::move(stop);
  return absl::OkStatus();
}

// OpenAI's logit_bias: {"<token id>": bias, ...}, ids as decimal strings.
absl::Status ParseLogitBias(const RequestJson& v, sampling::SamplingParams& sampling) {
  if (!v.is_object()) return Bad("logit_bias", "'logit_bias' must be an object");
  if (v.size() > static_cast<size_t>(sampling::kMaxLogitBias)) {
    return Bad("logit_bias", absl::StrCat("'logit_bias' has ", v.size(), " tokens; at most ",
                                          sampling::kMaxLogitBias));
  }
  std::vector<std::pair<int32_t, float>> bias;
  bias.reserve(v.size());
  for (const auto& [key, value] : v.items()) {
    int32_t id = -1;
    const bool digits = !key.empty() && key.size() <= 10 &&
                        key.find_first_not_of("0123456789") == std::string::npos;
    if (digits && std::stoll(key) <= std::numeric_limits<int32_t>::max()) {
      id = static_cast<int32_t>(std::stoll(key));
    }
    if (id < 0) {
      return Bad("logit_bias", absl::StrCat("'logit_bias' keys must be token ids, got '",
                                            key.substr(0, 32), "'"));
    }
    if (!value.is_number() || !(value.get<double>() >= -sampling::kLogitBiasLimit &&
                                value.get<double>() <= sampling::kLogitBiasLimit)) {
      return Bad(
          "logit_bias",
          absl::StrCat("'logit_bias' values must be numbers in [-100, 100] (token ", id, ")"));
    }
    bias.emplace_back(id, static_cast<float>(value.get<double>()));
  }
  sampling.logit_bias = std::move(bias);
  return absl::OkStatus();
}

// Fields both endpoints share.
absl::Status ParseResponseFormat(const Fields& f, OpenAiRequest& r);

absl::Status ParseCommon(const Fields& f, OpenAiRequest& r) {
  const RequestJson* model = f.Find("model");
  if (model == nullptr || !model->is_string() || model->get<std::string>().empty()) {
    return Bad("model", "'model' is required and must be a non-empty string");
  }
  r.model = model->get<std::string>();

  int64_t max_tokens = 0;
  bool has_max = f.Find("max_tokens") != nullptr;
  TM_RETURN_IF_ERROR(f.Int("max_tokens", 1, std::numeric_limits<int32_t>::max(), &max_tokens));
  if (r.endpoint == OpenAiEndpoint::kChatCompletions && f.Find("max_completion_tokens")) {
    has_max = true;
    TM_RETURN_IF_ERROR(
        f.Int("max_completion_tokens", 1, std::numeric_limits<int32_t>::max(), &max_tokens));
  }
  if (has_max) r.max_tokens = static_cast<int32_t>(max_tokens);

  sampling::SamplingParams& s = r.sampling;
  TM_RETURN_IF_ERROR(f.Number("temperature", 0.0, 2.0, false, &s.temperature));
  TM_RETURN_IF_ERROR(f.Number("top_p", 0.0, 1.0, true, &s.top_p));
  TM_RETURN_IF_ERROR(f.Number("presence_penalty", -2.0, 2.0, false, &s.presence_penalty));
  TM_RETURN_IF_ERROR(f.Number("frequency_penalty", -2.0, 2.0, false, &s.frequency_penalty));
  TM_RETURN_IF_ERROR(f.Number("min_p", 0.0, 1.0, false, &s.min_p));
  TM_RETURN_IF_ERROR(f.Number("repetition_penalty", 0.0, 2.0, true, &s.repetition_penalty));
  int32_t top_k = 0;
  TM_RETURN_IF_ERROR(f.Int32("top_k", -1, std::numeric_limits<int32_t>::max(), &top_k));
  s.top_k = top_k < 0 ? 0 : top_k;  // -1 means off, as in vLLM

  TM_RETURN_IF_ERROR(f.Int32("n", 1, kMaxChoices, &r.n));

  if (const RequestJson* seed = f.Find("seed")) {
    if (!seed->is_number_integer()) return Bad("seed", "'seed' must be an integer");
    s.seed = seed->is_number_unsigned() ? seed->get<uint64_t>()
                                        : static_cast<uint64_t>(seed->get<int64_t>());
  }

  TM_RETURN_IF_ERROR(f.Bool("stream", &r.stream));
  if (const RequestJson* options = f.Find("stream_options")) {
    if (!options->is_object()) return Bad("stream_options", "'stream_options' must be an object");
    TM_RETURN_IF_ERROR(Fields(*options, "stream_options.").Bool("include_usage", &r.include_usage));
  }
  TM_RETURN_IF_ERROR(ParseStop(f, s));
  TM_RETURN_IF_ERROR(f.String("user", &r.user));
  if (r.user.size() > kMaxUserBytes) {
    return Bad("user", absl::StrCat("'user' is ", r.user.size(), " bytes; at most ", kMaxUserBytes,
                                    " are kept in the ledger"));
  }
  TM_RETURN_IF_ERROR(f.Bool("ignore_eos", &r.ignore_eos));
  TM_RETURN_IF_ERROR(ParseResponseFormat(f, r));

  if (const RequestJson* ids = f.Find("stop_token_ids")) {
    if (!ids->is_array()) return Bad("stop_token_ids", "'stop_token_ids' must be an array");
    for (const RequestJson& id : *ids) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 ||
          id.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
        return Bad("stop_token_ids", "'stop_token_ids' must hold token ids >= 0");
      }
      s.stop_token_ids.push_back(static_cast<int32_t>(id.get<int64_t>()));
    }
  }
  if (const RequestJson* bias = f.Find("logit_bias")) {
    TM_RETURN_IF_ERROR(ParseLogitBias(*bias, s));
  }
  return absl::OkStatus();
}

absl::Status ParsePrompt(const Fields& f, OpenAiRequest& r) {
  const RequestJson* prompt = f.Find("prompt");
  if (prompt == nullptr) return Bad("prompt", "'prompt' is required");
  auto tokens_from = [&](const RequestJson& array) -> absl::Status {
    for (const RequestJson& id : array) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 ||
          id.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
        return Bad("prompt", "'prompt' token ids must be integers >= 0");
      }
      r.prompt_tokens.push_back(static_cast<int32_t>(id.get<int64_t>()));
    }
    if (r.prompt_tokens.empty()) return Bad("prompt", "'prompt' must not be empty");
    return absl::OkStatus();
  };
  if (prompt->is_string()) {
    r.prompt_text = prompt->get<std::string>();
    return absl::OkStatus();
  }
  if (!prompt->is_array() || prompt->empty()) {
    return Bad("prompt", "'prompt' must be a string, an array of token ids or of one string");
  }
  const RequestJson& first = (*prompt)[0];
  if (first.is_string() || first.is_array()) {
    if (prompt->size() != 1) return Unsupported("prompt", "more than one prompt per request");
    if (first.is_string()) {
      r.prompt_text = first.get<std::string>();
      return absl::OkStatus();
    }
    return tokens_from(first);
  }
  return tokens_from(*prompt);
}

absl::Status ParseCompletionFields(const Fields& f, OpenAiRequest& r) {
  TM_RETURN_IF_ERROR(ParsePrompt(f, r));
  TM_RETURN_IF_ERROR(f.Bool("echo", &r.echo));
  int64_t best_of = 1;
  TM_RETURN_IF_ERROR(f.Int("best_of", 1, std::numeric_limits<int32_t>::max(), &best_of));
  if (best_of != 1) return Unsupported("best_of", "best_of > 1");
  std::string suffix;
  TM_RETURN_IF_ERROR(f.String("suffix", &suffix));
  if (!suffix.empty()) return Unsupported("suffix", "a suffix");
  if (f.Find("logprobs") != nullptr) {
    int32_t logprobs = 0;
    TM_RETURN_IF_ERROR(f.Int32("logprobs", 0, kMaxCompletionLogprobs, &logprobs));
    r.logprobs = true;
    r.sampling.logprobs = logprobs;
  }
  return absl::OkStatus();
}

// An assistant message's tool_calls as templates read them: OpenAI's
// [{id, type: "function", function: {name, arguments}}], with `arguments`
// (a JSON text in OpenAI's API) parsed to an object when it is one, as vLLM
// does, since templates print it with tojson.
absl::Status ParseToolCalls(const RequestJson& calls, const std::string& at,
                            nlohmann::ordered_json* out) {
  if (!calls.is_array()) return Bad(at, absl::StrCat("'", at, "' must be an array"));
  *out = nlohmann::ordered_json::array();
  for (size_t i = 0; i < calls.size(); ++i) {
    const std::string call_at = absl::StrCat(at, "[", i, "]");
    const RequestJson& call = calls[i];
    if (!call.is_object()) return Bad(call_at, absl::StrCat("'", call_at, "' must be an object"));
    auto function = call.find("function");
    if (function == call.end() || !function->is_object()) {
      return Bad(call_at + ".function", absl::StrCat("'", call_at, ".function' must be an object"));
    }
    auto name = function->find("name");
    if (name == function->end() || !name->is_string()) {
      return Bad(call_at + ".function.name",
                 absl::StrCat("'", call_at, ".function.name' must be a string"));
    }
    nlohmann::ordered_json entry = call;
    auto arguments = function->find("arguments");
    if (arguments != function->end() && arguments->is_string()) {
      nlohmann::ordered_json parsed = nlohmann::ordered_json::parse(
          arguments->get<std::string>(), nullptr, /*allow_exceptions=*/false);
      if (parsed.is_object()) entry["function"]["arguments"] = std::move(parsed);
    }
    out->push_back(std::move(entry));
  }
  return absl::OkStatus();
}

absl::Status ParseMessage(const RequestJson& message, size_t index, chat::ChatMessage& out) {
  std::string at = absl::StrCat("messages[", index, "]");
  if (!message.is_object()) return Bad(at, absl::StrCat("'", at, "' must be an object"));
  Fields f(message, at + ".");
  const RequestJson* role = f.Find("role");
  if (role == nullptr || !role->is_string()) {
    return Bad(f.Param("role"), absl::StrCat("'", f.Param("role"), "' must be a string"));
  }
  out.role = role->get<std::string>();
  if (out.role != "system" && out.role != "developer" && out.role != "user" &&
      out.role != "assistant" && out.role != "tool") {
    return Bad(f.Param("role"), absl::StrCat("'", f.Param("role"), "': role '", out.role,
                                             "' is not supported (system, developer, user, "
                                             "assistant, tool)"));
  }
  // Every other field goes to the chat template as sent (tool_call_id,
  // name, reasoning_content, ...); the template decides what it reads.
  out.fields = nlohmann::ordered_json::object();
  for (const auto& [key, value] : message.items()) {
    if (key == "role" || key == "content" || key == "tool_calls") continue;
    out.fields[key] = value;
  }
  if (const RequestJson* calls = f.Find("tool_calls"); calls != nullptr) {
    if (out.role != "assistant") {
      return Bad(f.Param("tool_calls"), absl::StrCat("'", f.Param("tool_calls"),
                                                     "' is only allowed on assistant messages"));
    }
    TM_RETURN_IF_ERROR(ParseToolCalls(*calls, f.Param("tool_calls"), &out.fields["tool_calls"]));
  }
  if (out.role == "tool") {
    const RequestJson* id = f.Find("tool_call_id");
    if (id == nullptr || !id->is_string()) {
      return Bad(f.Param("tool_call_id"),
                 absl::StrCat("'", f.Param("tool_call_id"), "' must be a string"));
    }
  }
  const RequestJson* content = f.Find("content");
  if (content == nullptr || content->is_null()) {
    // OpenAI allows a null content on assistant messages (with tool_calls,
    // or a refusal).
    if (out.role == "assistant") {
      out.content_null = true;
      return absl::OkStatus();
    }
    return Bad(f.Param("content"), absl::StrCat("'", f.Param("content"), "' is required"));
  }
  if (content->is_string()) {
    out.content = content->get<std::string>();
    return absl::OkStatus();
  }
  if (!content->is_array()) {
    return Bad(f.Param("content"),
               absl::StrCat("'", f.Param("content"), "' must be a string or an array of parts"));
  }
  for (size_t j = 0; j < content->size(); ++j) {
    const RequestJson& part = (*content)[j];
    std::string part_at = absl::StrCat(at, ".content[", j, "]");
    if (!part.is_object()) return Bad(part_at, absl::StrCat("'", part_at, "' must be an object"));
    auto type = part.find("type");
    if (type == part.end() || !type->is_string()) {
      return Bad(part_at + ".type", absl::StrCat("'", part_at, ".type' must be a string"));
    }
    if (*type != "text") {
      return Unsupported(part_at + ".type",
                         absl::StrCat("content of type '", type->get<std::string>(), "'"));
    }
    auto text = part.find("text");
    if (text == part.end() || !text->is_string()) {
      return Bad(part_at + ".text", absl::StrCat("'", part_at, ".text' must be a string"));
    }
    out.content += text->get<std::string>();
  }
  return absl::OkStatus();
}

// OpenAI's response_format: {"type": "text" | "json_object"} or {"type":
// "json_schema", "json_schema": {"name", "schema", "strict"}}. The schema is
// checked when it is compiled (ModelInstance::Grammar), not here.
absl::Status ParseResponseFormat(const Fields& f, OpenAiRequest& r) {
  const RequestJson* format = f.Find("response_format");
  if (format == nullptr) return absl::OkStatus();
  if (!format->is_object()) return Bad("response_format", "'response_format' must be an object");
  auto type = format->find("type");
  if (type == format->end() || !type->is_string()) {
    return Bad("response_format.type", "'response_format.type' must be a string");
  }
  if (*type == "text") return absl::OkStatus();
  grammar::OutputConstraint constraint;
  if (*type == "json_object") {
    constraint.kind = grammar::OutputConstraint::Kind::kJsonObject;
  } else if (*type == "json_schema") {
    auto spec = format->find("json_schema");
    if (spec == format->end() || !spec->is_object()) {
      return Bad("response_format.json_schema",
                 "'response_format.json_schema' must be an object with 'name' and 'schema'");
    }
    auto name = spec->find("name");
    if (name == spec->end() || !name->is_string() || name->get_ref<const std::string&>().empty() ||
        name->get_ref<const std::string&>().size() > 64) {
      return Bad("response_format.json_schema.name",
                 "'response_format.json_schema.name' must be a string of 1 to 64 characters");
    }
    auto schema = spec->find("schema");
    if (schema == spec->end() || !(schema->is_object() || schema->is_boolean())) {
      return Bad("response_format.json_schema.schema",
                 "'response_format.json_schema.schema' must be a JSON Schema object");
    }
    auto strict = spec->find("strict");
    if (strict != spec->end() && !strict->is_null() && !strict->is_boolean()) {
      return Bad("response_format.json_schema.strict",
                 "'response_format.json_schema.strict' must be a boolean");
    }
    constraint.kind = grammar::OutputConstraint::Kind::kJsonSchema;
    constraint.schema = schema->dump();
    constraint.strict = strict != spec->end() && strict->is_boolean() && strict->get<bool>();
  } else {
    return Unsupported("response_format.type",
                       absl::StrCat("response format '", type->get<std::string>(), "'"));
  }
  r.response_format = std::move(constraint);
  return absl::OkStatus();
}

bool IsFunctionName(const std::string& name) {
  return !name.empty() && name.size() <= kMaxToolNameBytes &&
         std::all_of(name.begin(), name.end(), [](char c) {
           return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '-';
         });
}

// OpenAI's tools ([{"type":"function","function":{"name","description",
// "parameters","strict"}}]), tool_choice and parallel_tool_calls. The
// parameters' schemas are checked when a forced call compiles them.
absl::Status ParseTools(const Fields& f, OpenAiRequest& r) {
  const RequestJson* tools = f.Find("tools");
  if (tools != nullptr) {
    if (!tools->is_array()) return Bad("tools", "'tools' must be an array");
    if (tools->size() > kMaxTools) {
      return Bad("tools",
                 absl::StrCat("'tools' has ", tools->size(), " tools; at most ", kMaxTools));
    }
    std::vector<std::string> names;
    for (size_t i = 0; i < tools->size(); ++i) {
      const std::string at = absl::StrCat("tools[", i, "]");
      const RequestJson& tool = (*tools)[i];
      if (!tool.is_object() || tool.value("type", "") != "function") {
        return Bad(at + ".type", absl::StrCat("'", at, ".type' must be \"function\""));
      }
      auto function = tool.find("function");
      if (function == tool.end() || !function->is_object()) {
        return Bad(at + ".function", absl::StrCat("'", at, ".function' must be an object"));
      }
      auto name = function->find("name");
      if (name == function->end() || !name->is_string() ||
          !IsFunctionName(name->get<std::string>())) {
        return Bad(at + ".function.name",
                   absl::StrCat("'", at, ".function.name' must be 1 to ", kMaxToolNameBytes,
                                " characters of a-z, A-Z, 0-9, _ and -"));
      }
      if (std::find(names.begin(), names.end(), name->get<std::string>()) != names.end()) {
        return Bad(at + ".function.name", absl::StrCat("'", at, ".function.name': a second tool '",
                                                       name->get<std::string>(), "'"));
      }
      names.push_back(name->get<std::string>());
      auto description = function->find("description");
      if (description != function->end() && !description->is_null() && !description->is_string()) {
        return Bad(at + ".function.description",
                   absl::StrCat("'", at, ".function.description' must be a string"));
      }
      auto parameters = function->find("parameters");
      if (parameters != function->end() && !parameters->is_null() && !parameters->is_object()) {
        return Bad(at + ".function.parameters",
                   absl::StrCat("'", at, ".function.parameters' must be a JSON Schema object"));
      }
    }
    if (!tools->empty()) {
      r.tools = *tools;
      r.tool_choice = OpenAiRequest::ToolChoice::kAuto;
    }
  }
  TM_RETURN_IF_ERROR(f.Bool("parallel_tool_calls", &r.parallel_tool_calls));
  const RequestJson* choice = f.Find("tool_choice");
  if (choice == nullptr) return absl::OkStatus();
  using ToolChoice = OpenAiRequest::ToolChoice;
  if (choice->is_string()) {
    const std::string mode = choice->get<std::string>();
    if (mode == "none") {
      r.tool_choice = ToolChoice::kNone;
      return absl::OkStatus();
    }
    if (mode != "auto" && mode != "required") {
      return Bad("tool_choice",
                 "'tool_choice' must be \"none\", \"auto\", \"required\" or "
                 "{\"type\": \"function\", \"function\": {\"name\": ...}}");
    }
    if (r.tools.is_null()) {
      return Bad("tool_choice", absl::StrCat("'tool_choice' \"", mode, "\" needs 'tools'"));
    }
    r.tool_choice = mode == "auto" ? ToolChoice::kAuto : ToolChoice::kRequired;
    return absl::OkStatus();
  }
  const RequestJson* name = nullptr;
  if (choice->is_object() && choice->value("type", "") == "function") {
    auto function = choice->find("function");
    if (function != choice->end() && function->is_object()) {
      auto it = function->find("name");
      if (it != function->end() && it->is_string()) name = &*it;
    }
  }
  if (name == nullptr) {
    return Bad("tool_choice",
               "'tool_choice' must be \"none\", \"auto\", \"required\" or {\"type\": "
               "\"function\", \"function\": {\"name\": ...}}");
  }
  const std::string wanted = name->get<std::string>();
  bool known = false;
  if (r.tools.is_array()) {
    for (const auto& tool : r.tools) known = known || tool["function"]["name"] == wanted;
  }
  if (!known) {
    return Bad("tool_choice", absl::StrCat("'tool_choice' names '", wanted.substr(0, 64),
                                           "', which is not in 'tools'"));
  }
  r.tool_choice = ToolChoice::kFunction;
  r.tool_choice_name = wanted;
  return absl::OkStatus();
}

absl::Status ParseChatFields(const Fields& f, OpenAiRequest& r) {
  const RequestJson* messages = f.Find("messages");
  if (messages == nullptr) {
    return Bad("messages", "'messages' is required and must be a non-empty array");
  }
  TM_RETURN_IF_ERROR(ParseChatMessages(*messages, r.messages));
  TM_RETURN_IF_ERROR(f.Bool("logprobs", &r.logprobs));
  if (f.Find("top_logprobs") != nullptr) {
    TM_RETURN_IF_ERROR(f.Int32("top_logprobs", 0, sampling::kMaxLogprobs, &r.sampling.logprobs));
    if (!r.logprobs) return Bad("top_logprobs", "'top_logprobs' requires 'logprobs': true");
  }
  TM_RETURN_IF_ERROR(ParseTools(f, r));
  if (const RequestJson* functions = f.Find("functions");
      functions != nullptr && !functions->empty()) {
    return Unsupported("functions", "the deprecated 'functions' (use 'tools')");
  }
  if (const RequestJson* call = f.Find("function_call"); call != nullptr && *call != "none") {
    return Unsupported("function_call", "the deprecated 'function_call' (use 'tool_choice')");
  }
  if (const RequestJson* modalities = f.Find("modalities")) {
    if (!modalities->is_array() || modalities->size() != 1 || (*modalities)[0] != "text") {
      return Unsupported("modalities", "output other than text");
    }
  }
  if (f.Find("audio") != nullptr) return Unsupported("audio", "audio output");
  return absl::OkStatus();
}

}  // namespace

absl::Status ParseChatMessages(const RequestJson& messages, std::vector<chat::ChatMessage>& out) {
  if (!messages.is_array() || messages.empty()) {
    return Bad("messages", "'messages' is required and must be a non-empty array");
  }
  out.resize(messages.size());
  for (size_t i = 0; i < messages.size(); ++i) {
    TM_RETURN_IF_ERROR(ParseMessage(messages[i], i, out[i]));
  }
  return absl::OkStatus();
}

absl::StatusOr<OpenAiRequest> ParseOpenAiRequest(OpenAiEndpoint endpoint, std::string_view body) {
  RequestJson parsed =
      RequestJson::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) return Bad("", "the request body is not valid JSON");
  if (!parsed.is_object()) return Bad("", "the request body must be a JSON object");
  OpenAiRequest request;
  request.endpoint = endpoint;
  Fields fields(parsed);
  TM_RETURN_IF_ERROR(ParseCommon(fields, request));
  if (endpoint == OpenAiEndpoint::kCompletions) {
    TM_RETURN_IF_ERROR(ParseCompletionFields(fields, request));
  } else {
    TM_RETURN_IF_ERROR(ParseChatFields(fields, request));
  }
  // A backstop: the checks above keep every field in the sampler's ranges.
  if (absl::Status valid = request.sampling.Validate(); !valid.ok()) {
    return WithErrorParam(valid, "");
  }
  return request;
}

absl::StatusOr<int32_t> ResolveMaxTokens(const OpenAiRequest& request, int32_t prompt_tokens,
                                         int32_t context) {
  const char* prompt_param =
      request.endpoint == OpenAiEndpoint::kCompletions ? "prompt" : "messages";
  if (prompt_tokens >= context) {
    return Bad(prompt_param,
               absl::StrCat("the prompt is ", prompt_tokens, " tokens; the model's context is ",
                            context, " tokens, which leaves no room to generate"));
  }
  int32_t room = context - prompt_tokens;
  if (request.max_tokens) {
    if (*request.max_tokens > room) {
      return Bad("max_tokens",
                 absl::StrCat("max_tokens ", *request.max_tokens, " + prompt ", prompt_tokens,
                              " tokens exceed the model's context of ", context, " tokens"));
    }
    return *request.max_tokens;
  }
  if (request.endpoint == OpenAiEndpoint::kCompletions) {
    return std::min(kDefaultCompletionMaxTokens, room);
  }
  return room;
}

namespace {

// Whether `text` is complete, valid UTF-8 (no overlongs, surrogates or
// code points past U+10FFFF).
bool IsValidUtf8(std::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    unsigned char c = static_cast<unsigned char>(text[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
    if (n == 0 || i + n > text.size()) return false;
    uint32_t cp = n == 1 ? c : c & (0x7f >> n);
    for (size_t k = 1; k < n; ++k) {
      unsigned char cc = static_cast<unsigned char>(text[i + k]);
      if ((cc & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += n;
  }
  return true;
}

std::string TokenBytes(const tokenizer::Tokenizer& tokenizer, int32_t id) {
  std::string bytes = tokenizer.TokenBytes(id);
  if (!bytes.empty()) return bytes;
  return std::string(tokenizer.TokenText(id));  // control tokens by their name
}

std::string ShownToken(const std::string& bytes) {
  if (IsValidUtf8(bytes)) return bytes;
  std::string shown = "bytes:";
  for (unsigned char c : bytes) absl::StrAppend(&shown, "\\x", absl::Hex(c, absl::kZeroPad2));
  return shown;
}

}  // namespace

std::string LogprobTokenText(const tokenizer::Tokenizer& tokenizer, int32_t id) {
  return ShownToken(TokenBytes(tokenizer, id));
}

LogprobEntry MakeLogprobEntry(const runtime::GeneratedToken& token,
                              const tokenizer::Tokenizer& tokenizer) {
  LogprobEntry entry;
  entry.bytes = TokenBytes(tokenizer, token.id);
  entry.token = ShownToken(entry.bytes);
  entry.logprob = token.logprob;
  entry.top.reserve(token.top.size());
  for (const sampling::TokenLogprob& alt : token.top) {
    std::string bytes = TokenBytes(tokenizer, alt.token);
    entry.top.push_back({ShownToken(bytes), bytes, alt.logprob});
  }
  return entry;
}

json CompletionLogprobsJson(std::span<const LogprobEntry> entries, int64_t* text_offset) {
  json tokens = json::array(), logprobs = json::array(), top = json::array(),
       offsets = json::array();
  for (const LogprobEntry& e : entries) {
    tokens.push_back(e.token);
    if (std::isnan(e.logprob)) {
      logprobs.push_back(nullptr);
      top.push_back(nullptr);
    } else {
      logprobs.push_back(e.logprob);
      json alternatives = json::object();
      for (const auto& alt : e.top) alternatives[alt.token] = alt.logprob;
      top.push_back(std::move(alternatives));
    }
    offsets.push_back(*text_offset);
    *text_offset += static_cast<int64_t>(e.bytes.size());
  }
  return {{"tokens", std::move(tokens)},
          {"token_logprobs", std::move(logprobs)},
          {"top_logprobs", std::move(top)},
          {"text_offset", std::move(offsets)}};
}

namespace {

json Bytes(const std::string& text) {
  json bytes = json::array();
  for (unsigned char c : text) bytes.push_back(static_cast<int>(c));
  return bytes;
}

}  // namespace

json ChatLogprobsJson(std::span<const LogprobEntry> entries) {
  json content = json::array();
  for (const LogprobEntry& e : entries) {
    json top = json::array();
    for (const auto& alt : e.top) {
      top.push_back({{"token", alt.token}, {"logprob", alt.logprob}, {"bytes", Bytes(alt.bytes)}});
    }
    content.push_back({{"token", e.token},
                       {"logprob", e.logprob},
                       {"bytes", Bytes(e.bytes)},
                       {"top_logprobs", std::move(top)}});
  }
  return {{"content", std::move(content)}};
}

std::string OpenAiFinishReason(runtime::FinishReason reason) {
  return reason == runtime::FinishReason::kLength ? "length" : "stop";
}

json UsageJson(const runtime::GenerationUsage& usage) {
  return {{"prompt_tokens", usage.prompt_tokens},
          {"completion_tokens", usage.completion_tokens},
          {"total_tokens", usage.prompt_tokens + usage.completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", usage.cached_tokens}}}};
}

namespace {

bool IsChat(const ResponseMeta& meta) { return meta.endpoint == OpenAiEndpoint::kChatCompletions; }

json Envelope(const ResponseMeta& meta, const char* object) {
  return {{"id", meta.id}, {"object", object}, {"created", meta.created}, {"model", meta.model}};
}

void AddFinish(json& choice, std::optional<runtime::FinishReason> finish, bool called_tools) {
  if (!finish) {
    choice["finish_reason"] = nullptr;
    return;
  }
  choice["finish_reason"] = called_tools && *finish == runtime::FinishReason::kStop
                                ? "tool_calls"
                                : OpenAiFinishReason(*finish);
  if (*finish == runtime::FinishReason::kDeadline) choice["tokenmill_finish"] = "deadline";
}

}  // namespace

json ToolCallsJson(std::span<const chat::ToolCall> calls) {
  json out = json::array();
  for (const chat::ToolCall& call : calls) {
    out.push_back({{"id", call.id},
                   {"type", "function"},
                   {"function", {{"name", call.name}, {"arguments", call.arguments}}}});
  }
  return out;
}

json ToolCallDeltasJson(std::span<const chat::ToolCallDelta> deltas) {
  json out = json::array();
  for (const chat::ToolCallDelta& d : deltas) {
    if (!d.name.empty()) {
      out.push_back({{"index", d.index},
                     {"id", d.id},
                     {"type", "function"},
                     {"function", {{"name", d.name}, {"arguments", d.arguments}}}});
    } else {
      out.push_back({{"index", d.index}, {"function", {{"arguments", d.arguments}}}});
    }
  }
  return out;
}

json ChoiceJson(const ResponseMeta& meta, int32_t index, const std::string& text,
                runtime::FinishReason reason, json logprobs, json tool_calls) {
  json choice = {{"index", index}};
  const bool called_tools = tool_calls.is_array() && !tool_calls.empty();
  if (IsChat(meta)) {
    choice["message"] = {{"role", "assistant"}, {"content", text}};
    if (called_tools) {
      if (text.empty()) choice["message"]["content"] = nullptr;
      choice["message"]["tool_calls"] = std::move(tool_calls);
    }
  } else {
    choice["text"] = text;
  }
  choice["logprobs"] = std::move(logprobs);
  AddFinish(choice, reason, called_tools);
  return choice;
}

json ResponseJson(const ResponseMeta& meta, json choices, const runtime::GenerationUsage& usage) {
  json body = Envelope(meta, IsChat(meta) ? "chat.completion" : "text_completion");
  body["choices"] = std::move(choices);
  body["usage"] = UsageJson(usage);
  return body;
}

json ChunkJson(const ResponseMeta& meta, const ChunkContent& content, bool usage_null) {
  json body = Envelope(meta, IsChat(meta) ? "chat.completion.chunk" : "text_completion");
  json choice = {{"index", content.index}};
  if (IsChat(meta)) {
    if (content.role_chunk) {
      choice["delta"] = {{"role", "assistant"}, {"content", ""}};
    } else if (content.text.empty() && (content.finish || !content.tool_calls.is_null())) {
      choice["delta"] = json::object();
    } else {
      choice["delta"] = {{"content", content.text}};
    }
    if (!content.tool_calls.is_null()) choice["delta"]["tool_calls"] = content.tool_calls;
  } else {
    choice["text"] = content.text;
  }
  choice["logprobs"] = content.logprobs;
  AddFinish(choice, content.finish, content.called_tools);
  body["choices"] = json::array({std::move(choice)});
  if (usage_null) body["usage"] = nullptr;
  return body;
}

json UsageChunkJson(const ResponseMeta& meta, const runtime::GenerationUsage& usage) {
  json body = Envelope(meta, IsChat(meta) ? "chat.completion.chunk" : "text_completion");
  body["choices"] = json::array();
  body["usage"] = UsageJson(usage);
  return body;
}

std::string SseData(const json& value) { return absl::StrCat("data: ", DumpJson(value), "\n\n"); }

bool IsClientRequestId(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  return std::all_of(id.begin(), id.end(), [](char c) { return c > 0x20 && c < 0x7f; });
}

std::string UuidV7(std::chrono::system_clock::time_point now, uint64_t random_a,
                   uint64_t random_b) {
  uint64_t ms = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count());
  // 48 bits of time, version 7, 12 random bits; variant 0b10, 62 random bits.
  uint64_t high = (ms << 16) | 0x7000 | (random_a & 0x0fff);
  uint64_t low = (random_b & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;
  std::string hex =
      absl::StrCat(absl::Hex(high, absl::kZeroPad16), absl::Hex(low, absl::kZeroPad16));
  return absl::StrCat(hex.substr(0, 8), "-", hex.substr(8, 4), "-", hex.substr(12, 4), "-",
                      hex.substr(16, 4), "-", hex.substr(20, 12));
}

json ModelObjectJson(const std::string& id, int64_t created, const std::string& chat_template,
                     const std::string& tool_calls) {
  return {{"id", id},
          {"object", "model"},
          {"created", created},
          {"owned_by", "tokenmill"},
          {"chat_template", chat_template},
          {"tool_calls", tool_calls}};
}

}  // namespace tokenmill::daemon
