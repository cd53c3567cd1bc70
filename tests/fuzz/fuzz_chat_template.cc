// Fuzzes chat templates: the input up to its first NUL byte is a Jinja chat
// template (as a model file would carry it), compiled with
// ChatTemplate::Create; the messages that follow (separated by \x01; each
// "role:content") are rendered and encoded as /v1/chat/completions does.
// Parse and render must fail cleanly, within the interpreter's limits, and
// the rendered text and the encoding must agree. The tokenizer is a small
// byte-level vocabulary with control tokens.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "runtime/chat/chat_template.h"
#include "runtime/tokenizer/tokenizer.h"
#include "tests/tokenizer/test_vocab.h"

namespace {

using tokenmill::chat::ChatMessage;
using tokenmill::chat::ChatTemplate;

const tokenmill::tokenizer::Tokenizer& TestTokenizer() {
  static const tokenmill::tokenizer::Tokenizer* tokenizer = [] {
    auto spec = tokenmill::tokenizer::testing::ByteLevelSpec(
        tokenmill::tokenizer::PreTokenizer::kLlama3, {{"h", "e"}, {"he", "l"}, {" ", "w"}},
        {"<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
         "<|im_start|>", "<|im_end|>", "<s>", "</s>"});
    auto created = tokenmill::tokenizer::Tokenizer::Create(spec);
    if (!created.ok()) __builtin_trap();
    return created->release();  // lives for the whole run
  }();
  return *tokenizer;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  std::string_view jinja = input;
  std::vector<ChatMessage> messages;
  if (size_t nul = input.find('\0'); nul != std::string_view::npos) {
    jinja = input.substr(0, nul);
    std::string_view rest = input.substr(nul + 1);
    while (!rest.empty()) {
      size_t end = rest.find('\x01');
      std::string_view one = rest.substr(0, end);
      size_t colon = one.find(':');
      ChatMessage m;
      m.role = std::string(one.substr(0, colon));
      if (colon != std::string_view::npos) m.content = std::string(one.substr(colon + 1));
      messages.push_back(std::move(m));
      if (end == std::string_view::npos) break;
      rest = rest.substr(end + 1);
    }
  } else {
    messages.push_back(ChatMessage{.role = "user", .content = "hello <|eot_id|>"});
  }
  auto chat = ChatTemplate::Create(jinja, "<|begin_of_text|>", "<|eot_id|>");
  if (!chat.ok()) return 0;
  auto prompt = (*chat)->Render(messages);
  auto ids = (*chat)->Encode(messages, TestTokenizer());
  // Both see the same messages: they fail together.
  if (prompt.ok() != ids.ok()) __builtin_trap();
  if (prompt.ok()) {
    // Literal spans are sorted, disjoint and inside the text.
    size_t last = 0;
    for (const auto& [begin, end] : prompt->literal_spans) {
      if (begin < last || end < begin || end > prompt->text.size()) __builtin_trap();
      last = end;
    }
  }
  return 0;
}
