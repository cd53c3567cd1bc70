// Shared helpers for the grammar tests: a small vocabulary, compiling a
// schema for it, and checking whole documents against a matcher.
#ifndef TOKENMILL_TESTS_GRAMMAR_GRAMMAR_TEST_UTIL_H_
#define TOKENMILL_TESTS_GRAMMAR_GRAMMAR_TEST_UTIL_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/grammar/compiled_grammar.h"
#include "runtime/grammar/grammar_matcher.h"

namespace tokenmill::grammar::testing {

// Every single byte (ids 0-255), a few multi-byte tokens that cross JSON
// structure, a control token (no bytes) and an EOS token.
inline std::shared_ptr<const TokenVocabulary> SmallVocabulary() {
  std::vector<std::string> tokens;
  for (int b = 0; b < 256; ++b) tokens.push_back(std::string(1, static_cast<char>(b)));
  for (const char* t : {"{\"",   "\":",     "\",",  "\"}",   "},",      "}}",    "]}",   "],",
                        "}]",    "true",    "null", "false", "12",      "abc",   "\\\"", "\"]",
                        "\":\"", "\",\"",   ", \"", "\": ",  "{\"a\":", "1.",    ".5",   "-1",
                        "ab\"}", "\":[",    "[{",   "{}",    "[]",      "2024-", "T12:", "@ex",
                        ".com",  "\\u00e9", "é",    "🙂",  "\"}]}",   "},{\"", "00",   "999"}) {
    tokens.push_back(t);
  }
  tokens.push_back("");  // a control token
  tokens.push_back("");  // EOS
  const int32_t eos = static_cast<int32_t>(tokens.size()) - 1;
  return std::make_shared<const TokenVocabulary>(std::move(tokens), std::vector<int32_t>{eos});
}

inline CompiledGrammarPtr MustCompile(const std::string& schema,
                                      const std::shared_ptr<const TokenVocabulary>& vocab,
                                      JsonSchemaOptions options = {}) {
  absl::StatusOr<CompiledGrammarPtr> g = CompileJsonSchemaGrammar(schema, options, vocab);
  if (!g.ok()) {
    ADD_FAILURE() << schema << ": " << g.status();
    return nullptr;
  }
  return *g;
}

// Feeds doc through AcceptToken (the path decoding runs), one single-byte
// token per byte; stops at the first refused byte and returns its error.
inline absl::Status AcceptByteTokens(GrammarMatcher& m, std::string_view doc) {
  const TokenVocabulary& v = m.grammar().vocabulary();
  for (const char c : doc) {
    const int32_t id = v.byte_token(static_cast<uint8_t>(c));
    if (id < 0) return absl::FailedPreconditionError("the vocabulary lacks a single-byte token");
    if (absl::Status s = m.AcceptToken(id); !s.ok()) return s;
  }
  return absl::OkStatus();
}

// The whole document is accepted and completes the grammar.
inline bool AcceptsDocument(const CompiledGrammarPtr& g, const std::string& doc) {
  GrammarMatcher m(g);
  return AcceptByteTokens(m, doc).ok() && m.IsComplete();
}

}  // namespace tokenmill::grammar::testing

#endif  // TOKENMILL_TESTS_GRAMMAR_GRAMMAR_TEST_UTIL_H_
