// A minimal test harness for the GPU tests (tests/gpu), which must build on a
// machine with only the CUDA toolkit, CMake and a compiler (no GoogleTest).
// GPU_TEST registers a test; GPU_EXPECT* record a failure and go on,
// GPU_ASSERT* record one and return from the enclosing void function; main()
// (gpu_test.cc) runs the tests on GPU 0, or exits 77 (skipped) without one.
// Every macro takes a streamed message: GPU_EXPECT(x > 0) << "x = " << x;
#pragma once

#include <concepts>
#include <cstdint>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace tokenmill::gpu_test {

using TestFunction = void (*)();

// Adds a test to the registry (GPU_TEST does, at static initialization).
bool RegisterTest(const char* suite, const char* name, TestFunction function);

// Records a failure of the running test; it is printed at once, with
// file:line, and fails the test when it returns.
void RecordFailure(const char* file, int line, const std::string& message);
// Whether the running test has failed so far, and how often: a helper that
// records failures is followed by `if (HasFailure()) return;`, and a loop
// over cases compares FailureCount() before and after one case.
bool HasFailure();
int FailureCount();

// The outcome of a check: ok, or a message saying what differed.
struct CheckResult {
  bool ok = true;
  std::string message;
};

// A failure being described: collects what is streamed into it and records
// it when the statement that made it ends.
class Failure {
 public:
  Failure(const char* file, int line, std::string what)
      : file_(file), line_(line), what_(std::move(what)) {}
  ~Failure() {
    const std::string extra = stream_.str();
    RecordFailure(file_, line_, extra.empty() ? what_ : what_ + ": " + extra);
  }
  Failure(const Failure&) = delete;
  Failure& operator=(const Failure&) = delete;

  template <typename T>
  Failure& operator<<(const T& value) {
    stream_ << value;
    return *this;
  }

 private:
  const char* file_;
  int line_;
  std::string what_;
  std::ostringstream stream_;
};

// Lets GPU_ASSERT* `return` a streamed Failure from a void function: the
// assignment is a void expression.
struct ReturnFromTest {
  void operator=(const Failure&) const {}
};

// Prints a value for a failure message: streamable values as they stream,
// enums as their number, vectors element by element.
template <typename T>
void PrintValue(std::ostream& os, const T& value) {
  if constexpr (std::is_enum_v<T>) {
    os << static_cast<int64_t>(value);
  } else if constexpr (requires(std::ostream & o, const T& v) { o << v; }) {
    os << value;
  } else {
    os << "(unprintable)";
  }
}

template <typename T>
void PrintValue(std::ostream& os, const std::vector<T>& values) {
  os << "[";
  for (size_t i = 0; i < values.size(); ++i) {
    if (i > 0) os << ", ";
    PrintValue(os, values[i]);
  }
  os << "]";
}

// Integers compare by value whatever their signedness (no -Wsign-compare
// surprises); everything else with ==.
template <typename A, typename B>
bool ValuesEqual(const A& a, const B& b) {
  constexpr bool kPlainIntegers = std::integral<A> && std::integral<B> && !std::same_as<A, bool> &&
                                  !std::same_as<B, bool> && !std::same_as<A, char> &&
                                  !std::same_as<B, char>;
  if constexpr (kPlainIntegers) {
    return std::cmp_equal(a, b);
  } else {
    return a == b;
  }
}

template <typename A, typename B>
CheckResult CheckEq(const A& a, const B& b, const char* a_text, const char* b_text) {
  if (ValuesEqual(a, b)) return {};
  std::ostringstream os;
  os << a_text << " == " << b_text << " failed: ";
  PrintValue(os, a);
  os << " vs ";
  PrintValue(os, b);
  return {false, os.str()};
}

// |a - b| <= tolerance (NaN fails).
CheckResult CheckNear(double a, double b, double tolerance, const char* a_text, const char* b_text);

}  // namespace tokenmill::gpu_test

// Registers and defines a test: GPU_TEST(Suite, Name) { ...body... }
#define GPU_TEST(suite, name)                                                        \
  static void GpuTest_##suite##_##name();                                            \
  [[maybe_unused]] static const bool gpu_test_registered_##suite##_##name =          \
      ::tokenmill::gpu_test::RegisterTest(#suite, #name, &GpuTest_##suite##_##name); \
  static void GpuTest_##suite##_##name()

// A loop whose body (the failure) runs once when the check fails: unlike an
// if/else, it cannot capture the caller's else.
#define GPU_TEST_CHECK_(check, on_failure)                                      \
  for (::tokenmill::gpu_test::CheckResult gpu_check_ = (check); !gpu_check_.ok; \
       gpu_check_.ok = true)                                                    \
  on_failure ::tokenmill::gpu_test::Failure(__FILE__, __LINE__, gpu_check_.message)

#define GPU_TEST_NOTHING_
#define GPU_TEST_RETURN_ return ::tokenmill::gpu_test::ReturnFromTest() =

// Fails when a CheckResult-valued expression is not ok.
#define GPU_EXPECT_CHECK(check) GPU_TEST_CHECK_(check, GPU_TEST_NOTHING_)
#define GPU_ASSERT_CHECK(check) GPU_TEST_CHECK_(check, GPU_TEST_RETURN_)

#define GPU_EXPECT(condition) \
  GPU_EXPECT_CHECK(           \
      (::tokenmill::gpu_test::CheckResult{static_cast<bool>(condition), "expected: " #condition}))
#define GPU_ASSERT(condition) \
  GPU_ASSERT_CHECK(           \
      (::tokenmill::gpu_test::CheckResult{static_cast<bool>(condition), "expected: " #condition}))
#define GPU_EXPECT_EQ(a, b) GPU_EXPECT_CHECK(::tokenmill::gpu_test::CheckEq((a), (b), #a, #b))
#define GPU_ASSERT_EQ(a, b) GPU_ASSERT_CHECK(::tokenmill::gpu_test::CheckEq((a), (b), #a, #b))
#define GPU_EXPECT_NEAR(a, b, tolerance) \
  GPU_EXPECT_CHECK(::tokenmill::gpu_test::CheckNear((a), (b), (tolerance), #a, #b))
#define GPU_ASSERT_NEAR(a, b, tolerance) \
  GPU_ASSERT_CHECK(::tokenmill::gpu_test::CheckNear((a), (b), (tolerance), #a, #b))
