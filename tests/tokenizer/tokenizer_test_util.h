// What the tokenizer tests share: building a tokenizer that must build, and
// the encode options most expectations use.
#pragma once

#include <utility>

#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "runtime/tokenizer/tokenizer.h"

namespace tokenmill::tokenizer::testing {

// The tokenizer of `spec`, or null after a failed expectation.
inline TokenizerPtr MustCreate(const TokenizerSpec& spec) {
  absl::StatusOr<TokenizerPtr> tokenizer = Tokenizer::Create(spec);
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  return tokenizer.ok() ? *std::move(tokenizer) : nullptr;
}

// No BOS, EOS if the vocabulary has one, special names as plain text.
inline const Tokenizer::EncodeOptions kNoBos{
    .add_bos = false, .add_eos = true, .parse_special = false};

}  // namespace tokenmill::tokenizer::testing
