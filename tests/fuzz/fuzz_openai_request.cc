// Fuzzes ParseOpenAiRequest: the JSON body of POST /v1/completions (first
// input byte even) or /v1/chat/completions (odd), then ResolveMaxTokens on
// what parsed, as the OpenAI API handler does before tokenizing. With bit 1
// of the first byte set, ParseTokenizeRequest instead: /tokenize (bit 0
// clear) or /detokenize (set).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "daemon/openai_protocol.h"
#include "daemon/tokenize.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const auto endpoint = (data[0] & 1) != 0 ? tokenmill::daemon::OpenAiEndpoint::kChatCompletions
                                           : tokenmill::daemon::OpenAiEndpoint::kCompletions;
  std::string_view body(reinterpret_cast<const char*>(data + 1), size - 1);
  if ((data[0] & 2) != 0) {
    (void)tokenmill::daemon::ParseTokenizeRequest((data[0] & 1) != 0, body);
    return 0;
  }
  auto request = tokenmill::daemon::ParseOpenAiRequest(endpoint, body);
  if (!request.ok()) return 0;
  for (int32_t prompt : {0, 1, 4095, 4096}) {
    (void)tokenmill::daemon::ResolveMaxTokens(*request, prompt, 4096);
  }
  return 0;
}
