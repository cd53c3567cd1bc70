#!/usr/bin/env bash
# Builds the GPU test and benchmark target (tests/gpu) with only the CUDA
# toolkit, CMake and a C++ compiler, runs the GPU tests, then the benchmark,
# and prints the benchmark's table and a one-line test summary last. Needs no
# sudo, apt or network.
#
#   bash tests/gpu/run.sh [OUT_DIR]     # default OUT_DIR: ${OUT:-build/gpu/results}
#   TOKENMILL_CUDA_ARCH=90a             # CMAKE_CUDA_ARCHITECTURES (default 90a)
#   TOKENMILL_GPU_DIRECT=1              # skip CMake: nvcc + g++ directly (also
#                                       # the fallback when CMake fails)
#   TOKENMILL_REQUIRE_GPU=1             # no GPU is a failure, not a skip
#   TOKENMILL_GPU_{BUILD,TESTS,BENCH,TOOLS}_TIMEOUT  # seconds per stage (420, 300, 300, 240)
#
# With a GPU, two more stages run when their tools are in the toolkit:
# compute-sanitizer memcheck over the paged-attention tests (memcheck.log;
# an error it reports fails the run) and Nsight Compute over the last
# decode step of the 8B model at batch 1 (ncu_8b_decode.log: time per
# kernel; a profiler that cannot run, e.g. without counter permissions,
# is reported, not failed).
#
# OUT_DIR gets gpu_tests.log, gpu_bench.log and gpu_bench.csv. Exit status: 0
# when the tests passed or were skipped (no GPU: both programs exit 77), 1
# when a test failed or memcheck reported an error, or when no GPU was found
# and TOKENMILL_REQUIRE_GPU=1
# (set it on a machine that has one, so a skip cannot pass for green), 2 when
# the tests passed but the benchmark failed.
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

arch=${TOKENMILL_CUDA_ARCH:-90a}
# Each stage has a time limit, so a hang cannot eat a scarce GPU session.
build_timeout=${TOKENMILL_GPU_BUILD_TIMEOUT:-420}
tests_timeout=${TOKENMILL_GPU_TESTS_TIMEOUT:-300}
bench_timeout=${TOKENMILL_GPU_BENCH_TIMEOUT:-300}
tools_timeout=${TOKENMILL_GPU_TOOLS_TIMEOUT:-240}

# The engine dlopens libcublas.so.<major> (by soname, then beside
# libcudart): find it before building, so that an image that keeps it
# elsewhere fails here, not as every GPU test reporting "unavailable".
cuda_root=$(cd "$(dirname "$nvcc")/.." && pwd)
cublas=$(ldconfig -p 2>/dev/null | sed -n 's/.*libcublas\.so\.[0-9][0-9]* .*=> //p' | head -n 1)
if [ -z "$cublas" ]; then
  for d in ${LD_LIBRARY_PATH//:/ } "$cuda_root/lib64" "$cuda_root"/targets/*/lib; do
    f=$(ls "$d"/libcublas.so.[0-9]* 2>/dev/null | head -n 1 || true)
    if [ -n "$f" ]; then
      cublas=$f
      export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
      break
    fi
  done
fi
if [ -z "$cublas" ]; then
  echo "run.sh: libcublas.so not found (ld cache, LD_LIBRARY_PATH, $cuda_root/lib64); install cuBLAS or set LD_LIBRARY_PATH" >&2
  exit 1
fi
echo "run.sh: cuBLAS: $cublas"

# The CMake project (tests/gpu/CMakeLists.txt, CMake >= 3.24).
cmake_build() {
  command -v cmake >/dev/null 2>&1 || { echo "run.sh: no cmake" >&2; return 1; }
  # A build folder keeps the generator it was configured with.
  local generator=()
  if [ ! -f "$build/CMakeCache.txt" ]; then
    if command -v ninja >/dev/null 2>&1; then generator=(-G Ninja); else generator=(-G "Unix Makefiles"); fi
  fi
  cmake -S tests/gpu -B "$build" ${generator[@]+"${generator[@]}"} -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_CUDA_COMPILER="$nvcc" -DCMAKE_CUDA_ARCHITECTURES="$arch" &&
    cmake --build "$build" -j "$(nproc)"
}

# The same two programs straight from nvcc and the host compiler, for a
# machine whose CMake is missing or too old: device time is too scarce to
# lose to a build system. Globs keep it in step with core.cmake and
# targets.cmake (every .cu/.cc of the core, every .cc of tests/gpu).
direct_build() {
  local cuda cxx obj pids=() objects=() test_objects=() bench_objects=()
  cuda=$(cd "$(dirname "$nvcc")/.." && pwd)
  cxx=${CXX:-g++}
  obj=$build/direct
  mkdir -p "$obj"
  local flags=(-O2 -I. -I"$cuda/include" -Wall -Wextra)
  local f o
  for f in devices/cuda/core/*.cu; do
    o=$obj/$(basename "$f").o
    "$nvcc" -std=c++17 -O3 -arch="sm_$arch" -I. -Xcompiler=-Wall,-Wextra -c "$f" -o "$o" & pids+=($!)
    objects+=("$o")
  done
  for f in devices/cuda/core/*.cc devices/model_spec.cc tests/reference/naive_ops.cc \
    tests/reference/reference_model.cc tests/gpu/test_util.cc tests/gpu/synth_spec.cc; do
    o=$obj/$(basename "$f").o
    "$cxx" -std=c++20 "${flags[@]}" -c "$f" -o "$o" & pids+=($!)
    objects+=("$o")
  done
  for f in tests/gpu/*.cc; do
    case $f in */test_util.cc | */synth_spec.cc) continue ;; esac
    o=$obj/test_$(basename "$f").o
    "$cxx" -std=c++20 "${flags[@]}" -c "$f" -o "$o" & pids+=($!)
    test_objects+=("$o")
  done
  o=$obj/gpu_bench.cc.o
  "$cxx" -std=c++20 "${flags[@]}" -c tests/bench/gpu_bench.cc -o "$o" & pids+=($!)
  bench_objects+=("$o")
  local pid failed=0
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  [ "$failed" -eq 0 ] || return 1
  local libs=(-L"$cuda/lib64" "-Wl,-rpath,$cuda/lib64" -lcudart -ldl -lpthread)
  "$cxx" -o "$build/tokenmill_gpu_tests" "${test_objects[@]}" "${objects[@]}" "${libs[@]}" &&
    "$cxx" -o "$build/tokenmill_gpu_bench" "${bench_objects[@]}" "${objects[@]}" "${libs[@]}"
}

