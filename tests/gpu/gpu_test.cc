// The GPU test harness's registry, failure records and main(): runs every
// registered test (or those whose name contains argv[1]) on GPU 0 and prints
// PASS/FAIL per test with its time and a summary; exits 77 without a GPU so
// that ctest and tests/gpu/run.sh report a skip.
#include "tests/gpu/gpu_test.h"

#include <cuda_runtime_api.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <string_view>
#include <vector>

#include "tests/gpu/test_util.h"

namespace tokenmill::gpu_test {
namespace {

struct RegisteredTest {
  std::string name;  // "Suite.Name"
  TestFunction function;
};

// A function-local static: registration runs during static initialization of
// other files, in no particular order.
std::vector<RegisteredTest>& Registry() {
  static std::vector<RegisteredTest> tests;
  return tests;
}

// Failures of the running test (one thread runs the tests).
int g_failures = 0;

// Runs one test; returns whether it passed.
bool RunTest(const RegisteredTest& test) {
  std::printf("[ RUN  ] %s\n", test.name.c_str());
  std::fflush(stdout);
  g_failures = 0;
  const auto start = std::chrono::steady_clock::now();
  try {
    test.function();
  } catch (const std::exception& e) {
    RecordFailure(__FILE__, __LINE__, std::string("uncaught exception: ") + e.what());
  } catch (...) {
    RecordFailure(__FILE__, __LINE__, "uncaught exception");
  }
  // A launch that faulted after the test stopped looking still fails it.
  // Faults such as an illegal address leave the context unusable: resetting
  // it lets the remaining tests run on a fresh one (the test's buffers are
  // already freed).
  const cudaError_t sync = cudaDeviceSynchronize();
  const cudaError_t last = cudaGetLastError();
  if (sync != cudaSuccess || last != cudaSuccess) {
    const cudaError_t e = sync != cudaSuccess ? sync : last;
    RecordFailure(__FILE__, __LINE__,
                  std::string("CUDA error after the test: ") + cudaGetErrorString(e));
    cudaDeviceReset();
    cudaSetDevice(0);
  }
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  const bool passed = g_failures == 0;
  std::printf("[ %s ] %s (%.1f ms)\n", passed ? "PASS" : "FAIL", test.name.c_str(), ms);
  std::fflush(stdout);
  return passed;
}

void PrintUsage(const char* argv0) {
  std::printf(
      "usage: %s [--list] [FILTER]\n"
      "  runs every GPU test (or those whose Suite.Name contains FILTER) on GPU 0;\n"
      "  exit 0 all passed, 1 a test failed, 77 no CUDA GPU (skipped; 1 instead when\n"
      "  TOKENMILL_REQUIRE_GPU=1)\n",
      argv0);
}

}  // namespace

bool RegisterTest(const char* suite, const char* name, TestFunction function) {
  Registry().push_back({std::string(suite) + "." + name, function});
  return true;
}

void RecordFailure(const char* file, int line, const std::string& message) {
  ++g_failures;
  std::printf("%s:%d: failure: %s\n", file, line, message.c_str());
  std::fflush(stdout);
}

bool HasFailure() { return g_failures > 0; }

int FailureCount() { return g_failures; }

CheckResult CheckNear(double a, double b, double tolerance, const char* a_text,
                      const char* b_text) {
  if (std::fabs(a - b) <= tolerance) return {};
  char buffer[512];
  std::snprintf(buffer, sizeof(buffer), "|%s - %s| <= %g failed: %.9g vs %.9g (difference %.3g)",
                a_text, b_text, tolerance, a, b, std::fabs(a - b));
  return {false, buffer};
}

int TestMain(int argc, char** argv) {
  bool list = false;
  std::string filter;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--list") == 0) {
      list = true;
    } else if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) {
      PrintUsage(argv[0]);
      return 0;
    } else if (filter.empty() && argv[i][0] != '-') {
      filter = argv[i];
    } else {
      PrintUsage(argv[0]);
      return 2;
    }
  }
  if (list) {
    for (const auto& test : Registry()) std::printf("%s\n", test.name.c_str());
    return 0;
  }

  const GpuProbe gpu = ProbeGpu(0);
  if (!gpu.ok) {
    // On a machine meant to have a GPU, a skip would pass for green.
    const char* require = std::getenv("TOKENMILL_REQUIRE_GPU");
    if (require != nullptr && std::string_view(require) == "1") {
      std::printf("FAILED: no CUDA GPU (%s) and TOKENMILL_REQUIRE_GPU=1\n", gpu.error.c_str());
      return 1;
    }
    std::printf("SKIPPED: no CUDA GPU (%s)\n", gpu.error.c_str());
    return 77;
  }
  std::printf("ran on GPU 0: %s\n", gpu.description.c_str());

  std::vector<std::string> failed;
  int ran = 0;
  const auto start = std::chrono::steady_clock::now();
  for (const auto& test : Registry()) {
    if (!filter.empty() && test.name.find(filter) == std::string::npos) continue;
    ++ran;
    if (!RunTest(test)) failed.push_back(test.name);
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (ran == 0) {
    std::printf("no test matches '%s' (--list names them)\n", filter.c_str());
    return 1;
  }
  for (const std::string& name : failed) std::printf("FAILED: %s\n", name.c_str());
  std::printf("SUMMARY: %d tests, %d passed, %zu failed (%.1f s)\n", ran,
              ran - static_cast<int>(failed.size()), failed.size(), seconds);
  return failed.empty() ? 0 : 1;
}

}  // namespace tokenmill::gpu_test

int main(int argc, char** argv) { return tokenmill::gpu_test::TestMain(argc, argv); }
