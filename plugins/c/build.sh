#!/usr/bin/env bash
# Builds every C plugin (plugins/c/NAME/*.c) into a WebAssembly component c-NAME.wasm:
#   wit-bindgen c (bindings from the WIT)  ->  clang, wasm32-wasi reactor (a core module)
#   ->  wasm-tools component new --adapt (the WASI preview1 reactor adapter).
# Installs what is missing, at pinned versions: Debian's clang/lld/compiler-rt for wasm32
# and wasi-libc (apt-get, as root), wit-bindgen-cli and wasm-tools (cargo install into
# TARGET/tools, ~13 min on 2 cores the first time; a wasm-tools of the pinned version on
# PATH is used as it is), and the adapter crate (cargo, checksum pinned by
# plugins/c/adapter/Cargo.lock). A component is rebuilt only when one of its inputs changed
# (its sources, the WIT, the vendored headers, this script, the tool versions); the same
# inputs give the same bytes.
# Usage: plugins/c/build.sh [OUT_DIR]   (default OUT_DIR: TARGET/c/plugins-WITDIR)
# Prints OUT_DIR as its last line.
# Environment: CARGO_TARGET_DIR (default: target/ at the repo root),
#              VIGIL_WIT (the WIT directory to build against; default: wit/ at the repo root).
# A plugin builds against the world named in plugins/c/NAME/world (default: alert-rule).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"
mkdir -p "$target"
target="$(cd "$target" && pwd)"
wit="$(cd "${VIGIL_WIT:-$repo/wit}" && pwd)"
out="${1:-$target/c/plugins-$(basename "$wit")}"
work="$target/c/work"
tools="$target/tools"

# Pinned versions. The adapter's version is in plugins/c/adapter/Cargo.toml and must equal
# wasmtime's in the agent's Cargo.lock (checked below).
llvm=16
wit_bindgen_version="0.61.1"
wasm_tools_version="1.263.0"
adapter_crate="wasi-preview1-component-adapter-provider"

log() { echo "$*" >&2; }
die() {
  echo "error: $*" >&2
  exit 1
}

# --- Debian packages: clang, wasm-ld, compiler-rt builtins for wasm32, wasi-libc ---------
mapfile -t deb_packages < <(grep -v '^#' "$here/debian-packages" | grep .)
deb_missing=()
for pinned in "${deb_packages[@]}"; do
  package="${pinned%%=*}"
  version="${pinned#*=}"
  if [ "$(dpkg-query -W -f='${Version}' "$package" 2>/dev/null || true)" != "$version" ]; then
    deb_missing+=("$pinned")
  fi
done
if [ "${#deb_missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    die "missing Debian packages; install them with: apt-get install ${deb_missing[*]}"
  fi
  log "installing ${deb_missing[*]}"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${deb_missing[@]}" >&2; then
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${deb_missing[@]}" >&2 ||
      die "cannot install ${deb_missing[*]} (is this Debian 12 with its package lists reachable?)"
  fi
fi
clang="clang-$llvm"
command -v "$clang" >/dev/null || die "$clang is not on PATH after installing clang-$llvm"
sysroot=/usr # wasi-libc: /usr/include/wasm32-wasi and /usr/lib/wasm32-wasi

# --- cargo tools: wit-bindgen (wit-bindgen-cli) and wasm-tools ---------------------------
# Prints the path of binary $1 at version $3 (crate $2): PATH first, then TARGET/tools,
# installing it there when neither has that version.
cargo_tool() {
  local bin="$1" crate="$2" version="$3" path
  for path in "$(command -v "$bin" || true)" "$tools/bin/$bin"; do
    # `NAME VERSION` (wit-bindgen-cli 0.61.1, wasm-tools 1.263.0 (COMMIT DATE)).
    if [ -n "$path" ] && [ -x "$path" ] && [[ " $("$path" --version 2>/dev/null) " == *" $version "* ]]; then
      echo "$path"
      return
    fi
  done
  command -v cargo >/dev/null || die "cargo is missing: install Rust (rustup) to get $crate $version"
  log "installing $crate $version into $tools (cargo install; ~10 min the first time)"
  CARGO_TARGET_DIR="$target/tools-build" cargo install --quiet --locked --root "$tools" \
    --version "=$version" "$crate" >&2 || die "cargo install $crate@$version failed"
  echo "$tools/bin/$bin"
}
wit_bindgen="$(cargo_tool wit-bindgen wit-bindgen-cli "$wit_bindgen_version")"
wasm_tools="$(cargo_tool wasm-tools wasm-tools "$wasm_tools_version")"

# --- the WASI preview1 reactor adapter, from its crate's source --------------------------
adapter_version="$(sed -n "s/^$adapter_crate = \"=\(.*\)\"$/\1/p" "$here/adapter/Cargo.toml")"
[ -n "$adapter_version" ] || die "plugins/c/adapter/Cargo.toml does not pin $adapter_crate = \"=VERSION\""
if [ -f "$repo/Cargo.lock" ]; then
  wasmtime_version="$(grep -A1 '^name = "wasmtime"$' "$repo/Cargo.lock" | sed -n 's/^version = "\(.*\)"$/\1/p' | head -n1)"
  if [ -n "$wasmtime_version" ] && [ "$wasmtime_version" != "$adapter_version" ]; then
    die "the adapter ($adapter_crate $adapter_version) must match the agent's wasmtime ($wasmtime_version): set it in plugins/c/adapter/Cargo.toml and run cargo update there"
  fi
