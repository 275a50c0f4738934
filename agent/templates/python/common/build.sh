#!/usr/bin/env bash
# Builds {{name}}.wasm (a WebAssembly component, CPython inside: ~18 MB) with
# componentize-py 0.25.1, installed into a virtualenv (VENV, default .venv) when missing.
set -euo pipefail
cd "$(dirname "$0")"
version="0.25.1"
venv="${VENV:-.venv}"
if ! "$venv/bin/componentize-py" --version 2>/dev/null | grep -qF "$version"; then
  python3 -m venv "$venv" || { echo "error: cannot create a virtualenv; install python3-venv" >&2; exit 1; }
  "$venv/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$version"
fi
"$venv/bin/componentize-py" -d wit -w {{world}} componentize app -o {{name}}.wasm
echo "built {{name}}.wasm"
