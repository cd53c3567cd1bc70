#include "runtime/sampling/sampling_params.h"

#include <cmath>
#include <functional>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tokenmill::sampling {
namespace {

using ::testing::HasSubstr;

TEST(SamplingParamsTest, DefaultsAreValid) { EXPECT_TRUE(SamplingParams{}.Validate().ok()); }

struct BadCase {
  std::string field;
  std::string range;
  std::function<void(SamplingParams&)> spoil;
};

TEST(SamplingParamsTest, RejectsEachFieldOutOfRangeNamingFieldAndRange) {
  const BadCase cases[] = {
      {"temperature", "[0, 2]", [](SamplingParams& p) { p.temperature = 2.5f; }},
      {"temperature", "[0, 2]", [](SamplingParams& p) { p.temperature = -0.1f; }},
      {"temperature", "[0, 2]", [](SamplingParams& p) { p.temperature = std::nanf(""); }},
      {"top_k", "[0,", [](SamplingParams& p) { p.top_k = -1; }},
      {"top_p", "(0, 1]", [](SamplingParams& p) { p.top_p = 0.0f; }},
      {"top_p", "(0, 1]", [](SamplingParams& p) { p.top_p = 1.01f; }},
      {"min_p", "[0, 1]", [](SamplingParams& p) { p.min_p = -0.5f; }},
      {"repetition_penalty", "(0, 2]", [](SamplingParams& p) { p.repetition_penalty = 0.0f; }},
      {"frequency_penalty", "[-2, 2]", [](SamplingParams& p) { p.frequency_penalty = 2.1f; }},
      {"presence_penalty", "[-2, 2]", [](SamplingParams& p) { p.presence_penalty = -3.0f; }},
      {"logprobs", "[0, 20]", [](SamplingParams& p) { p.logprobs = 21; }},
      {"max_tokens", ">= 1", [](SamplingParams& p) { p.max_tokens = 0; }},
      {"stop_token_ids", ">= 0",
       [](SamplingParams& p) {
         p.stop_token_ids = {3, -1};
       }},
      {"stop strings", "1..256",
       [](SamplingParams& p) {
         p.stop = {"ok", ""};
       }},
      {"stop strings", "1..256", [](SamplingParams& p) { p.stop = {std::string(257, 'x')}; }},
      {"stop may hold at most 16", "", [](SamplingParams& p) { p.stop.assign(17, "x"); }},
  };
  for (const BadCase& c : cases) {
    SamplingParams params;
    c.spoil(params);
    const absl::Status status = params.Validate();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_THAT(std::string(status.message()), HasSubstr(c.field));
    EXPECT_THAT(std::string(status.message()), HasSubstr(c.range));
  }
}

TEST(SamplingParamsTest, AcceptsRangeEdges) {
  SamplingParams params;
  params.temperature = 2.0f;
  params.top_p = 1.0f;
  params.min_p = 1.0f;
  params.repetition_penalty = 2.0f;
  params.frequency_penalty = -2.0f;
  params.presence_penalty = 2.0f;
  params.logprobs = 20;
  params.stop = {"a", std::string(256, 'b')};
  EXPECT_TRUE(params.Validate().ok()) << params.Validate();
  params.temperature = 0.0f;
  EXPECT_TRUE(params.Validate().ok());
}

}  // namespace
}  // namespace tokenmill::sampling
