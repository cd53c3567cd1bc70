#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "telemetry/metrics.h"
#include "tests/fakes/fake_device.h"
#include "tests/telemetry/exposition.h"
#include "tokenmill/version.h"

namespace tokenmill::telemetry {
namespace {

using exposition::SeriesValue;
using ::testing::HasSubstr;
using ::testing::Not;

struct HttpResponse {
  long status = 0;
  std::string body;
};

size_t AppendBody(char* data, size_t size, size_t count, void* body) {
  static_cast<std::string*>(body)->append(data, size * count);
  return size * count;
}

// GET http://127.0.0.1:port/path with libcurl; nullopt when the request
// itself fails.
std::optional<HttpResponse> Get(uint16_t port, const std::string& path) {
  std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> curl(curl_easy_init(), curl_easy_cleanup);
  if (!curl) return std::nullopt;
  const std::string url = "http://127.0.0.1:" + std::to_string(port) + path;
  HttpResponse response;
  curl_easy_setopt(curl.get(), CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl.get(), CURLOPT_NOPROXY, "*");
  curl_easy_setopt(curl.get(), CURLOPT_TIMEOUT_MS, 10'000L);
  curl_easy_setopt(curl.get(), CURLOPT_WRITEFUNCTION, AppendBody);
  curl_easy_setopt(curl.get(), CURLOPT_WRITEDATA, &response.body);
  if (curl_easy_perform(curl.get()) != CURLE_OK) return std::nullopt;
  curl_easy_getinfo(curl.get(), CURLINFO_RESPONSE_CODE, &response.status);
  return response;
}

devices::DeviceSample FullSample(double energy_joules) {
  devices::DeviceSample sample;
  sample.memory_total_bytes = 16ull << 30;
  sample.memory_used_bytes = 1ull << 30;
  sample.power_watts = 55;
  sample.energy_joules = energy_joules;
  sample.utilization_ratio = 0.5;
  sample.temperature_celsius = 48;
  return sample;
}

// The node's /metrics as the daemon wires it: a registry with build info and
// device series, the process collector, one server.
class ScrapeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    full_.SetNextSample(FullSample(500));
    registry_ = std::make_shared<prometheus::Registry>();
    AddBuildInfo(*registry_);
    process_ = MakeProcessCollector();
    sampler_ = std::make_unique<DeviceSampler>(
        *registry_, std::vector<devices::Device*>{&full_, &empty_}, std::chrono::seconds(10));
    absl::StatusOr<std::unique_ptr<MetricsServer>> server = MetricsServer::Start("127.0.0.1:0");
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    server_->Register(registry_);
    server_->Register(process_);
  }

  std::string Metrics() {
    std::optional<HttpResponse> response = Get(server_->port(), "/metrics");
    EXPECT_TRUE(response.has_value());
    if (!response) return "";
    EXPECT_EQ(response->status, 200);
    return response->body;
  }

