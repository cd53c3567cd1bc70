#!/usr/bin/env bash
# Builds the GPU test and benchmark target (tests/gpu) with only the CUDA
# toolkit, CMake and a C++ compiler, runs the GPU tests, then the benchmark,
# and prints the benchmark's table and a one-line test summary last. Needs no
# sudo, apt or network.
#
#   bash tests/gpu/run.sh [OUT_DIR]     # default OUT_DIR: ${OUT:-build/gpu/results}
#   TOKENMILL_CUDA_ARCH=90a             # CMAKE_CUDA_ARCHITECTURES (default 90a)
#
# OUT_DIR gets gpu_tests.log, gpu_bench.log and gpu_bench.csv. Exit status: 0
# when the tests passed or were skipped (no GPU: both programs exit 77), 1
# when a test failed, 2 when the tests passed but the benchmark failed.
set -euo pipefail
cd "$(dirname "$0")/../.."

out=${1:-${OUT:-build/gpu/results}}
build=build/gpu
mkdir -p "$out"

if command -v nvcc >/dev/null 2>&1; then
  nvcc=$(command -v nvcc)
elif [ -x /usr/local/cuda/bin/nvcc ]; then
  nvcc=/usr/local/cuda/bin/nvcc
else
  echo "run.sh: nvcc not found (neither on PATH nor in /usr/local/cuda/bin)" >&2
  exit 1
fi

# A build folder keeps the generator it was configured with.
generator=()
if [ ! -f "$build/CMakeCache.txt" ]; then
  if command -v ninja >/dev/null 2>&1; then generator=(-G Ninja); else generator=(-G "Unix Makefiles"); fi
fi
start=$(date +%s)
cmake -S tests/gpu -B "$build" ${generator[@]+"${generator[@]}"} -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CUDA_COMPILER="$nvcc" -DCMAKE_CUDA_ARCHITECTURES="${TOKENMILL_CUDA_ARCH:-90a}"
cmake --build "$build" -j "$(nproc)"
echo "run.sh: built in $(( $(date +%s) - start )) s"

# Both programs exit 77 without a GPU; set -e must not stop the script there.
set +e
"$build/tokenmill_gpu_tests" 2>&1 | tee "$out/gpu_tests.log"
tests_rc=${PIPESTATUS[0]}
"$build/tokenmill_gpu_bench" --csv "$out/gpu_bench.csv" 2>&1 | tee "$out/gpu_bench.log"
bench_rc=${PIPESTATUS[0]}
set -e

echo
echo "==================== tokenmill GPU results ($out) ===================="
# Why a program skipped: its "SKIPPED: <reason>" line.
skip_reason() { sed -n 's/^SKIPPED: //p' "$1" | head -n 1; }
if [ "$bench_rc" -eq 77 ]; then
  echo "benchmark: skipped: $(skip_reason "$out/gpu_bench.log")"
elif grep -q '^== tokenmill_gpu_bench summary' "$out/gpu_bench.log"; then
  sed -n '/^== tokenmill_gpu_bench summary/,$p' "$out/gpu_bench.log"
  [ "$bench_rc" -eq 0 ] || echo "benchmark: FAILED (exit $bench_rc, see $out/gpu_bench.log)"
else
  echo "benchmark: FAILED (exit $bench_rc, no summary; see $out/gpu_bench.log)"
fi
if [ "$tests_rc" -eq 77 ]; then
  echo "gpu tests: 0 passed, 0 failed, all skipped: $(skip_reason "$out/gpu_tests.log")"
  exit 0
fi
summary=$(grep -m1 '^SUMMARY:' "$out/gpu_tests.log" || true)
if [ -n "$summary" ]; then
  # "SUMMARY: N tests, P passed, F failed (T s)"
  passed=$(sed -E 's/.* ([0-9]+) passed.*/\1/' <<<"$summary")
  failed=$(sed -E 's/.* ([0-9]+) failed.*/\1/' <<<"$summary")
  echo "gpu tests: $passed passed, $failed failed, 0 skipped (exit $tests_rc)"
else
  echo "gpu tests: no summary, exit $tests_rc (crashed? see $out/gpu_tests.log)"
fi
if [ "$tests_rc" -ne 0 ]; then exit 1; fi
if [ "$bench_rc" -ne 0 ]; then exit 2; fi
exit 0
