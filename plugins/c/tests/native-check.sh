#!/usr/bin/env bash
# Builds plugins/c/ewma-anomaly natively (gcc, -fsanitize=address,undefined) with the bindings
# plugins/c/build.sh generated and the in-process host of native_host.c, runs it and compares
# its output with expected.txt. A leak, a double free, a use after free or undefined behaviour
# fails the run. Needs gcc with libasan/libubsan (Debian: gcc).
# Environment: CARGO_TARGET_DIR (as for build.sh).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
target="$(cd "${CARGO_TARGET_DIR:-$repo/target}" 2>/dev/null && pwd || echo "${CARGO_TARGET_DIR:-$repo/target}")"
"$here/../build.sh" >/dev/null
gen="$target/c/work/ewma-anomaly/gen"
if [ ! -f "$gen/alert_rule.h" ]; then
  # build.sh skipped an up-to-date component: make the bindings again.
  rm -f "$target"/c/plugins-*/c-ewma-anomaly.wasm.inputs
  "$here/../build.sh" >/dev/null
fi
exe="$target/c/native-check"
gcc -std=c11 -g -O1 -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer \
  -Wno-attributes -I"$gen" -I"$here/../vendor" \
  "$here/native_host.c" "$gen/alert_rule.c" "$here/../ewma-anomaly/ewma_anomaly.c" -lm -o "$exe"
if ! got="$(ASAN_OPTIONS=detect_leaks=1 "$exe")"; then
  echo "FAILED: the native run of c-ewma-anomaly stopped with a sanitizer report (above)" >&2
  exit 1
fi
if diff -u "$here/expected.txt" <(echo "$got"); then
  echo "ok: c-ewma-anomaly natively, under ASan/LSan/UBSan"
else
  echo "FAILED: c-ewma-anomaly differs from plugins/c/tests/expected.txt (- expected, + got)" >&2
  exit 1
fi