  fakes::FakeDevice full_{"cuda:0"};
  fakes::FakeDevice empty_{"plugin:empty"};
  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<prometheus::Collectable> process_;
  std::unique_ptr<DeviceSampler> sampler_;
  std::unique_ptr<MetricsServer> server_;  // last: stops serving before the rest goes
};

TEST_F(ScrapeTest, ServesEverythingOnAnEphemeralPort) {
  EXPECT_NE(server_->port(), 0);
  for (double joules : {520.0, 560.0, 5.0 /* reset */, 25.0}) {
    full_.SetNextSample(FullSample(joules));
    sampler_->SampleOnce();
  }
  const std::string text = Metrics();

  EXPECT_EQ(SeriesValue(text, std::string("tokenmill_build_info{revision=\"") + kRevision +
                                  "\",version=\"" + kVersion + "\"}"),
            1)
      << text;
  EXPECT_GT(SeriesValue(text, "process_resident_memory_bytes").value_or(0), 0);
  EXPECT_GT(SeriesValue(text, "process_open_fds").value_or(0), 0);
  EXPECT_GT(SeriesValue(text, "process_max_fds").value_or(0), 0);
  EXPECT_GT(SeriesValue(text, "process_virtual_memory_bytes").value_or(0), 0);
  EXPECT_GT(SeriesValue(text, "process_start_time_seconds").value_or(0), 1e9);
  EXPECT_TRUE(SeriesValue(text, "process_cpu_seconds_total").has_value());

  EXPECT_EQ(SeriesValue(text, R"(tokenmill_device_memory_bytes{device="cuda:0",state="used"})"),
            double(1ull << 30));
  EXPECT_EQ(SeriesValue(text, R"(tokenmill_device_power_watts{device="cuda:0"})"), 55);
  EXPECT_EQ(SeriesValue(text, R"(tokenmill_device_utilization_ratio{device="cuda:0"})"), 0.5);
  EXPECT_EQ(SeriesValue(text, R"(tokenmill_device_temperature_celsius{device="cuda:0"})"), 48);
  // 20 + 40 + (reset) + 20.
  EXPECT_EQ(SeriesValue(text, R"(tokenmill_energy_joules_total{device="cuda:0"})"), 80);
  EXPECT_THAT(text, Not(HasSubstr(R"(device="plugin:empty")")));
}

TEST_F(ScrapeTest, OnlyMetricsPathServesMetrics) {
  std::optional<HttpResponse> response = Get(server_->port(), "/");
  ASSERT_TRUE(response.has_value());
  EXPECT_NE(response->status, 200);
  EXPECT_THAT(response->body, Not(HasSubstr("tokenmill_build_info")));
}

TEST_F(ScrapeTest, ExpiredCollectableIsSkipped) {
  process_.reset();
  const std::string text = Metrics();
  EXPECT_THAT(text, HasSubstr("tokenmill_build_info"));
  EXPECT_THAT(text, Not(HasSubstr("process_open_fds")));
}

std::optional<std::string> FindOnPath(const std::string& program) {
  const char* path = getenv("PATH");
  for (const auto dir : absl::StrSplit(path ? path : "", ':')) {
    const std::filesystem::path candidate = std::filesystem::path(std::string(dir)) / program;
    if (!dir.empty() && access(candidate.c_str(), X_OK) == 0) return candidate.string();
  }
  return std::nullopt;
}

TEST_F(ScrapeTest, PromtoolFindsNoProblems) {
  const std::optional<std::string> promtool = FindOnPath("promtool");
  // tests/run.sh installs it; a missing promtool fails here as in every
  // other test that needs it, never a skip that passes for green.
  ASSERT_TRUE(promtool.has_value()) << "promtool not installed (apt-get install prometheus)";
  full_.SetNextSample(FullSample(900));
  sampler_->SampleOnce();
  const std::string text = Metrics();
  ASSERT_THAT(text, HasSubstr("tokenmill_energy_joules_total"));

  char dir[] = "/tmp/tokenmill_promtool_XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::filesystem::path file = std::filesystem::path(dir) / "metrics.txt";
  std::ofstream(file) << text;
  const std::string command = *promtool + " check metrics < " + file.string() + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  char buffer[512];
  while (size_t n = fread(buffer, 1, sizeof buffer, pipe)) output.append(buffer, n);
  const int status = pclose(pipe);
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << output;
  EXPECT_EQ(output, "") << "promtool reported problems in:\n" << text;
}

TEST(MetricsServerTest, AddressInUseIsAnError) {
  absl::StatusOr<std::unique_ptr<MetricsServer>> first = MetricsServer::Start("127.0.0.1:0");
  ASSERT_TRUE(first.ok()) << first.status();
  const std::string taken = "127.0.0.1:" + std::to_string((*first)->port());
  absl::StatusOr<std::unique_ptr<MetricsServer>> second = MetricsServer::Start(taken);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(second.status().message(), HasSubstr(taken));
}

TEST(MetricsServerTest, MalformedAddressesAreInvalidArguments) {
  for (const char* listen :
       {"", "9464", "127.0.0.1", "127.0.0.1:", "127.0.0.1:99999", "127.0.0.1:80,81",
        "127.0.0.1:80s", "example.com:80", "[::1:80", "[zz]:80", ":80"}) {
    absl::StatusOr<std::unique_ptr<MetricsServer>> server = MetricsServer::Start(listen);
    ASSERT_FALSE(server.ok()) << listen;
    EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument) << listen;
  }
}

TEST(MetricsServerTest, LocalhostIsLoopback) {
  absl::StatusOr<std::unique_ptr<MetricsServer>> server = MetricsServer::Start("localhost:0");
  ASSERT_TRUE(server.ok()) << server.status();
  auto registry = std::make_shared<prometheus::Registry>();
  AddBuildInfo(*registry);
  (*server)->Register(registry);
  std::optional<HttpResponse> response = Get((*server)->port(), "/metrics");
  ASSERT_TRUE(response.has_value());
  EXPECT_EQ(response->status, 200);
  EXPECT_THAT(response->body, HasSubstr("tokenmill_build_info"));
}

}  // namespace
}  // namespace tokenmill::telemetry
