// SSE parsing for `tokenmill generate`: events split across any chunk
// boundary, completion and chat events, and the summary line.
#include "daemon/cli/sse.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tokenmill::cli {
namespace {

using ::testing::ElementsAre;

std::vector<std::string> Split(const std::vector<std::string>& chunks) {
  SseLineSplitter splitter;
  std::vector<std::string> events;
  auto on_event = [&](std::string_view data) { events.emplace_back(data); };
  for (const std::string& chunk : chunks) splitter.Feed(chunk, on_event);
  splitter.Finish(on_event);
  return events;
}

TEST(SseLineSplitterTest, EventsSurviveEverySplitPoint) {
  const std::string stream =
      ": keep-alive\r\n\r\ndata: {\"a\":1}\r\n\r\nevent: x\nid: 7\ndata:{\"b\":2}\n\n"
      "data: one\ndata: two\n\ndata: [DONE]\n\n";
  const std::vector<std::string> expected = {"{\"a\":1}", "{\"b\":2}", "one\ntwo", "[DONE]"};
  EXPECT_EQ(Split({stream}), expected);
  for (size_t cut = 0; cut <= stream.size(); ++cut) {
    EXPECT_EQ(Split({stream.substr(0, cut), stream.substr(cut)}), expected) << "cut at " << cut;
  }
  std::vector<std::string> bytes;
  for (char c : stream) bytes.emplace_back(1, c);
  EXPECT_EQ(Split(bytes), expected);
}

TEST(SseLineSplitterTest, CarriageReturnsAloneEndLinesToo) {
  EXPECT_THAT(Split({"data: a\r\rdata: b\r", "\r"}), ElementsAre("a", "b"));
  // "\r" then "\n" in the next chunk is one line end, not a blank line.
  EXPECT_THAT(Split({"data: a\r", "\ndata: b\n\n"}), ElementsAre("a\nb"));
}

TEST(SseLineSplitterTest, FinishHandsOverAnUnterminatedEvent) {
  EXPECT_THAT(Split({"data: [DO", "NE]"}), ElementsAre("[DONE]"));
  EXPECT_THAT(Split({"data: x\n"}), ElementsAre("x"));
  EXPECT_THAT(Split({": only a comment\n\n", "\n"}), ElementsAre());
}

TEST(CompletionEventTest, ReadsTextFinishUsageAndErrors) {
  auto text = ParseCompletionEvent(R"({"choices":[{"index":0,"text":"Hel","finish_reason":null}]})",
                                   /*chat=*/false);
  EXPECT_EQ(text.text, "Hel");
  EXPECT_FALSE(text.finish_reason.has_value());
  EXPECT_FALSE(text.error.has_value());

  auto last = ParseCompletionEvent(
      R"({"choices":[{"text":"","finish_reason":"length"}],"usage":{"prompt_tokens":3,"completion_tokens":42}})",
      false);
  EXPECT_EQ(last.finish_reason, "length");
  EXPECT_EQ(last.completion_tokens, 42);

  auto chat =
      ParseCompletionEvent(R"({"choices":[{"delta":{"role":"assistant","content":"Hi"}}]})", true);
  EXPECT_EQ(chat.text, "Hi");
  // A chat stream does not read "text", a completion stream not "delta".
  EXPECT_EQ(ParseCompletionEvent(R"({"choices":[{"text":"x"}]})", true).text, "");
  EXPECT_EQ(ParseCompletionEvent(R"({"choices":[{"delta":{"content":"x"}}]})", false).text, "");

  EXPECT_TRUE(ParseCompletionEvent("[DONE]", false).done);
  auto error = ParseCompletionEvent(
      R"({"error":{"message":"model m1 is draining","type":"unavailable","code":503}})", false);
  EXPECT_EQ(error.error, "model m1 is draining");
  auto junk = ParseCompletionEvent("{not json", false);
  ASSERT_TRUE(junk.error.has_value());
  EXPECT_THAT(*junk.error, ::testing::HasSubstr("{not json"));
}

TEST(GenerationStreamTest, StreamsTextAndCountsTokens) {
  const std::string stream =
      "data: {\"choices\":[{\"text\":\"Once\",\"finish_reason\":null}]}\n\n"
      "data: {\"choices\":[{\"text\":\" upon\",\"finish_reason\":null}]}\n\n"
      "data: {\"choices\":[{\"text\":\" a\",\"finish_reason\":\"length\"}],"
      "\"usage\":{\"completion_tokens\":5}}\n\n"
      "data: [DONE]\n\n";
  std::vector<std::string> pieces;
  GenerationStream gen(/*chat=*/false, [&](std::string_view t) { pieces.emplace_back(t); });
  for (size_t i = 0; i < stream.size(); i += 7) gen.Feed(stream.substr(i, 7));
  gen.Finish();
  EXPECT_THAT(pieces, ElementsAre("Once", " upon", " a"));
  EXPECT_EQ(gen.tokens(), 5);  // usage wins over the number of chunks
  EXPECT_EQ(gen.finish_reason(), "length");
  EXPECT_TRUE(gen.done());
  EXPECT_FALSE(gen.error().has_value());

  GenerationStream no_usage(true, [](std::string_view) {});
  no_usage.Feed(
      "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n"
      "data: {\"choices\":[{\"delta\":{\"content\":\"b\"}}]}\n\n"
      "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n");
  no_usage.Finish();
  EXPECT_EQ(no_usage.tokens(), 2);
  EXPECT_EQ(no_usage.finish_reason(), "stop");
  EXPECT_FALSE(no_usage.done());

  GenerationStream failed(false, [](std::string_view) {});
  failed.Feed("data: {\"error\":{\"message\":\"out of KV blocks\"}}\n\ndata: [DONE]\n\n");
  EXPECT_EQ(failed.error(), "out of KV blocks");
}

TEST(GenerationSummaryTest, Format) {
  EXPECT_EQ(FormatGenerationSummary(42, 0.81, "length"),
            "[42 tokens, 0.81 s, 51.9 tok/s, finish: length]");
  EXPECT_EQ(FormatGenerationSummary(0, 0.0, ""), "[0 tokens, 0.00 s, 0.0 tok/s, finish: none]");
}

}  // namespace
}  // namespace tokenmill::cli
