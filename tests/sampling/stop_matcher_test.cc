#include "runtime/sampling/stop_matcher.h"

#include <string>

#include "gtest/gtest.h"

namespace tokenmill::sampling {
namespace {

TEST(StopMatcherTest, StopSplitAcrossPiecesIsNeverEmitted) {
  StopMatcher matcher({"STOP"});
  StopMatch m = matcher.Feed("hello ST");
  EXPECT_EQ(m.text, "hello ");
  EXPECT_FALSE(m.stopped);
  EXPECT_EQ(matcher.held_bytes(), 2u);
  m = matcher.Feed("O");
  EXPECT_EQ(m.text, "");
  m = matcher.Feed("P world");
  EXPECT_EQ(m.text, "");
  EXPECT_TRUE(m.stopped);
  EXPECT_EQ(m.stop_index, 0);
  // Anything after the stop is swallowed.
  m = matcher.Feed("more");
  EXPECT_EQ(m.text, "");
  EXPECT_TRUE(m.stopped);
  EXPECT_EQ(matcher.Flush().text, "");
}

TEST(StopMatcherTest, FalseStartIsReleased) {
  StopMatcher matcher({"STOP"});
  EXPECT_EQ(matcher.Feed("aST").text, "a");
  StopMatch m = matcher.Feed("x");
  EXPECT_EQ(m.text, "STx");
  EXPECT_FALSE(m.stopped);
  EXPECT_EQ(matcher.held_bytes(), 0u);
}

TEST(StopMatcherTest, TextBeforeStopInSamePieceIsEmitted) {
  StopMatcher matcher({"</s>"});
  StopMatch m = matcher.Feed("done.</s>trailing");
  EXPECT_EQ(m.text, "done.");
  EXPECT_TRUE(m.stopped);
}

TEST(StopMatcherTest, OverlappingPrefixesStopAtFirstCompletedMatch) {
  StopMatcher matcher({"abc", "ab"});
  EXPECT_EQ(matcher.Feed("xa").text, "x");
  StopMatch m = matcher.Feed("b");
  EXPECT_TRUE(m.stopped);
  EXPECT_EQ(m.text, "");
  EXPECT_EQ(m.stop_index, 1);
}

TEST(StopMatcherTest, EarliestStartWinsWithinOnePiece) {
  StopMatcher matcher({"bc", "abc"});
  StopMatch m = matcher.Feed("zabcd");
  EXPECT_TRUE(m.stopped);
  EXPECT_EQ(m.text, "z");
  EXPECT_EQ(m.stop_index, 1);
}

TEST(StopMatcherTest, HoldsLongestSuffixThatCanStartAStop) {
  StopMatcher matcher({"aab"});
  EXPECT_EQ(matcher.Feed("aaa").text, "a");
  EXPECT_EQ(matcher.held_bytes(), 2u);
  StopMatch m = matcher.Feed("b");
  EXPECT_TRUE(m.stopped);
  EXPECT_EQ(m.text, "");
}

TEST(StopMatcherTest, StopAtVeryStart) {
  StopMatcher matcher({"Hi"});
  StopMatch m = matcher.Feed("Hi there");
  EXPECT_TRUE(m.stopped);
  EXPECT_EQ(m.text, "");
}

TEST(StopMatcherTest, NoFalseHoldbackAndFlushReleasesTheRest) {
  StopMatcher matcher({"abc"});
  StopMatch m = matcher.Feed("hello");
  EXPECT_EQ(m.text, "hello");
  EXPECT_EQ(matcher.held_bytes(), 0u);
  EXPECT_EQ(matcher.Feed("xxab").text, "xx");
  m = matcher.Flush();
  EXPECT_EQ(m.text, "ab");
  EXPECT_FALSE(m.stopped);
  EXPECT_EQ(matcher.held_bytes(), 0u);
}

TEST(StopMatcherTest, NoStopsPassesEverythingThrough) {
  StopMatcher matcher({});
  EXPECT_EQ(matcher.Feed("abc").text, "abc");
  EXPECT_EQ(matcher.Flush().text, "");
}

TEST(StopMatcherTest, StreamingEqualsWholeTextForEverySplit) {
  const std::string text = "one two thr three fo four";
  for (size_t cut = 0; cut <= text.size(); ++cut) {
    StopMatcher matcher({"three", "four"});
    std::string out(matcher.Feed(text.substr(0, cut)).text);
    out += matcher.Feed(text.substr(cut)).text;
    out += matcher.Flush().text;
    EXPECT_EQ(out, "one two thr ") << "cut " << cut;
    EXPECT_TRUE(matcher.stopped());
  }
}

}  // namespace
}  // namespace tokenmill::sampling
