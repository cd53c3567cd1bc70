#!/usr/bin/env bash
# Builds tokenmilld and the tokenmill CLI, starts the daemon on a demo config
# in a scratch directory, and shows it answering on its socket and /metrics.
#
#   bash packaging/demo.sh          # show, then stop the daemon (SIGTERM)
#   bash packaging/demo.sh --keep   # leave it running in the foreground (Ctrl-C stops)
set -euo pipefail
cd "$(dirname "$0")/.."

bash packaging/install-build-deps.sh
cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build/release -j "$(nproc)" --target tokenmilld tokenmill

bin=build/release/daemon
demo=$(mktemp -d /tmp/tokenmill-demo-XXXXXX)
sed "s|@DEMO@|$demo|g" packaging/demo.toml > "$demo/tokenmill.toml"
socket="$demo/tokenmill.sock"

say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

say tokenmilld --check-config --config "$demo/tokenmill.toml"
$bin/tokenmilld --check-config --config "$demo/tokenmill.toml"

say tokenmilld --config "$demo/tokenmill.toml" '&'
$bin/tokenmilld --config "$demo/tokenmill.toml" --log-target stderr 2> >(tee "$demo/tokenmilld.log" >&2) &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  curl -sf --unix-socket "$socket" http://localhost/readyz >/dev/null 2>&1 && break
  kill -0 $pid 2>/dev/null || { echo "tokenmilld exited; log: $demo/tokenmilld.log"; exit 1; }
  sleep 0.1
done
sleep 1.2  # one device sample

say tokenmill --socket "$socket" status
$bin/cli/tokenmill --socket "$socket" status
say tokenmill --socket "$socket" devices
$bin/cli/tokenmill --socket "$socket" devices
say curl --unix-socket "$socket" http://localhost/readyz
curl -s --unix-socket "$socket" http://localhost/readyz; echo
metrics=$(curl -s --unix-socket "$socket" http://localhost/control/v1/node |
          sed -n 's/.*"metrics":{"listen":"\([^"]*\)".*/\1/p')
say curl -s "http://$metrics/metrics" '| grep ^tokenmill_'
curl -s "http://$metrics/metrics" | grep '^tokenmill_'

if [ "${1:-}" = "--keep" ]; then
  echo; echo "tokenmilld is running (pid $pid, socket $socket); Ctrl-C stops it."
  wait $pid
else
  say kill -TERM $pid
  kill -TERM $pid
  wait $pid && echo "tokenmilld drained and exited with status 0"
fi
trap - EXIT
