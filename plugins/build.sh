#!/usr/bin/env bash
# Builds every first-party plugin, in every language, into WebAssembly components in OUT_DIR:
#   rust:   plugins/NAME (members of plugins/Cargo.toml)  -> NAME.wasm (crate name, `-` as `_`)
#   python: plugins/python/NAME/app.py                    -> py-NAME.wasm  (componentize-py)
#   js:     plugins/js/NAME/{app.js,package.json,lock}    -> js-NAME.wasm  (componentize-js)
#   c:      plugins/c/build.sh OUT_DIR, when it exists    -> c-NAME.wasm
# Tools are pinned and installed when missing under the target dir: componentize-py in a
# virtualenv (TARGET/python/venv), componentize-js with `npm ci` from each plugin's
# package-lock.json (TARGET/js/tools-HASH, shared by plugins with the same lock file).
#
# Reproducible: Rust and C builds give the same bytes from the same source (paths are
# remapped, so the checkout's location does not matter). componentize-py 0.25.1 and
# componentize-js 0.23.0 do not: they snapshot an interpreter heap after running its
# initialisation inside wizer, and that heap holds the guest's own random hash seeds,
# clock readings and allocation layout (upstream: componentize-py#247, ComponentizeJS#321;
# PYTHONHASHSEED, SOURCE_DATE_EPOCH or PYTHONDONTWRITEBYTECODE on the host do not reach the
# guest: tried, the bytes still differ, and it still writes __pycache__ into the source dir,
# which the digest ignores). So a Python or JS
# component is rebuilt only when the digest of its inputs (sources, lock file, WIT, tool
# version, world) changed: the digest is kept in NAME.wasm.inputs, and an unchanged source
# keeps the very same bytes (and the agent's compile cache, keyed by content, keeps hitting).
#
# Usage: plugins/build.sh [OUT_DIR]      (default OUT_DIR: target/plugins at the repo root,
#   where examples/tests/*.toml look; the tools and the Rust build stay under TARGET)
# Prints OUT_DIR as its last line on stdout; progress goes to stderr.
# Environment: CARGO_TARGET_DIR (default: target/ at the repo root);
#   VIGIL_LANGS    languages to build (default "rust python js c");
#   VIGIL_WIT      the WIT directory to build Python/JS plugins against (default: wit/);
#   VIGIL_RUST_PACKAGES  only these Rust packages (space separated; default: all);
#   VIGIL_RUST_TARGET_DIR  cargo target dir of the Rust plugins (default: TARGET/wasm-plugins);
#   VIGIL_REBUILD=1      rebuild Python/JS components even when their inputs are unchanged.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"
mkdir -p "$target"
target="$(cd "$target" && pwd)"
wit="$(cd "${VIGIL_WIT:-$repo/wit}" && pwd)"
out="${1:-$repo/target/plugins}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
langs=" ${VIGIL_LANGS:-rust python js c} "
py_version="0.25.1"
wants() { [[ "$langs" == *" $1 "* ]]; }
say() { echo "$*" >&2; }

