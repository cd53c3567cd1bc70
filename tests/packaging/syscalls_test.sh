#!/usr/bin/env bash
# Checks the unit's SystemCallFilter= and RestrictAddressFamilies= against
# what the real daemon does: tokenmilld runs under strace on a CPU config
# (unix socket, TCP API and metrics listeners, a synthetic model), serves a
# generation and a metrics scrape, reloads on SIGHUP and drains on SIGTERM.
# Every system call it made must be one the unit allows (its allow list
# minus its deny lists, groups expanded by systemd-analyze), and every socket
# it opened must be of a family the unit allows. A call outside the filter
# would fail with EPERM under systemd; here it fails the test instead.
# GPU nodes make more calls (the NVIDIA driver's); they cannot be traced here.
#
#   bash tests/packaging/syscalls_test.sh BUILD_DIR SOURCE_DIR
set -uo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 BUILD_DIR SOURCE_DIR" >&2
  exit 2
fi
build_dir=$(cd "$1" && pwd) || exit 2
source_dir=$(cd "$2" && pwd) || exit 2
daemon=$build_dir/daemon/tokenmilld
cli=$build_dir/daemon/cli/tokenmill
unit=$source_dir/packaging/tokenmilld.service
for tool in strace systemd-analyze curl; do
  if ! command -v "$tool" >/dev/null; then
    echo "FAIL: $tool not found (packaging/install-build-deps.sh installs it)" >&2
    exit 1
  fi
done
for bin in "$daemon" "$cli"; do
  if [[ ! -x $bin ]]; then
    echo "FAIL: $bin missing: build tokenmilld and tokenmill first" >&2
    exit 1
  fi
done