fi
adapter_manifest="$(cargo metadata --quiet --format-version 1 --locked \
  --manifest-path "$here/adapter/Cargo.toml" |
  grep -o "\"manifest_path\":\"[^\"]*/$adapter_crate-$adapter_version/Cargo.toml\"" |
  head -n1 | sed 's/^"manifest_path":"//; s/"$//')" ||
  die "cannot fetch $adapter_crate $adapter_version (cargo metadata on plugins/c/adapter)"
adapter="$(dirname "$adapter_manifest")/artefacts/wasi_snapshot_preview1.reactor.wasm"
[ -f "$adapter" ] || die "the adapter is not at $adapter"

# --- build every plugin -------------------------------------------------------------------
tool_versions="$("$clang" --version | head -n1); $("$wit_bindgen" --version); $("$wasm_tools" --version); $(sha256sum <"$adapter")"
# Flags that keep the bytes independent of where the repo and target dir are.
cflags=(
  --target=wasm32-wasi --sysroot="$sysroot"
  -O2 -std=c11 -ffp-contract=off -Wall -Wextra -Werror -Wno-unused-parameter
  -ffile-prefix-map="$repo"=. -ffile-prefix-map="$work"=. -DNDEBUG
  -I"$here/vendor"
)
mkdir -p "$out" "$work"
for dir in "$here"/*/; do
  dir="${dir%/}"
  name="$(basename "$dir")"
  sources=("$dir"/*.c)
  [ -e "${sources[0]}" ] || continue # adapter/, vendor/: no C sources
  [ "$name" != tests ] || continue   # tests/: a native check, not a plugin
  world="alert-rule"
  if [ -f "$dir/world" ]; then world="$(tr -d '[:space:]' <"$dir/world")"; fi
  wasm="$out/c-$name.wasm"
  stamp="$wasm.inputs"
  inputs="$(
    {
      echo "$tool_versions; world $world; flags ${cflags[*]}"
      cd "$repo" && find "plugins/c/$name" "plugins/c/vendor" "plugins/c/build.sh" -type f -print0 |
        sort -z | xargs -0 sha256sum
      cd "$wit" && find . -type f -print0 | sort -z | xargs -0 sha256sum
    } | sha256sum | cut -d' ' -f1
  )"
  if [ -f "$wasm" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$inputs" ]; then
    continue
  fi
  log "building c-$name.wasm (world $world) into $out, from $dir against $wit"
  build="$work/$name"
  rm -rf "$build"
  mkdir -p "$build/gen"
  # wit-bindgen names every file it writes on stderr: shown only when it fails.
  if ! "$wit_bindgen" c "$wit" --world "$world" --out-dir "$build/gen" >"$build/wit-bindgen.log" 2>&1; then
    cat "$build/wit-bindgen.log" >&2
    die "wit-bindgen c failed for $dir (world $world)"
  fi
  # Compile from inside the build dir with relative paths: nothing absolute ends up in the module.
  (
    cd "$build"
    objects=()
    for src in gen/*.c "${sources[@]}"; do
      obj="$(basename "${src%.c}").o"
      "$clang" "${cflags[@]}" -Igen -c "$src" -o "$obj"
      objects+=("$obj")
    done
    # A reactor: no main; the host calls the exports (a command would exit after main).
    "$clang" --target=wasm32-wasi --sysroot="$sysroot" -mexec-model=reactor \
      "${objects[@]}" gen/*_component_type.o -o core.wasm -Wl,--strip-debug
    "$wasm_tools" component new core.wasm --adapt "wasi_snapshot_preview1=$adapter" -o component.wasm
    "$wasm_tools" validate --features component-model component.wasm
  )
  mv "$build/component.wasm" "$wasm.tmp$$"
  mv "$wasm.tmp$$" "$wasm"
  echo "$inputs" >"$stamp"
done
echo "$out"