start=$(date +%s)
mkdir -p "$build"
export -f cmake_build direct_build
export build nvcc arch
if [ "${TOKENMILL_GPU_DIRECT:-0}" = 1 ] || ! timeout "$build_timeout" bash -c cmake_build; then
  echo "run.sh: building directly with nvcc and ${CXX:-g++} instead of CMake"
  timeout "$build_timeout" bash -c direct_build || {
    echo "run.sh: build failed or passed ${build_timeout} s" >&2
    exit 1
  }
fi
echo "run.sh: built in $(( $(date +%s) - start )) s"

# Both programs exit 77 without a GPU; set -e must not stop the script there.
set +e
timeout "$tests_timeout" "$build/tokenmill_gpu_tests" 2>&1 | tee "$out/gpu_tests.log"
tests_rc=${PIPESTATUS[0]}
[ "$tests_rc" -ne 124 ] || echo "run.sh: the GPU tests passed ${tests_timeout} s and were stopped"
timeout "$bench_timeout" "$build/tokenmill_gpu_bench" --csv "$out/gpu_bench.csv" 2>&1 |
  tee "$out/gpu_bench.log"
bench_rc=${PIPESTATUS[0]}
[ "$bench_rc" -ne 124 ] || echo "run.sh: the benchmark passed ${bench_timeout} s and was stopped"

# A toolkit program by name: on PATH, else in the toolkit's bin.
toolkit_tool() { command -v "$1" 2>/dev/null || { [ -x "$cuda_root/bin/$1" ] && echo "$cuda_root/bin/$1"; } || true; }
memcheck_status="not run (no GPU)"
ncu_status="not run (no GPU)"
memcheck_rc=0
if [ "$tests_rc" -ne 77 ]; then
  sanitizer=$(toolkit_tool compute-sanitizer)
  if [ -z "$sanitizer" ]; then
    memcheck_status="not run: compute-sanitizer not found"
  else
    timeout "$tools_timeout" "$sanitizer" --tool memcheck --error-exitcode 3 \
      "$build/tokenmill_gpu_tests" PagedAttention >"$out/memcheck.log" 2>&1
    memcheck_rc=$?
    case $memcheck_rc in
      0) memcheck_status="clean ($(grep -m1 'ERROR SUMMARY' "$out/memcheck.log" || echo 'no summary'))" ;;
      124) memcheck_status="stopped after ${tools_timeout} s" ;;
      *) memcheck_status="FAILED (exit $memcheck_rc, see $out/memcheck.log)" ;;
    esac
  fi
  ncu_bin=$(toolkit_tool ncu)
  if [ -z "$ncu_bin" ]; then
    ncu_status="not run: ncu not found"
  else
    timeout "$tools_timeout" "$ncu_bin" --profile-from-start off \
      --metrics gpu__time_duration.sum --print-summary per-kernel \
      "$build/tokenmill_gpu_bench" --shape 8b --batches 1 --steps 2 --profile-step \
      >"$out/ncu_8b_decode.log" 2>&1
    ncu_rc=$?
    if [ "$ncu_rc" -eq 0 ]; then
      ncu_status="per-kernel times of one 8B batch-1 decode step in $out/ncu_8b_decode.log"
    else
      ncu_status="did not complete (exit $ncu_rc): $(grep -m1 -i 'err' "$out/ncu_8b_decode.log" || true)"
    fi
  fi
fi
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
echo "memcheck (paged attention): $memcheck_status"
echo "ncu: $ncu_status"
if [ "$tests_rc" -eq 77 ]; then
  echo "gpu tests: 0 passed, 0 failed, all skipped: $(skip_reason "$out/gpu_tests.log")"
  exit 0
fi
if [ "${TOKENMILL_REQUIRE_GPU:-0}" = 1 ] && grep -q '^FAILED: no CUDA GPU' "$out/gpu_tests.log"; then
  echo "gpu tests: FAILED: every test skipped (no GPU) and TOKENMILL_REQUIRE_GPU=1"
  exit 1
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
if [ "$tests_rc" -ne 0 ] || [ "$memcheck_rc" -ne 0 ]; then exit 1; fi
if [ "$bench_rc" -ne 0 ]; then exit 2; fi
exit 0
