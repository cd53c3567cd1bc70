#!/usr/bin/env bash
# Validates generated outputs with ajv (JSON Schema 2020-12) + ajv-formats,
# installed once under NPM_PREFIX at pinned versions.
#   ajv_validate.sh NPM_PREFIX OUTPUTS_JSON
set -euo pipefail
prefix="$1"
ajv_version="8.17.1"
formats_version="3.0.1"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "FAIL: node or npm not installed (packaging/install-build-deps.sh installs them)" >&2
  exit 1
fi
installed() {
  grep -q "\"version\": \"$ajv_version\"" "$prefix/node_modules/ajv/package.json" 2>/dev/null &&
    grep -q "\"version\": \"$formats_version\"" "$prefix/node_modules/ajv-formats/package.json" 2>/dev/null
}
if ! installed; then
  mkdir -p "$prefix"
  # Test binaries of several builds may install at once: one lock.
  exec 9>"$prefix/.lock"
  flock 9
  if ! installed; then
    if ! npm install --prefix "$prefix" --no-audit --no-fund "ajv@$ajv_version" \
        "ajv-formats@$formats_version" >"$prefix/install.log" 2>&1; then
      echo "FAIL: npm install ajv failed; see $prefix/install.log" >&2
      cat "$prefix/install.log" >&2
      exit 1
    fi
  fi
  flock -u 9
fi
NODE_PATH="$prefix/node_modules" node "$(dirname "$0")/ajv_validate.cjs" "$2"
