#!/usr/bin/env bash
# Runs a script against tokenmilld with the official `openai` npm package,
# installed once under NPM_PREFIX, and prints what it saw as JSON:
#   openai_client_test.sh NPM_PREFIX BASE_URL API_KEY MODEL
# streams chats and completions (openai_client.cjs);
#   OPENAI_SCRIPT=openai_tools.cjs openai_client_test.sh NPM_PREFIX BASE_URL API_KEY FORMAT=MODEL...
# streams tool calls.
# Fails when node/npm or the package are missing: the README's test command
# installs node (packaging/install-build-deps.sh); the package comes from npm.
set -euo pipefail
prefix="$1"
version="4.104.0"  # node-fetch based, runs on Debian 12's Node 18

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "FAIL: node or npm not installed (packaging/install-build-deps.sh installs them)" >&2
  exit 1
fi
pkg="$prefix/node_modules/openai/package.json"
if [[ ! -f "$pkg" ]] || ! grep -q "\"version\": \"$version\"" "$pkg"; then
  mkdir -p "$prefix"
  # Two test binaries (release, ASan) may install at once: one lock.
  exec 9>"$prefix/.lock"
  flock 9
  if [[ ! -f "$pkg" ]] || ! grep -q "\"version\": \"$version\"" "$pkg"; then
    if ! npm install --prefix "$prefix" --no-audit --no-fund "openai@$version" >"$prefix/install.log" 2>&1; then
      echo "FAIL: npm install openai@$version failed; see $prefix/install.log" >&2
      cat "$prefix/install.log" >&2
      exit 1
    fi
  fi
  flock -u 9
fi
NODE_PATH="$prefix/node_modules" node "$(dirname "$0")/${OPENAI_SCRIPT:-openai_client.cjs}" "${@:2}"
