#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs the build
# dependencies, builds tokenmill (CUDA parts too when nvcc exists), runs every
# test, then builds again with ASan+UBSan and runs every test there (but the
# packaging tests, which check the release package), then
# builds the libFuzzer harnesses with clang and runs each for a bounded time.
#
#   bash tests/run.sh            # all three passes
#   TOKENMILL_TEST_SANITIZE=0 bash tests/run.sh   # skip the sanitizer pass
#   TOKENMILL_TEST_FUZZ=0 bash tests/run.sh       # skip the fuzz pass
#   TOKENMILL_FUZZ_SECONDS=60 bash tests/run.sh   # fuzz each harness longer (default 10)
set -euo pipefail
cd "$(dirname "$0")/.."

bash packaging/install-build-deps.sh

jobs=$(nproc)
# run_suite DIR "CTEST ARGS" CMAKE ARGS...
run_suite() {
  local dir=$1 ctest_args=$2; shift 2
  cmake -S . -B "$dir" -G Ninja "$@"
  cmake --build "$dir" -j "$jobs"
  # shellcheck disable=SC2086
  ctest --test-dir "$dir" --output-on-failure --timeout 300 -j "$jobs" $ctest_args
}

# Unity builds (CMake merges up to 8 sources of a target into one
# translation unit): the headers every file parses (gtest, nlohmann/json,
# absl, spdlog) are parsed once per batch instead of once per file, which
# halved the compile time of the batches measured (daemon library 72 -> 34 s,
# meter store tests 48 -> 26 s, ASan -O0). A plain `cmake` build stays one
# file per unit; file-local names must therefore not collide within a
# target (a unity build here is what finds out).
unity=-DCMAKE_UNITY_BUILD=ON

start=$(date +%s)
# Line tables (-g1) are all a failing test's backtrace needs; full -g made
# compiles about a quarter slower (measured on ten of the heaviest files).
run_suite build/release "" "$unity" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O2 -g1 -DNDEBUG" \
  "-DCMAKE_C_FLAGS_RELWITHDEBINFO=-O2 -g1 -DNDEBUG"
echo "release build and tests: $(( $(date +%s) - start )) s"

if [ "${TOKENMILL_TEST_SANITIZE:-1}" != "0" ]; then
  start=$(date +%s)
  # CUDA is compiled (and its tests run) in the release pass; nvcc takes no sanitizers.
  # -O0 with line tables: -O1 ran the tests 27% faster but compiled 25% slower,
  # a net loss of about 3 minutes here. The benchmarks are not built (the release
  # pass builds them; none is a test), and the packaging tests, which check
  # the release pass's package and binaries, run there only.
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    run_suite build/asan "-E ^packaging\." "$unity" -DCMAKE_BUILD_TYPE=Debug \
      "-DCMAKE_CXX_FLAGS_DEBUG=-O0 -g1" "-DCMAKE_C_FLAGS_DEBUG=-O0 -g1" \
      -DTOKENMILL_SANITIZE=address -DTOKENMILL_CUDA=OFF -DTOKENMILL_BUILD_BENCH=OFF
  echo "asan+ubsan build and tests: $(( $(date +%s) - start )) s"
fi

if [ "${TOKENMILL_TEST_FUZZ:-1}" != "0" ]; then
  start=$(date +%s)
  # Only the harnesses and the libraries they use are built (tests/fuzz).
  cmake -S . -B build/fuzz -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_C_COMPILER=clang \
    -DTOKENMILL_FUZZ=ON -DTOKENMILL_CUDA=OFF -DTOKENMILL_BUILD_TESTS=OFF
  cmake --build build/fuzz --target fuzzers -j "$jobs"
  echo "fuzz build: $(( $(date +%s) - start )) s"
  bash tests/fuzz/run_fuzzers.sh build/fuzz "${TOKENMILL_FUZZ_SECONDS:-10}"
  echo "fuzz build and runs: $(( $(date +%s) - start )) s"
fi
