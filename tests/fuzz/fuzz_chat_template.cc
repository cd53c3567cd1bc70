// Fuzzes chat templates: ChatTemplate::FromJinja on the template text (the
// input up to its first NUL byte), then rendering and encoding the messages
// that follow (separated by \x01; each "role:content") in the detected format
// and in every fixed one, as /v1/chat/completions does. The tokenizer is a
// small byte-level vocabulary with every format's control tokens.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "runtime/chat/chat_template.h"
#include "runtime/tokenizer/tokenizer.h"
#include "tests/tokenizer/test_vocab.h"

namespace {

using tokenmill::chat::ChatFormat;
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
  }
  const ChatTemplate detected = ChatTemplate::FromJinja(jinja);
  for (const ChatTemplate& t :
       {detected, ChatTemplate(ChatFormat::kPlain), ChatTemplate(ChatFormat::kLlama3),
        ChatTemplate(ChatFormat::kChatMl), ChatTemplate(ChatFormat::kLlama2)}) {
    auto text = t.Render(messages);
    auto ids = t.Encode(messages, TestTokenizer());
    // Both see the same messages: they fail together.
    if (text.ok() != ids.ok()) __builtin_trap();
    (void)t.name();
  }
  return 0;
}
