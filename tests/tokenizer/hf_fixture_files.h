// Reading the Hugging Face tokenizer fixtures (tests/tokenizer/hf_fixtures/FAMILY:
// tokenizer.json.gz, tokenizer_config.json, generation_config.json) into a
// tokenizer as the safetensors loader builds one. Shared by the parity test
// and the benchmarks that run real vocabularies.
#ifndef TOKENMILL_TESTS_TOKENIZER_HF_FIXTURE_FILES_H_
#define TOKENMILL_TESTS_TOKENIZER_HF_FIXTURE_FILES_H_

#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/status/statusor.h"
#include "runtime/tokenizer/hf_tokenizer.h"
#include "runtime/tokenizer/tokenizer.h"

namespace tokenmill::tokenizer::testing {

// The whole file, or "" when it cannot be read.
inline std::string ReadFixtureFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// The inflated contents of a gzip file, or "" when it cannot be read.
inline std::string ReadGzipFixture(const std::filesystem::path& path) {
  std::string text;
  gzFile file = gzopen(path.c_str(), "rb");
  if (file == nullptr) return text;
  char buffer[1 << 16];
  for (int n; (n = gzread(file, buffer, sizeof(buffer))) > 0;) text.append(buffer, n);
  gzclose(file);
  return text;
}

// The tokenizer of one fixture family directory. generation_config: whether
// to pass generation_config.json (its end tokens) to the parser.
inline absl::StatusOr<TokenizerPtr> LoadHfFixtureTokenizer(const std::filesystem::path& dir,
                                                           bool generation_config = true) {
  const std::string tokenizer_json = ReadGzipFixture(dir / "tokenizer.json.gz");
  if (tokenizer_json.empty()) return absl::NotFoundError((dir / "tokenizer.json.gz").string());
  absl::StatusOr<TokenizerSpec> spec = ParseHfTokenizer(
      tokenizer_json, ReadFixtureFile(dir / "tokenizer_config.json"),
      generation_config ? ReadFixtureFile(dir / "generation_config.json") : std::string());
  if (!spec.ok()) return spec.status();
  return Tokenizer::Create(*spec);
}

}  // namespace tokenmill::tokenizer::testing

#endif  // TOKENMILL_TESTS_TOKENIZER_HF_FIXTURE_FILES_H_