tmp=$(mktemp -d /tmp/tokenmill-syscalls-test.XXXXXX) || exit 1
strace_pid=
cleanup() {
  if [[ -n $strace_pid ]]; then
    # The daemon first: a killed strace leaves its tracee running.
    pkill -KILL -P "$strace_pid" -x tokenmilld 2>/dev/null
    kill -KILL "$strace_pid" 2>/dev/null
    wait "$strace_pid" 2>/dev/null
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
failures=0
fail() {
  echo "  FAIL: $*"
  failures=$((failures + 1))
}

# wait_for SECONDS COMMAND...: polls until the command succeeds.
wait_for() {
  local deadline=$((SECONDS + $1))
  shift
  local rc
  until "$@" >/dev/null 2>&1; do
    rc=$?
    if ((rc == 2 || SECONDS > deadline)) || ! kill -0 "$strace_pid" 2>/dev/null; then return 1; fi
    sleep 0.1
  done
}

# --- Run the daemon under strace ------------------------------------------------------
# demo.toml serves @DEMO@/demo.gguf as model "demo" to tenants with keys
# "test" and "test2".
"$cli" model synth --shape tiny --type q8_0 --out "$tmp/demo.gguf" >/dev/null || exit 1
sed -e "s|@DEMO@|$tmp|g" "$source_dir/packaging/demo.toml" >"$tmp/tokenmill.toml"
# The TCP API listener too, so that AF_INET is exercised as a node serving
# remote clients does.
sed -i 's|^socket = .*|&\ntcp = "127.0.0.1:0"|' "$tmp/tokenmill.toml"
socket=$tmp/tokenmill.sock

# -f: every thread; -C: the per-call summary after the full trace. In an
# ASan build LeakSanitizer cannot run under ptrace (it fails the exit), so
# the traced daemon checks no leaks; the ASan runtime's other calls are all
# within @system-service.
ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" strace -f -qq -C -o "$tmp/trace" \
  "$daemon" --config "$tmp/tokenmill.toml" --log-target stderr 2>"$tmp/daemon.log" &
strace_pid=$!
ready() { curl -sf --unix-socket "$socket" http://localhost/readyz; }
model_ready() {
  grep -q model_not_loaded "$tmp/daemon.log" && return 2
  "$cli" --socket "$socket" --json models list | grep -q '"state": *"ready"'
}
if ! wait_for 60 ready || ! wait_for 120 model_ready; then
  tail -n 30 "$tmp/daemon.log"
  echo "FAIL: tokenmilld did not become ready with its model under strace" >&2
  exit 1
fi
"$cli" --socket "$socket" generate --key test --max-tokens 8 --seed 1 "Once upon a time" \
  >"$tmp/generate.out" 2>&1 || fail "generate failed: $(cat "$tmp/generate.out")"
"$cli" --socket "$socket" top --once --interval 200ms >"$tmp/top.out" 2>&1 ||
  fail "top --once (metrics scrape) failed: $(cat "$tmp/top.out")"
daemon_pid=$(pgrep -P "$strace_pid" -x tokenmilld)
kill -HUP "$daemon_pid"
wait_for 30 grep -q 'config_reloaded' "$tmp/daemon.log" || fail "no reload logged after SIGHUP"
kill -TERM "$daemon_pid"
wait "$strace_pid"
rc=$?
strace_pid=
[[ $rc -eq 0 ]] || fail "tokenmilld exited with $rc after SIGTERM"

# --- What the unit allows ----------------------------------------------------------------
# expand NAME: the system calls of a group (recursively) or the name itself.
expand() {
  if [[ $1 != @* ]]; then
    echo "$1"
    return
  fi
  local entry
  systemd-analyze syscall-filter --no-pager "$1" | tail -n +2 | sed 's/^ *//' |
    grep -v '^#' | grep -v '^$' | while read -r entry; do expand "$entry"; done
}
# SystemCallFilter= lines: the first is an allow list, "~" lines deny.
mapfile -t filters < <(sed -n 's/^SystemCallFilter=//p' "$unit")
if [[ ${#filters[@]} -eq 0 || ${filters[0]} == ~* ]]; then
  echo "FAIL: the unit has no SystemCallFilter= allow list" >&2
  exit 1
fi
for word in ${filters[0]}; do expand "$word"; done | sort -u >"$tmp/allowed"
for line in "${filters[@]:1}"; do
  [[ $line == ~* ]] || continue
  for word in ${line#\~}; do expand "$word"; done
done | sort -u >"$tmp/denied"
comm -23 "$tmp/allowed" "$tmp/denied" >"$tmp/permitted"

# --- What the daemon did ------------------------------------------------------------------
# The summary's rows: "% time seconds usecs/call calls [errors] syscall".
awk '/^-+ -+/ { table = !table; next } table && NF >= 5 { print $NF }' "$tmp/trace" |
  grep -v '^total$' | sort -u >"$tmp/used"
if [[ ! -s $tmp/used ]]; then
  echo "FAIL: no system call summary from strace" >&2
  exit 1
fi
echo "== system calls: tokenmilld made $(wc -l <"$tmp/used"), the unit permits $(wc -l <"$tmp/permitted")"
echo "  made: $(tr '\n' ' ' <"$tmp/used")"
outside=$(comm -23 "$tmp/used" "$tmp/permitted" | tr '\n' ' ')
if [[ -n $outside ]]; then
  fail "calls the unit's SystemCallFilter= would refuse: $outside"
else
  echo "  ok:   every call is permitted"
fi

# The unit lets CPU-only nodes turn MemoryDenyWriteExecute= on: the CPU
# daemon must never ask for memory both writable and executable.
wx=$(grep -E '(mmap|mprotect|pkey_mprotect)\(.*PROT_WRITE\|PROT_EXEC' "$tmp/trace" | head -n 3)
if [[ -n $wx ]]; then
  fail "writable and executable mappings: $wx"
else
  echo "  ok:   no mapping is both writable and executable"
fi

families=$(sed -n 's/.*RestrictAddressFamilies=//p' "$unit")
used_families=$(grep -oE '(socket|socketpair)\(AF_[A-Z0-9]+' "$tmp/trace" | sed 's/.*(//' | sort -u | tr '\n' ' ')
echo "== address families: used: $used_families; the unit allows: $families"
for family in $used_families; do
  if [[ " $families " != *" $family "* ]]; then
    fail "socket family $family is not in RestrictAddressFamilies="
  fi
done

echo
if [[ $failures -ne 0 ]]; then
  echo "syscalls test: $failures check(s) failed"
  exit 1
fi
echo "syscalls test: all checks passed"
