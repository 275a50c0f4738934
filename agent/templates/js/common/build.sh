#!/usr/bin/env bash
# Builds {{name}}.wasm: installs the pinned componentize-js (npm ci) when missing, then
# runs build.mjs.
set -euo pipefail
cd "$(dirname "$0")"
[ -d node_modules/@bytecodealliance/componentize-js ] || npm ci --no-audit --no-fund
node build.mjs
