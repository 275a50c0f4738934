#!/usr/bin/env bash
# Runs the plugin on fixtures/batch.json with the settings in test/vigil.toml and compares
# what it reports with test/expected.json. VIGIL names the vigil binary (default: vigil).
set -euo pipefail
cd "$(dirname "$0")"
got="$(mktemp)"
trap 'rm -f "$got"' EXIT
"${VIGIL:-vigil}" plugin test {{name}}.wasm --batch fixtures/batch.json --config test/vigil.toml >"$got"
if diff -u test/expected.json "$got"; then
  echo "ok: {{name}} reports what test/expected.json says"
else
  echo "FAILED: {{name}} differs from test/expected.json (- expected, + got)" >&2
  exit 1
fi
