#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs the build
# dependencies, builds tokenmill (CUDA parts too when nvcc exists), runs every
# test, then builds again with ASan+UBSan and runs every test there.
#
#   bash tests/run.sh            # both builds
#   TOKENMILL_TEST_SANITIZE=0 bash tests/run.sh   # skip the sanitizer pass
set -euo pipefail
cd "$(dirname "$0")/.."

bash packaging/install-build-deps.sh

jobs=$(nproc)
run_suite() {
  local dir=$1; shift
  cmake -S . -B "$dir" -G Ninja "$@"
  cmake --build "$dir" -j "$jobs"
  ctest --test-dir "$dir" --output-on-failure --timeout 300 -j "$jobs"
}

start=$(date +%s)
run_suite build/release -DCMAKE_BUILD_TYPE=RelWithDebInfo
echo "release build and tests: $(( $(date +%s) - start )) s"

if [ "${TOKENMILL_TEST_SANITIZE:-1}" != "0" ]; then
  start=$(date +%s)
  # CUDA is compiled (and its tests run) in the release pass; nvcc takes no sanitizers.
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    run_suite build/asan -DCMAKE_BUILD_TYPE=Debug -DTOKENMILL_SANITIZE=address -DTOKENMILL_CUDA=OFF
  echo "asan+ubsan build and tests: $(( $(date +%s) - start )) s"
fi
