#include "devices/cpu/cpu_info.h"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tokenmill::devices {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

std::string Fixture(const std::string& relative) {
  std::ifstream in(std::filesystem::path(TOKENMILL_SOURCE_DIR) / "tests/devices/fixtures" /
                   relative);
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_FALSE(text.str().empty()) << relative;
  return text.str();
}

TEST(ParseCpuInfoTest, TwoSocketX86ServerWithHyperThreads) {
  absl::StatusOr<CpuInfoSummary> info = ParseCpuInfo(Fixture("x86_server/proc/cpuinfo"));
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->vendor, "GenuineIntel");
  EXPECT_EQ(info->model_name, "Intel(R) Xeon(R) Platinum 8480+");
  EXPECT_EQ(info->logical_cpus, 8u);
  EXPECT_EQ(info->sockets, 2u);
  EXPECT_EQ(info->physical_cores, 4u);
  EXPECT_THAT(info->simd, ElementsAre("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw",
                                      "avx512vl", "avx512_bf16", "avx512_fp16", "amx_bf16"));
}

TEST(ParseCpuInfoTest, Aarch64NamesTheCoreFromImplementerAndPart) {
  absl::StatusOr<CpuInfoSummary> info = ParseCpuInfo(Fixture("aarch64/proc/cpuinfo"));
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->vendor, "ARM");
  EXPECT_EQ(info->model_name, "ARM Neoverse-V2");
  EXPECT_EQ(info->logical_cpus, 4u);
  EXPECT_EQ(info->sockets, 1u);         // no "physical id": one socket
  EXPECT_EQ(info->physical_cores, 4u);  // no topology lines: one thread per core
  EXPECT_THAT(info->simd, ElementsAre("neon"));
}

TEST(ParseCpuInfoTest, VmWithoutCoreIdsUsesCpuCores) {
  // Some hypervisors print "cpu cores" but no "core id".
  const std::string text =
      "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\n"
      "physical id\t: 0\ncpu cores\t: 2\nflags\t\t: sse4_2 avx\n\n"
      "processor\t: 1\nphysical id\t: 0\ncpu cores\t: 2\n\n"
      "processor\t: 2\nphysical id\t: 0\ncpu cores\t: 2\n\n"
      "processor\t: 3\nphysical id\t: 0\ncpu cores\t: 2\n";
  absl::StatusOr<CpuInfoSummary> info = ParseCpuInfo(text);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->logical_cpus, 4u);
  EXPECT_EQ(info->sockets, 1u);
  EXPECT_EQ(info->physical_cores, 2u);
  EXPECT_THAT(info->simd, ElementsAre("sse4_2", "avx"));
}

TEST(ParseCpuInfoTest, NoProcessorEntryIsAnError) {
  EXPECT_EQ(ParseCpuInfo("").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseCpuInfo("Processor\t: AArch64\n").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(SimdFromFlagsTest, IgnoresLookalikes) {
  EXPECT_THAT(SimdFromFlags("avx512fp avx2x sse4_1 asimdhp"), IsEmpty());
  EXPECT_THAT(SimdFromFlags("  avx2\tfma  "), ElementsAre("avx2", "fma"));
}

TEST(ParseMemInfoTest, ReadsKibibytesAsBytes) {
  absl::StatusOr<MemInfo> mem = ParseMemInfo(Fixture("x86_server/proc/meminfo"));
  ASSERT_TRUE(mem.ok()) << mem.status();
  EXPECT_EQ(mem->total_bytes, 527988392ull * 1024);
  EXPECT_EQ(mem->available_bytes, 500000000ull * 1024);
}

TEST(ParseMemInfoTest, OldKernelWithoutMemAvailableSumsFreeBuffersCached) {
  absl::StatusOr<MemInfo> mem = ParseMemInfo(Fixture("aarch64/proc/meminfo"));
  ASSERT_TRUE(mem.ok()) << mem.status();
  EXPECT_EQ(mem->total_bytes, 1000u * 1024);
  EXPECT_EQ(mem->available_bytes, 420u * 1024);
}

TEST(ParseMemInfoTest, RejectsMissingTotalAndBadNumbers) {
  EXPECT_EQ(ParseMemInfo("MemFree: 10 kB\n").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseMemInfo("MemTotal: lots kB\n").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ParseCpuListTest, RangesAndSingles) {
  absl::StatusOr<std::vector<uint32_t>> ids = ParseCpuList("0-3,8,10-11\n");
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_THAT(*ids, ElementsAre(0, 1, 2, 3, 8, 10, 11));
  EXPECT_THAT(*ParseCpuList("0"), ElementsAre(0));
}

TEST(ParseCpuListTest, EmptyAndMalformed) {
  ASSERT_TRUE(ParseCpuList("\n").ok());
  EXPECT_THAT(*ParseCpuList("\n"), IsEmpty());
  for (const char* bad : {"3-1", "a", "1,,2", "-1", "1-", "+1", "0-99999999"}) {
    EXPECT_EQ(ParseCpuList(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(ParseProcStatTest, AggregateLineAndUtilization) {
  absl::StatusOr<CpuTimes> before = ParseProcStat(Fixture("x86_server/proc/stat"));
  absl::StatusOr<CpuTimes> after = ParseProcStat(Fixture("x86_server/proc/stat.later"));
  ASSERT_TRUE(before.ok()) << before.status();
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(before->total, 10000u);
  EXPECT_EQ(before->busy, 1500u);
  std::optional<double> ratio = UtilizationBetween(*before, *after);
  ASSERT_TRUE(ratio.has_value());
  EXPECT_DOUBLE_EQ(*ratio, 0.6);
  EXPECT_FALSE(UtilizationBetween(*after, *after).has_value());
  EXPECT_FALSE(UtilizationBetween(*after, *before).has_value());
}

TEST(ParseProcStatTest, MissingOrShortAggregateLine) {
  EXPECT_FALSE(ParseProcStat("cpu0 1 2 3 4\n").ok());
  EXPECT_FALSE(ParseProcStat("cpu 1 2 3\n").ok());
  EXPECT_FALSE(ParseProcStat("cpu 1 2 x 4\n").ok());
}

}  // namespace
}  // namespace tokenmill::devices
