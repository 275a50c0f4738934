#!/usr/bin/env bash
# Builds every Python plugin (plugins/python/NAME/app.py) into a WebAssembly component
# py-NAME.wasm with componentize-py, installed into a virtualenv under the target dir
# when missing. A component is rebuilt only when its source or the WIT changed (a build
# takes ~10 s). Used by the tests (vigil_testkit::python) and .ci/run.
# Usage: plugins/build-python.sh [OUT_DIR]   (default OUT_DIR: TARGET/python/plugins-WITDIR)
# Prints OUT_DIR as its last line.
# Environment: CARGO_TARGET_DIR (default: target/ at the repo root),
#              VIGIL_WIT (the WIT directory to build against; default: wit/ at the repo root).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"
wit="$(cd "${VIGIL_WIT:-$repo/wit}" && pwd)"
out="${1:-$target/python/plugins-$(basename "$wit")}"
version="0.25.1"
venv="$target/python/venv"
componentize="$venv/bin/componentize-py"

if ! "$componentize" --version 2>/dev/null | grep -qF "$version"; then
  if ! command -v python3 >/dev/null; then
    echo "error: python3 is missing; install it (e.g. apt-get install python3 python3-venv)" >&2
    exit 1
  fi
  echo "installing componentize-py $version into $venv" >&2
  python3 -m venv "$venv" || {
    echo "error: cannot create a virtualenv; install python3-venv" >&2
    exit 1
  }
  "$venv/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$version"
fi

mkdir -p "$out"
for app in "$here"/python/*/app.py; do
  dir="$(dirname "$app")"
  name="$(basename "$dir")"
  wasm="$out/py-$name.wasm"
  if [ -f "$wasm" ] && [ -z "$(find "$dir" "$wit" -type f -newer "$wasm" -print -quit)" ]; then
    continue
  fi
  echo "building $wasm from $dir against $wit" >&2
  (cd "$dir" && "$componentize" -d "$wit" -w alert-rule componentize app -o "$wasm.tmp$$")
  mv "$wasm.tmp$$" "$wasm"
done
echo "$out"
