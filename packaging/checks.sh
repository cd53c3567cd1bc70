# Sourced by the packaging test scripts: pass/fail reporting and a failure
# count (tests/packaging/deb_test.sh, packaging/container/test-image.sh).
failures=0
pass() { echo "  ok:   $*"; }
fail() {
  echo "  FAIL: $*"
  failures=$((failures + 1))
}
# check DESCRIPTION COMMAND...: passes when the command succeeds.
check() {
  local what=$1
  shift
  if "$@"; then pass "$what"; else fail "$what"; fi
}
