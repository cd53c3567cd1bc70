// Tool calls in a chat model's output: which format a model writes them in
// (recognised from its chat template), the grammar inputs that force a call
// (tool_choice "required" or a named function), and a streaming parser that
// splits generated text into content and calls (each call's name first, then
// its arguments in fragments as they are generated).
//
// Formats:
//  - kHermes (Qwen 2.5/3, Hermes 2 Pro, SmolLM 3): <tool_call>\n{"name": ...,
//    "arguments": {...}}\n</tool_call>, one block per call, content around them.
//  - kLlama3 (Llama 3.1+): the whole message is {"name": ..., "parameters":
//    {...}}, after an optional <|python_tag|>; calls may follow each other
//    (separated by whitespace or ';'). <|python_tag|> followed by anything but
//    JSON is code for the built-in interpreter: a call of "python" with
//    {"code": ...}, as llama.cpp reports it.
//  - kMistral (Mistral v0.3, Nemo, Small): [TOOL_CALLS][{"name": ...,
//    "arguments": {...}, "id": ...}, ...], or [TOOL_CALLS]name[ARGS]{...}.
// Pure; a parser is one request's, on one thread.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace tokenmill::chat {

enum class ToolCallFormat { kNone, kHermes, kLlama3, kMistral };

// "none", "hermes", "llama3_json", "mistral".
std::string_view ToolCallFormatName(ToolCallFormat format);

// The marker strings the format's parser reads ("<tool_call>",
// "</tool_call>"; "<|python_tag|>"; "[TOOL_CALLS]", "[ARGS]"). Where the
// vocabulary has them as control tokens, their text must reach the parser;
// no other control token's text need.
std::span<const std::string_view> ToolCallMarkers(ToolCallFormat format);

// The format a chat template writes tool calls in, from its text: kNone for
// templates that take no tools or write calls in a format not listed above
// (GLM's <arg_key> blocks, Command R's action lists, ...).
ToolCallFormat DetectToolCallFormat(std::string_view jinja_source);

// What constrained decoding needs to force a call: a JSON Schema of the
// call's text in the format, and literal text before and after it. Control
// tokens ([TOOL_CALLS], <|python_tag|>) are never part of it: the grammar
// emits text only, and a forced parser (ToolCallParser's `forced`) expects
// the call without them.
struct ForcedToolCall {
  std::string schema;  // JSON text
  std::string prefix;
  std::string suffix;
};

// `tools`: the request's validated OpenAI tools array. `name`: the function
// to call, or "" for any of them (tool_choice "required"). `parallel`: the
// Mistral array may hold more than one call (the other formats force one).
// Each tool's parameters go under $defs with their local $refs rewritten, so
// recursive parameter schemas keep working. kInvalidArgument for kNone or a
// name not among the tools.
absl::StatusOr<ForcedToolCall> ForcedToolCallGrammar(ToolCallFormat format,
                                                     const nlohmann::ordered_json& tools,
                                                     std::string_view name, bool parallel);

// One piece of a call as it streams: the first piece of call `index` has its
// id and name; later pieces carry argument text to append.
struct ToolCallDelta {
  int32_t index = 0;
  std::string id;
  std::string name;
  std::string arguments;
};

struct ToolCallUpdate {
  std::string content;  // text that is not a call
  std::vector<ToolCallDelta> calls;
};

// A whole call, for non-streamed responses.
struct ToolCall {
  std::string id;
  std::string name;
  std::string arguments;  // JSON text ("{}" when the model gave none)
};

class ToolCallParser {
 public:
  // `forced`: the output is calls only (tool_choice required or a function),
  // without the format's control-token marker. `parallel` false keeps the
  // first call and drops what follows it. `id_seed` makes the call ids
  // ("call_" + 24 characters; Mistral: 9 alphanumerics, as its templates
  // require of ids sent back) unique per request.
  ToolCallParser(ToolCallFormat format, bool forced, bool parallel, uint64_t id_seed);

  // Text generated since the last call. Content that may be the start of a
  // call is held back until it is known not to be.
  ToolCallUpdate Feed(std::string_view text);
  // The end of generation: held-back text is content, unless it is a call
  // whose name was already reported (a call cut by max_tokens stays a call,
  // with the arguments it got).
  ToolCallUpdate Finish();

  // Every call so far, whole.
  const std::vector<ToolCall>& calls() const { return calls_; }

 private:
  enum class State {
    kContent,      // text until the format's marker
    kLlamaStart,   // Llama 3: the message's first bytes decide
    kAfterMarker,  // after a marker: a call's start
    kArray,        // Mistral: inside [...] between calls
    kCall,         // inside a call's JSON object
    kAfterCall,    // Hermes: before </tool_call>; Llama 3: before another call
    kMistralName,  // Mistral: name until [ARGS]
    kMistralArgs,  // Mistral: the arguments value
    kPythonCode,   // Llama 3: <|python_tag|> code
    kDone,         // parallel false: nothing more
  };
  // Scans one JSON object (a call) byte by byte.
  struct ObjectScan {
    std::string text;
    int32_t depth = 0;
    bool in_string = false;
    bool escape = false;
    enum class Expect { kKey, kColon, kValue, kInValue, kAfterValue } expect = Expect::kKey;
    size_t key_begin = 0;
    std::string key;
    std::string value_key;
    size_t value_begin = 0;
    bool value_is_string = false;
    bool complete = false;
    std::optional<std::string> name;
    std::string id;
    size_t args_begin = std::string::npos;  // in text
    size_t args_end = std::string::npos;    // set when the value ends
    bool args_string = false;               // arguments given as a JSON string
    size_t args_sent = 0;                   // text offset reported so far
    bool announced = false;
  };

  void Step(char c, ToolCallUpdate& out);
  void StepContent(ToolCallUpdate& out, bool at_end);
  void StartCall();
  void ScanObjectByte(char c);
  void EndValue(size_t end);
  // Reports what the scan of the current call allows (name, argument text).
  void Report(ToolCallUpdate& out);
  // The current call ended (complete or not): records it.
  void CloseCall(ToolCallUpdate& out);
  // The current attempt was no call: its raw text becomes content.
  void Abandon(ToolCallUpdate& out);
  std::string NextId();
  void AfterCall();

  ToolCallFormat format_;
  bool parallel_;
  uint64_t id_state_;
  State state_;
  bool skip_space_ = false;  // kContent: whitespace after a call block is dropped
  std::string pending_;      // kContent / marker matching: text not yet decided
  std::string raw_;          // the current attempt's text since its marker (for Abandon)
  ObjectScan scan_;
  std::string mistral_name_;
  std::string code_;
  int32_t mistral_depth_ = 0;
  bool mistral_in_string_ = false;
  bool mistral_escape_ = false;
  bool mistral_started_ = false;
  std::vector<ToolCall> calls_;
};

}  // namespace tokenmill::chat
