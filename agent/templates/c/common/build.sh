#!/usr/bin/env bash
# Builds {{name}}.wasm, a WebAssembly component of the {{world}} world, from the *.c files here:
#   wit-bindgen c (bindings from wit/) -> clang, wasm32-wasi reactor -> wasm-tools component new
#   --adapt (the WASI preview1 reactor adapter of the agent's wasmtime).
# Installs what is missing, at pinned versions: Debian's clang-16, lld-16, compiler-rt for
# wasm32 and wasi-libc (apt-get, as root); wit-bindgen-cli and wasm-tools (cargo install into
# TOOLS, default ~/.cache/vigil/c-tools: ~10 min once per machine; a wasm-tools of the pinned
# version on PATH is used as it is); the adapter crate (cargo; adapter/Cargo.lock pins its
# checksum). The same sources give the same bytes.
set -euo pipefail
cd "$(dirname "$0")"
here="$(pwd)"
tools="${TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/vigil/c-tools}"

llvm=16
deb_llvm_version="1:16.0.6-15~deb12u1"
deb_wasi_libc_version="0.0~git20220510.9886d3d-2"
wit_bindgen_version="0.61.1"
wasm_tools_version="1.263.0"
adapter_crate="wasi-preview1-component-adapter-provider"

die() {
  echo "error: $*" >&2
  exit 1
}

# Debian packages: clang, wasm-ld, compiler-rt builtins for wasm32, wasi-libc.
missing=()
for pinned in "clang-$llvm=$deb_llvm_version" "lld-$llvm=$deb_llvm_version" \
  "libclang-rt-$llvm-dev-wasm32=$deb_llvm_version" "wasi-libc=$deb_wasi_libc_version"; do
  if [ "$(dpkg-query -W -f='${Version}' "${pinned%%=*}" 2>/dev/null || true)" != "${pinned#*=}" ]; then
    missing+=("$pinned")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null ||
    die "missing Debian packages; install them with: apt-get install ${missing[*]}"
  echo "installing ${missing[*]}" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 || {
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 ||
      die "cannot install ${missing[*]} (this script expects Debian 12)"
  }
fi

# cargo tools: PATH first, then TOOLS, installing there when neither has the pinned version.
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
  echo "installing $crate $version into $tools (cargo install; ~10 min the first time)" >&2
  CARGO_TARGET_DIR="$tools/build" cargo install --quiet --locked --root "$tools" \
    --version "=$version" "$crate" >&2 || die "cargo install $crate@$version failed"
  echo "$tools/bin/$bin"
}
wit_bindgen="$(cargo_tool wit-bindgen wit-bindgen-cli "$wit_bindgen_version")"
wasm_tools="$(cargo_tool wasm-tools wasm-tools "$wasm_tools_version")"

# The WASI preview1 reactor adapter, from its crate's source (fetched by cargo metadata).
adapter_manifest="$(cargo metadata --quiet --format-version 1 --locked --manifest-path adapter/Cargo.toml |
  grep -o "\"manifest_path\":\"[^\"]*/$adapter_crate-[^/\"]*/Cargo.toml\"" |
  head -n1 | sed 's/^"manifest_path":"//; s/"$//')" || die "cannot fetch $adapter_crate (cargo metadata on adapter/)"
adapter="$(dirname "$adapter_manifest")/artefacts/wasi_snapshot_preview1.reactor.wasm"
[ -f "$adapter" ] || die "the adapter is not at $adapter"

rm -rf build
mkdir -p build/gen
if ! "$wit_bindgen" c wit --world {{world}} --out-dir build/gen >build/wit-bindgen.log 2>&1; then
  cat build/wit-bindgen.log >&2
  die "wit-bindgen c failed (is wit/ the contract's WIT with a world {{world}}?)"
fi
cflags=(--target=wasm32-wasi --sysroot=/usr -O2 -std=c11 -ffp-contract=off -Wall -Wextra
  -Wno-unused-parameter -ffile-prefix-map="$here"=. -DNDEBUG -Ibuild/gen -Ivendor)
objects=()
for src in build/gen/*.c *.c; do
  obj="build/$(basename "${src%.c}").o"
  "clang-$llvm" "${cflags[@]}" -c "$src" -o "$obj"
  objects+=("$obj")
done
# A reactor (no main): the host calls the exports, the instance lives on between calls.
"clang-$llvm" --target=wasm32-wasi --sysroot=/usr -mexec-model=reactor "${objects[@]}" \
  build/gen/*_component_type.o -o build/core.wasm -Wl,--strip-debug
"$wasm_tools" component new build/core.wasm --adapt "wasi_snapshot_preview1=$adapter" -o build/{{name}}.wasm
"$wasm_tools" validate --features component-model build/{{name}}.wasm
mv build/{{name}}.wasm {{name}}.wasm
echo "built {{name}}.wasm"
