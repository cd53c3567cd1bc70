#!/usr/bin/env bash
# Runs every libFuzzer harness of tests/fuzz for a bounded time from its
# checked-in seed corpus, and fails on any crash, leak, timeout or sanitizer
# report (libFuzzer then exits non-zero and writes the input that did it).
#
#   bash tests/fuzz/run_fuzzers.sh BUILD_DIR [SECONDS_EACH] [HARNESS...]
#
# BUILD_DIR is a -DTOKENMILL_FUZZ=ON build with the `fuzzers` target built.
# New inputs go to a scratch corpus, never into the checked-in one; an input
# that fails is kept as tests/fuzz/findings/<harness>-crash-... . Each run's
# final figures (executions, exec/s, coverage) are printed at the end.
set -uo pipefail

if [[ $# -lt 1 ]]; then
  echo "usage: $0 BUILD_DIR [SECONDS_EACH] [HARNESS...]" >&2
  exit 2
fi
build_dir=$(cd "$1" && pwd) || exit 2
seconds=${2:-10}
shift $(($# >= 2 ? 2 : 1))
here=$(cd "$(dirname "$0")" && pwd)
harnesses=("$@")
if [[ ${#harnesses[@]} -eq 0 ]]; then
  for dir in "$here"/corpus/*/; do harnesses+=("$(basename "$dir")"); done
fi

scratch=$(mktemp -d /tmp/tokenmill-fuzz.XXXXXX) || exit 1
trap 'rm -rf "$scratch"' EXIT
findings=$here/findings

# A report names the leak or sanitizer even when the exit status would not.
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:allocator_may_return_null=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

failed=()
summary=()
for name in "${harnesses[@]}"; do
  bin=$build_dir/tests/fuzz/$name
  seeds=$here/corpus/$name
  if [[ ! -x $bin || ! -d $seeds ]]; then
    echo "FAIL: $name: missing $bin or $seeds" >&2
    failed+=("$name")
    continue
  fi
  mkdir -p "$scratch/$name"
  log=$scratch/$name.log
  echo "== $name: ${seconds}s from $(find "$seeds" -type f | wc -l) seeds"
  # -timeout: one input running over 10 s is a hang; -rss_limit_mb: a
  # harness over 2 GiB is an unbounded allocation. -artifact_prefix keeps
  # failing inputs where a developer finds them.
  mkdir -p "$findings"
  (cd "$scratch" && "$bin" "$scratch/$name" "$seeds" \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
    -print_final_stats=1 -artifact_prefix="$findings/$name-" >"$log" 2>&1)
  rc=$?
  if [[ $rc -ne 0 ]] || grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error:' "$log"; then
    tail -n 60 "$log"
    echo "FAIL: $name (exit $rc): input kept under $findings/"
    failed+=("$name")
  else
    rmdir "$findings" 2>/dev/null || true
  fi
  # "#N DONE cov: C ft: F corp: ..." and the final stats.
  done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$done_line")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$done_line")
  corp=$(sed -n 's/.* corp: \([^ ]*\).*/\1/p' <<<"$done_line")
  summary+=("$(printf '%-24s execs %-8s exec/s %-6s cov %-5s ft %-6s corpus %s' "$name" \
    "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}")")
done

echo
echo "fuzz summary (${seconds}s each):"
printf '  %s\n' "${summary[@]}"
if [[ ${#failed[@]} -ne 0 ]]; then
  echo "fuzz: FAILED: ${failed[*]}"
  exit 1
fi
echo "fuzz: no crash, leak, hang or sanitizer report"
