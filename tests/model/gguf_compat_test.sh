#!/usr/bin/env bash
# Cross-checks tokenmill's GGUF writer against another implementation: the
# @huggingface/gguf npm package parses synthetic files and compares tensors
# and metadata with what the writer tool says it wrote.
#   gguf_compat_test.sh WRITER_TOOL NPM_PREFIX SCRIPT.mjs
# Fails when node/npm or the package are missing: the README's test command
# installs them (packaging/install-build-deps.sh).
set -euo pipefail
writer="$1"
prefix="$2"
script="$3"
version="0.4.6"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "FAIL: node or npm not installed (packaging/install-build-deps.sh installs them)"
  exit 1
fi
pkg="$prefix/node_modules/@huggingface/gguf/package.json"
if [[ ! -f "$pkg" ]] || ! grep -q "\"version\": \"$version\"" "$pkg"; then
  mkdir -p "$prefix"
  if ! npm install --prefix "$prefix" --no-audit --no-fund "@huggingface/gguf@$version" >"$prefix/install.log" 2>&1; then
    echo "FAIL: npm install @huggingface/gguf@$version failed; see $prefix/install.log"
    cat "$prefix/install.log"
    exit 1
  fi
fi

work="$(mktemp -d /tmp/tokenmill-gguf-compat-XXXXXX)"
trap 'rm -rf "$work"' EXIT
for variant in "llama q8_0 untied" "llama q4_0 tied" "llama bf16 untied" "qwen2 f16 untied" \
               "qwen2 f32 tied" "qwen3 q8_0 untied" "gemma3 f16 tied"; do
  read -r arch type tied <<<"$variant"
  file="$work/$arch-$type-$tied.gguf"
  "$writer" "$file" "$file.json" "$arch" "$type" "$tied"
  node "$script" "$prefix" "$file" "$file.json"
done
