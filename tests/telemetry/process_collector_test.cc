#include "telemetry/process_collector.h"

#include <stdlib.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "telemetry/metrics.h"

namespace tokenmill::telemetry {
namespace {

// A stat line whose field n (n >= 4) holds n * 10, with the given comm.
std::string StatLine(const std::string& comm) {
  std::string line = "4242 (" + comm + ") S";
  for (int field = 4; field <= 52; ++field) line += " " + std::to_string(field * 10);
  return line + "\n";
}

TEST(ParseProcStatTest, CountsFieldsFromTheLastParenthesis) {
  absl::StatusOr<ProcStat> stat = ParseProcStat(StatLine("evil) (name 1 2 3"));
  ASSERT_TRUE(stat.ok()) << stat.status();
  EXPECT_EQ(stat->utime_ticks, 140u);
  EXPECT_EQ(stat->stime_ticks, 150u);
  EXPECT_EQ(stat->start_time_ticks, 220u);
  EXPECT_EQ(stat->virtual_memory_bytes, 230u);
  EXPECT_EQ(stat->resident_pages, 240u);
}

TEST(ParseProcStatTest, PlainCommParses) {
  absl::StatusOr<ProcStat> stat = ParseProcStat(StatLine("tokenmilld"));
  ASSERT_TRUE(stat.ok()) << stat.status();
  EXPECT_EQ(stat->resident_pages, 240u);
}

TEST(ParseProcStatTest, RejectsMalformedInput) {
  EXPECT_FALSE(ParseProcStat("").ok());
  EXPECT_FALSE(ParseProcStat("4242 tokenmilld S 1 2 3").ok());
  EXPECT_FALSE(ParseProcStat("4242 (tokenmilld) S 1 2 3").ok());
  std::string not_number = StatLine("x");
  not_number.replace(not_number.find(" 140 "), 5, " abc ");
  EXPECT_FALSE(ParseProcStat(not_number).ok());
}

TEST(ParseBootTimeTest, ReadsBtime) {
  absl::StatusOr<uint64_t> btime =
      ParseBootTime("cpu  1 2 3\nintr 5\nctxt 7\nbtime 1700000000\nprocesses 9\n");
  ASSERT_TRUE(btime.ok()) << btime.status();
  EXPECT_EQ(*btime, 1700000000u);
  EXPECT_FALSE(ParseBootTime("cpu  1 2 3\n").ok());
  EXPECT_FALSE(ParseBootTime("btime soon\n").ok());
}

constexpr char kLimits[] =
    "Limit                     Soft Limit           Hard Limit           Units     \n"
    "Max cpu time              unlimited            unlimited            seconds   \n"
    "Max open files            1024                 1048576              files     \n"
    "Max locked memory         8388608              8388608              bytes     \n";

TEST(ParseMaxOpenFilesTest, ReadsSoftLimit) {
  absl::StatusOr<double> max_fds = ParseMaxOpenFiles(kLimits);
  ASSERT_TRUE(max_fds.ok()) << max_fds.status();
  EXPECT_EQ(*max_fds, 1024);
}

TEST(ParseMaxOpenFilesTest, UnlimitedIsInfinity) {
  absl::StatusOr<double> max_fds =
      ParseMaxOpenFiles("Max open files            unlimited            unlimited   files\n");
  ASSERT_TRUE(max_fds.ok()) << max_fds.status();
  EXPECT_TRUE(std::isinf(*max_fds));
}

TEST(ParseMaxOpenFilesTest, MissingLineIsAnError) {
  EXPECT_FALSE(ParseMaxOpenFiles("Max cpu time unlimited unlimited seconds\n").ok());
  EXPECT_FALSE(ParseMaxOpenFiles("Max open files   lots   lots  files\n").ok());
}

// name -> value of every single-series family.
std::map<std::string, double> Values(const std::vector<prometheus::MetricFamily>& families) {
  std::map<std::string, double> values;
  for (const prometheus::MetricFamily& family : families) {
    EXPECT_EQ(family.metric.size(), 1u) << family.name;
    EXPECT_FALSE(family.help.empty()) << family.name;
    if (family.metric.empty()) continue;
    values[family.name] = family.type == prometheus::MetricType::Counter
                              ? family.metric[0].counter.value
                              : family.metric[0].gauge.value;
  }
  return values;
}

class FakeProcTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/tokenmill_proc_XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    root_ = dir;
  }
  void TearDown() override { std::filesystem::remove_all(root_); }

  void Write(const std::filesystem::path& relative, const std::string& text) {
    std::filesystem::create_directories((root_ / relative).parent_path());
    std::ofstream(root_ / relative) << text;
  }

  std::filesystem::path root_;
};

TEST_F(FakeProcTest, EmitsEveryFamilyFromTheTree) {
  Write("self/stat", StatLine("a b) c"));
  Write("self/limits", kLimits);
  Write("stat", "cpu  1 2 3\nbtime 1700000000\n");
  for (const char* fd : {"0", "1", "2"}) Write(std::filesystem::path("self/fd") / fd, "");

  ProcessCollector collector(
      {.proc_root = root_, .clock_ticks_per_second = 10, .page_size_bytes = 4096});
  const std::map<std::string, double> values = Values(collector.Collect());
  EXPECT_EQ(values.size(), 6u);
  EXPECT_DOUBLE_EQ(values.at("process_cpu_seconds_total"), (140.0 + 150.0) / 10);
  EXPECT_DOUBLE_EQ(values.at("process_resident_memory_bytes"), 240.0 * 4096);
  EXPECT_DOUBLE_EQ(values.at("process_virtual_memory_bytes"), 230);
  EXPECT_DOUBLE_EQ(values.at("process_open_fds"), 3);
  EXPECT_DOUBLE_EQ(values.at("process_max_fds"), 1024);
  EXPECT_DOUBLE_EQ(values.at("process_start_time_seconds"), 1700000000.0 + 220.0 / 10);
}

TEST_F(FakeProcTest, UnreadableSourcesAreLeftOut) {
  Write("self/stat", "garbage");
  Write("self/limits", kLimits);
  ProcessCollector collector({.proc_root = root_});
  const std::map<std::string, double> values = Values(collector.Collect());
  // Only the limits file is usable: no stat, no fd dir, no /proc/stat.
  ASSERT_EQ(values.size(), 1u);
  EXPECT_EQ(values.count("process_max_fds"), 1u);
}

TEST(ProcessCollectorTest, RealProcIsPlausible) {
  std::shared_ptr<prometheus::Collectable> collector = MakeProcessCollector();
  const std::map<std::string, double> values = Values(collector->Collect());
  ASSERT_EQ(values.size(), 6u);
  EXPECT_GE(values.at("process_cpu_seconds_total"), 0);
  EXPECT_GT(values.at("process_resident_memory_bytes"), 0);
  EXPECT_GE(values.at("process_virtual_memory_bytes"), values.at("process_resident_memory_bytes"));
  EXPECT_GE(values.at("process_open_fds"), 3);  // stdin, stdout, stderr at least
  EXPECT_GE(values.at("process_max_fds"), values.at("process_open_fds"));
  const double now =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  // This test process started moments ago; btime has one-second resolution.
  EXPECT_LE(values.at("process_start_time_seconds"), now + 2);
  EXPECT_GT(values.at("process_start_time_seconds"), now - 3600);
}

}  // namespace
}  // namespace tokenmill::telemetry
