#!/usr/bin/env bash
# Runs the plugin's tests (test/{{name}}.toml) with `vigil plugin test`; build it first
# (./build.sh). VIGIL names the vigil binary (default: vigil).
set -euo pipefail
cd "$(dirname "$0")"
exec "${VIGIL:-vigil}" plugin test test/{{name}}.toml
