// The string forms of tokenmill.toml: durations, sizes, percentages, modes,
// addresses, device patterns, names and key hashes, at their edges.
#include "config/value_parsers.h"

#include <string>

#include "gtest/gtest.h"

namespace tokenmill::config {
namespace {

using std::chrono::milliseconds;

TEST(ParseDurationTest, UnitsAndFractions) {
  EXPECT_EQ(*ParseDuration("500ms"), milliseconds(500));
  EXPECT_EQ(*ParseDuration("30s"), milliseconds(30000));
  EXPECT_EQ(*ParseDuration("2m"), milliseconds(120000));
  EXPECT_EQ(*ParseDuration("1h"), milliseconds(3600000));
  EXPECT_EQ(*ParseDuration("1.5s"), milliseconds(1500));
  EXPECT_EQ(*ParseDuration("0.25m"), milliseconds(15000));
  EXPECT_EQ(*ParseDuration("0s"), milliseconds(0));  // callers refuse zero where needed
  EXPECT_EQ(*ParseDuration("8784h"), milliseconds(8784LL * 3600 * 1000));
}

TEST(ParseDurationTest, Refusals) {
  for (const char* text : {"", "s", "30", "30 s", "30S", "1.s", ".5s", "-1s", "1.2.3s", "1d",
                           "1e3ms", "1234567890123456789s"}) {
    absl::StatusOr<milliseconds> d = ParseDuration(text);
    EXPECT_FALSE(d.ok()) << text;
    EXPECT_EQ(d.status().message(),
              "must be a duration like \"30s\", \"500ms\" or \"2m\" (units ms, s, m, h)")
        << text;
  }
  EXPECT_EQ(ParseDuration("0.5ms").status().message(), "must be a whole number of milliseconds");
  EXPECT_EQ(ParseDuration("1.0005s").status().message(), "must be a whole number of milliseconds");
  EXPECT_EQ(ParseDuration("8785h").status().message(), "must be at most a year (8784h)");
}

TEST(ParseByteSizeTest, UnitsAndFractions) {
  EXPECT_EQ(*ParseByteSize("4096"), 4096u);
  EXPECT_EQ(*ParseByteSize("4096B"), 4096u);
  EXPECT_EQ(*ParseByteSize("1kB"), 1000u);
  EXPECT_EQ(*ParseByteSize("1KB"), 1000u);
  EXPECT_EQ(*ParseByteSize("1KiB"), 1024u);
  EXPECT_EQ(*ParseByteSize("512MiB"), 512ull << 20);
  EXPECT_EQ(*ParseByteSize("8GiB"), 8ull << 30);
  EXPECT_EQ(*ParseByteSize("8 GiB"), 8ull << 30);
  EXPECT_EQ(*ParseByteSize("1.5GB"), 1500000000u);
  EXPECT_EQ(*ParseByteSize("2TB"), 2000000000000u);
  EXPECT_EQ(*ParseByteSize("1TiB"), 1ull << 40);
  EXPECT_EQ(*ParseByteSize("1.3KiB"), 1331u);  // 1331.2, rounded down
  EXPECT_EQ(*ParseByteSize("0"), 0u);          // callers refuse zero where needed
  EXPECT_EQ(*ParseByteSize("16777215TiB"), 16777215ull << 40);
}

TEST(ParseByteSizeTest, Refusals) {
  for (const char* text : {"", "GiB", "8gib", "8 ", "8  GiB", "8GiBs", "8EiB", "-1", "1.GB", "0x10",
                           "1234567890123456789"}) {
    EXPECT_FALSE(ParseByteSize(text).ok()) << text;
  }
  EXPECT_EQ(ParseByteSize("16777216TiB").status().message(),
            "is too large (at most 2^64 - 1 bytes)");
}

TEST(ParsePercentTest, RangeIsAboveZeroToHundred) {
  EXPECT_DOUBLE_EQ(*ParsePercent("80%"), 0.8);
  EXPECT_DOUBLE_EQ(*ParsePercent("100%"), 1.0);
  EXPECT_DOUBLE_EQ(*ParsePercent("12.5%"), 0.125);
  EXPECT_DOUBLE_EQ(*ParsePercent("0.1%"), 0.001);
  EXPECT_EQ(ParsePercent("0%").status().message(),
            "must be a percentage above 0% and at most 100%");
  EXPECT_EQ(ParsePercent("100.5%").status().message(),
            "must be a percentage above 0% and at most 100%");
  for (const char* text : {"80", "%", "80 %", "-5%", "80%%"}) {
    EXPECT_EQ(ParsePercent(text).status().message(), "must be a percentage like \"80%\"") << text;
  }
}

TEST(ParseSocketModeTest, OctalBetween0600And0777) {
  EXPECT_EQ(*ParseSocketMode("0660"), 0660u);
  EXPECT_EQ(*ParseSocketMode("660"), 0660u);
  EXPECT_EQ(*ParseSocketMode("0600"), 0600u);
  EXPECT_EQ(*ParseSocketMode("0777"), 0777u);
  EXPECT_FALSE(ParseSocketMode("0577").ok());
  EXPECT_FALSE(ParseSocketMode("0060").ok());
  for (const char* text : {"", "66", "1660", "06600", "0680", "rw-rw----", "0x1b0"}) {
    EXPECT_EQ(ParseSocketMode(text).status().message(), "must be an octal string like \"0660\"")
        << text;
  }
}

TEST(CheckListenAddressTest, HostsAndPorts) {
  for (const char* ok : {"127.0.0.1:9464", "0.0.0.0:0", "localhost:8080", "[::1]:8080",
                         "[::]:65535", "[fe80::1]:1", "10.0.0.1:08080"}) {
    EXPECT_TRUE(CheckListenAddress(ok).ok()) << ok;
  }
  for (const char* bad :
       {"", ":80", "127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:-1", "127.0.0.1:8o",
        "127.0.0.1:123456", "1.2.3:80", "256.0.0.1:80", "example.com:80", "::1:80",
        "[::1]:", "[::1]80", "[127.0.0.1]:80", "[::1:80", "localhost :80"}) {
    EXPECT_FALSE(CheckListenAddress(bad).ok()) << bad;
  }
}

TEST(DevicePatternTest, PatternsAndChoices) {
  for (const char* ok :
       {"cpu", "cuda:0", "cuda:15", "cuda:*", "acme:0", "acme:*", "a_b-c9:12", "reference:0"}) {
    EXPECT_TRUE(CheckDevicePattern(ok).ok()) << ok;
  }
  for (const char* bad : {"", "auto", "gpu", "cuda", "cuda:", "cuda:-1", "cuda:1234", "cuda:x",
                          "plugin:", "plugin:a/b", "CPU", "cpu:0", "cpu:*", "acme", "Acme:0",
                          "9x:0", "a.b:0", "acme:x"}) {
    EXPECT_FALSE(CheckDevicePattern(bad).ok()) << bad;
  }
  EXPECT_TRUE(CheckDevicePattern(std::string(32, 'a') + ":0").ok());  // kinds up to 32 characters
  EXPECT_FALSE(CheckDevicePattern(std::string(33, 'a') + ":0").ok());
  for (const char* ok : {"auto", "cpu", "cuda:3", "acme:0"}) {
    EXPECT_TRUE(CheckDeviceChoice(ok).ok()) << ok;
  }
  for (const char* bad : {"", "cuda:*", "acme:*", "any", "cuda:", "plugin:", "cpu:0"}) {
    EXPECT_FALSE(CheckDeviceChoice(bad).ok()) << bad;
  }
}

TEST(CheckNameTest, LengthAndCharacters) {
  EXPECT_TRUE(CheckName("gpu-node_01.dc1", false).ok());
  EXPECT_TRUE(CheckName(std::string(64, 'x'), false).ok());
  EXPECT_EQ(CheckName(std::string(65, 'x'), false).message(), "must be at most 64 characters long");
  EXPECT_EQ(CheckName("", true).message(), "must not be empty");
  EXPECT_TRUE(CheckName("llama3:8b", true).ok());
  EXPECT_FALSE(CheckName("llama3:8b", false).ok());
  EXPECT_FALSE(CheckName(std::string("a\0b", 3), true).ok());
  EXPECT_FALSE(CheckName("caf\xc3\xa9", true).ok());
  EXPECT_FALSE(CheckName("a/b", true).ok());
}

TEST(CheckSha256HexTest, SixtyFourLowercaseHex) {
  EXPECT_TRUE(CheckSha256Hex(std::string(64, 'f')).ok());
  EXPECT_TRUE(
      CheckSha256Hex("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08").ok());
  EXPECT_FALSE(CheckSha256Hex(std::string(63, 'f')).ok());
  EXPECT_FALSE(CheckSha256Hex(std::string(65, 'f')).ok());
  EXPECT_FALSE(CheckSha256Hex(std::string(64, 'F')).ok());
  EXPECT_FALSE(CheckSha256Hex(std::string(64, 'g')).ok());
}

TEST(CheckAbsolutePathTest, AbsoluteWithoutNul) {
  EXPECT_TRUE(CheckAbsolutePath("/var/lib/tokenmill").ok());
  EXPECT_EQ(CheckAbsolutePath("").message(), "must not be empty");
  EXPECT_EQ(CheckAbsolutePath("var/lib").message(), "must be an absolute path");
  EXPECT_EQ(CheckAbsolutePath(std::string("/a\0b", 4)).message(), "must not contain NUL bytes");
}

TEST(EditDistanceTest, Levenshtein) {
  EXPECT_EQ(EditDistance("", ""), 0u);
  EXPECT_EQ(EditDistance("socket", "socket"), 0u);
  EXPECT_EQ(EditDistance("sockett", "socket"), 1u);
  EXPECT_EQ(EditDistance("sokcet", "socket"), 2u);
  EXPECT_EQ(EditDistance("", "abc"), 3u);
  EXPECT_EQ(EditDistance("kitten", "sitting"), 3u);
}

}  // namespace
}  // namespace tokenmill::config
