#!/usr/bin/env bash
# Builds only the Python plugins (plugins/python/NAME/app.py -> py-NAME.wasm); see build.sh.
# Usage: plugins/build-python.sh [OUT_DIR]   (default OUT_DIR: TARGET/python/plugins-WITDIR)
# Prints OUT_DIR as its last line.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
target="${CARGO_TARGET_DIR:-$here/../target}"
wit="$(cd "${VIGIL_WIT:-$here/../wit}" && pwd)"
VIGIL_LANGS=python exec bash "$here/build.sh" "${1:-$target/python/plugins-$(basename "$wit")}"
