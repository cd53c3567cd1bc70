// Fuzzes ParseHfTokenizer (tokenizer.json, then tokenizer_config.json after
// the first NUL byte of the input) and, when the files parse, builds the
// Tokenizer from them and round-trips text through it, as loading a
// safetensors model directory does.
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "runtime/tokenizer/hf_tokenizer.h"
#include "runtime/tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  std::string_view config;
  if (size_t nul = input.find('\0'); nul != std::string_view::npos) {
    config = input.substr(nul + 1);
    input = input.substr(0, nul);
  }
  auto spec = tokenmill::tokenizer::ParseHfTokenizer(input, config);
  if (!spec.ok()) return 0;
  auto tokenizer = tokenmill::tokenizer::Tokenizer::Create(*spec);
  if (!tokenizer.ok()) return 0;
  const tokenmill::tokenizer::Tokenizer& t = **tokenizer;
  // Text with what tokenizers trip on: spaces, digits, UTF-8, control text.
  constexpr std::string_view kText = "Hello  world 123 \xc3\xa9\xe4\xb8\xad\n<s></s><|eot_id|>";
  for (bool parse_special : {false, true}) {
    tokenmill::tokenizer::Tokenizer::EncodeOptions options;
    options.parse_special = parse_special;
    std::vector<int32_t> ids = t.Encode(kText, options);
    ids.push_back(-1);
    ids.push_back(t.vocab_size());
    (void)t.Decode(ids, parse_special);
    for (int32_t id : ids) {
      (void)t.TokenBytes(id);
      (void)t.TokenText(id);
      (void)t.IsEos(id);
    }
  }
  return 0;
}
