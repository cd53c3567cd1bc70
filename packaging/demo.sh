#!/usr/bin/env bash
# Builds tokenmilld and the tokenmill CLI, writes a small synthetic model,
# starts the daemon on a demo config (the model, two tenants) in a scratch
# directory, streams tokens for both tenants through the OpenAI-compatible API,
# and shows the node on its socket and /metrics.
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

say tokenmill model synth --shape small --type q8_0 --out "$demo/demo.gguf"
$bin/cli/tokenmill model synth --shape small --type q8_0 --out "$demo/demo.gguf"

say tokenmilld --check-config --config "$demo/tokenmill.toml"
$bin/tokenmilld --check-config --config "$demo/tokenmill.toml"

say tokenmilld --config "$demo/tokenmill.toml" '&'
$bin/tokenmilld --config "$demo/tokenmill.toml" --log-target stderr 2> >(tee "$demo/tokenmilld.log" >&2) &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do  # ready once listening and the config's model has loaded
  curl -sf --unix-socket "$socket" http://localhost/readyz >/dev/null 2>&1 && break
  kill -0 $pid 2>/dev/null || { echo "tokenmilld exited; log: $demo/tokenmilld.log"; exit 1; }
  sleep 0.1
done
sleep 1.2  # one device sample
cli() { $bin/cli/tokenmill --socket "$socket" "$@"; }

say tokenmill --socket "$socket" status
cli status
say tokenmill --socket "$socket" devices
cli devices
for _ in $(seq 1 300); do  # the config's model loads in the background
  cli --json models list | grep -q '"state":"ready"' && break
  sleep 0.1
done
say tokenmill models list
cli models list
say tokenmill tenants list
cli tenants list

# Two tenants stream at once (keys "test" and "test2" in demo.toml); the
# scheduler shares the model between them by weight (acme 2 : globex 1).
say tokenmill generate --key test --max-tokens 48 "Once upon a time" '&' \
    tokenmill generate --key test2 --max-tokens 48 "The factory made"
cli generate --key test --max-tokens 48 --seed 1 "Once upon a time" > "$demo/acme.txt" 2> "$demo/acme.err" &
gen=$!
cli generate --key test2 --max-tokens 48 --seed 2 "The factory made"
wait $gen
echo; echo "acme's stream (printed as it arrived into $demo/acme.txt):"; cat "$demo/acme.txt"; cat "$demo/acme.err"
say curl --unix-socket "$socket" http://localhost/v1/chat/completions -H "Authorization: Bearer test" ...
curl -s --unix-socket "$socket" http://localhost/v1/chat/completions \
  -H "Authorization: Bearer test" -H "Content-Type: application/json" \
  -d '{"model":"demo","messages":[{"role":"user","content":"Hello!"}],"max_tokens":16}'
echo
say tokenmill models list
cli models list
sleep 1.1  # the cost ledger closes an interval every second
# What the tokens cost to make on this node and what they earned, per tenant.
say tokenmill usage --group total
cli usage --group total
say curl --unix-socket "$socket" http://localhost/control/v1/cost
curl -s --unix-socket "$socket" http://localhost/control/v1/cost; echo
say curl --unix-socket "$socket" http://localhost/readyz
curl -s --unix-socket "$socket" http://localhost/readyz; echo
metrics=$(curl -s --unix-socket "$socket" http://localhost/control/v1/node |
          sed -n 's/.*"metrics":{"listen":"\([^"]*\)".*/\1/p')
say curl -s "http://$metrics/metrics" '| grep ^tokenmill_'
curl -s "http://$metrics/metrics" | grep '^tokenmill_' | grep -v '_bucket{'

if [ "${1:-}" = "--keep" ]; then
  echo; echo "tokenmilld is running (pid $pid, socket $socket); Ctrl-C stops it."
  wait $pid
else
  say kill -TERM $pid
  kill -TERM $pid
  wait $pid && echo "tokenmilld drained and exited with status 0"
fi
trap - EXIT
