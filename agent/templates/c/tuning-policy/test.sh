#!/usr/bin/env bash
# Runs the policy on fixtures/batch.json, shown the current settings in fixtures/settings.json,
# with the settings and the gate in test/vigil.toml, and compares what it proposes (and the
# gate's verdict, touching no server) with test/expected.jsonl. VIGIL names the vigil binary.
set -euo pipefail
cd "$(dirname "$0")"
got="$(mktemp)"
trap 'rm -f "$got"' EXIT
"${VIGIL:-vigil}" plugin test {{name}}.wasm --batch fixtures/batch.json \
  --settings fixtures/settings.json --config test/vigil.toml >"$got"
if diff -u test/expected.jsonl "$got"; then
  echo "ok: {{name}} proposes what test/expected.jsonl says"
else
  echo "FAILED: {{name}} differs from test/expected.jsonl (- expected, + got)" >&2
  exit 1
fi
