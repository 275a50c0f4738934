#!/usr/bin/env bash
# Runs the policy's tests (test/{{name}}.toml) with `vigil plugin test`, its proposals judged
# by the gate of test/vigil.toml; build it first (./build.sh). VIGIL names the vigil binary.
set -euo pipefail
cd "$(dirname "$0")"
exec "${VIGIL:-vigil}" plugin test test/{{name}}.toml --config test/vigil.toml