# Digest of a plugin's inputs: file names (relative) and contents, sorted, plus extras.
inputs_digest() {
  local dir="$1"
  shift
  {
    printf '%s\n' "$@"
    (cd "$dir" && find . -type f ! -path './node_modules/*' ! -path '*/__pycache__/*' ! -name '*.wasm' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
    (cd "$wit" && find . -maxdepth 1 -type f -name '*.wit' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
  } | sha256sum | cut -d' ' -f1
}

# Whether OUT is up to date for DIGEST.
fresh() { [ -f "$1" ] && [ "$(cat "$1.inputs" 2>/dev/null)" = "$2" ] && [ -z "${VIGIL_REBUILD:-}" ]; }

build_rust() {
  if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    say "error: the wasm32-wasip2 target is missing; run: rustup target add wasm32-wasip2"
    exit 1
  fi
  local rust_target="${VIGIL_RUST_TARGET_DIR:-$target/wasm-plugins}" packages=()
  for p in ${VIGIL_RUST_PACKAGES:-}; do packages+=(-p "$p"); done
  local cargo_home="${CARGO_HOME:-$HOME/.cargo}"
  # Paths into the checkout and the registry are remapped: the bytes do not depend on where they are.
  RUSTFLAGS="--remap-path-prefix=$repo=/vigil --remap-path-prefix=$cargo_home=/cargo" \
    cargo build --quiet --release --target wasm32-wasip2 --manifest-path "$here/Cargo.toml" \
    --target-dir "$rust_target" "${packages[@]}" >&2
  for wasm in "$rust_target"/wasm32-wasip2/release/*.wasm; do
    cmp -s "$wasm" "$out/$(basename "$wasm")" || cp "$wasm" "$out/"
  done
}

install_componentize_py() {
  local venv="$target/python/venv"
  componentize_py="$venv/bin/componentize-py"
  if "$componentize_py" --version 2>/dev/null | grep -qF "$py_version"; then
    return
  fi
  if ! command -v python3 >/dev/null; then
    say "error: python3 is missing; install it (e.g. apt-get install python3 python3-venv)"
    exit 1
  fi
  say "installing componentize-py $py_version into $venv"
  python3 -m venv "$venv" || {
    say "error: cannot create a virtualenv; install python3-venv"
    exit 1
  }
  "$venv/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$py_version" >&2
}

build_python() {
  local apps=("$here"/python/*/app.py)
  [ -e "${apps[0]}" ] || return 0
  install_componentize_py
  for app in "${apps[@]}"; do
    local dir name world wasm digest
    dir="$(dirname "$app")"
    name="$(basename "$dir")"
    world="$(cat "$dir/world" 2>/dev/null || echo alert-rule)"
    wasm="$out/py-$name.wasm"
    digest="$(inputs_digest "$dir" "componentize-py $py_version" "world $world")"
    fresh "$wasm" "$digest" && continue
    say "building $wasm from $dir ($world) against $wit"
    (cd "$dir" && "$componentize_py" -d "$wit" -w "$world" \
      componentize app -o "$wasm.tmp$$" >&2)
    mv "$wasm.tmp$$" "$wasm"
    echo "$digest" >"$wasm.inputs"
  done
}

# Installs the node_modules a lock file pins (once per distinct lock) and prints their path.
js_tools() {
  local dir="$1" lock_hash tools
  lock_hash="$(cat "$dir/package.json" "$dir/package-lock.json" | sha256sum | cut -c1-16)"
  tools="$target/js/tools-$lock_hash"
  if [ ! -f "$tools/.installed" ]; then
    if ! command -v npm >/dev/null; then
      say "error: node and npm are missing; install them (e.g. apt-get install nodejs npm)"
      exit 1
    fi
    say "installing the JavaScript build tools of $dir/package-lock.json into $tools"
    rm -rf "$tools"
    mkdir -p "$tools"
    cp "$dir/package.json" "$dir/package-lock.json" "$tools/"
    (cd "$tools" && npm ci --no-audit --no-fund --loglevel=error >&2)
    touch "$tools/.installed"
  fi
  echo "$tools/node_modules"
}

build_js() {
  local pkgs=("$here"/js/*/package.json)
  [ -e "${pkgs[0]}" ] || return 0
  for pkg in "${pkgs[@]}"; do
    local dir name world wasm digest tools
    dir="$(dirname "$pkg")"
    name="$(basename "$dir")"
    if [ ! -f "$dir/package-lock.json" ]; then
      say "error: $dir has no package-lock.json: run npm install --package-lock-only there"
      exit 1
    fi
    world="$(node -e 'const p=require(process.argv[1]);console.log((p.vigil&&p.vigil.world)||"alert-rule")' "$pkg")"
    wasm="$out/js-$name.wasm"
    digest="$(inputs_digest "$dir" "$(cat "$here/js/build.mjs")" "world $world")"
    fresh "$wasm" "$digest" && continue
    tools="$(js_tools "$dir")"
    say "building $wasm from $dir ($world) against $wit"
    node "$here/js/build.mjs" "$tools" "$dir/app.js" "$wit" "$world" "$wasm" >&2
    echo "$digest" >"$wasm.inputs"
  done
}

wants rust && build_rust
wants python && build_python
wants js && build_js
# The C plugins have a build script of their own: it gets OUT_DIR and writes c-NAME.wasm there.
if wants c && [ -f "$here/c/build.sh" ]; then
  bash "$here/c/build.sh" "$out" >&2
fi
say "plugins built into $out"
echo "$out"
