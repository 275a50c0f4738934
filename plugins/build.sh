#!/usr/bin/env bash
# Builds every plugin in this directory into a WebAssembly component.
# Usage: plugins/build.sh [OUT_DIR]   (default OUT_DIR: target/plugins at the repo root)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/../target/plugins}"
target_dir="${CARGO_TARGET_DIR:-$here/../target}/wasm-plugins"
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
  echo "error: the wasm32-wasip2 target is missing; run: rustup target add wasm32-wasip2" >&2
  exit 1
fi
cargo build --release --target wasm32-wasip2 --manifest-path "$here/Cargo.toml" --target-dir "$target_dir"
mkdir -p "$out"
for wasm in "$target_dir"/wasm32-wasip2/release/*.wasm; do
  cp "$wasm" "$out/"
done
echo "plugins built into $out:"
ls -l "$out"
