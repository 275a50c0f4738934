#!/usr/bin/env bash
# Builds the Debian package of vigil: the Rust example plugins (plugins/build.sh) into
# TARGET/release/vigil-plugins, then `cargo deb -p vigil` (release build; the metadata is
# [package.metadata.deb] in agent/Cargo.toml, the unit and maintainer scripts are in
# packaging/debian/). cargo-deb is pinned and installed when missing under TARGET/tools (like
# the C plugins' tools). Prints the path of the .deb (TARGET/debian/) as its last line.
#   packaging/build-deb.sh --example-plugins   prints the example plugins' packages only.
# Environment: CARGO_TARGET_DIR (default: target/ at the repo root).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

# The Rust example plugins shipped in /usr/share/vigil/plugins (not the test fixtures): their
# package names, as in plugins/*/Cargo.toml; the files are named like the packages, `-` as `_`.
example_plugins="threshold redis_hit_ratio redis-memory pg_connection_saturation pg_slow_query pg_seqscan pg-work-mem agent-interval ewma-anomaly"
if [ "${1:-}" = --example-plugins ]; then
  echo "$example_plugins"
  exit 0
fi

target="${CARGO_TARGET_DIR:-$repo/target}"
mkdir -p "$target"
target="$(cd "$target" && pwd)"
export CARGO_TARGET_DIR="$target"
cargo_deb_version="3.8.0"
log() { echo "$*" >&2; }
die() {
  echo "error: $*" >&2
  exit 1
}

tools="$target/tools"
cargo_deb="$tools/bin/cargo-deb"
if ! [[ " $("$cargo_deb" --version 2>/dev/null) " == *" $cargo_deb_version "* ]]; then
  log "installing cargo-deb $cargo_deb_version into $tools (cargo install; a few minutes the first time)"
  CARGO_TARGET_DIR="$target/tools-build" cargo install --quiet --locked --root "$tools" \
    --version "=$cargo_deb_version" cargo-deb >&2 || die "cargo install cargo-deb@$cargo_deb_version failed"
fi
# cargo deb finds the shared libraries the binary needs with dpkg-shlibdeps (depends = "$auto").
if ! command -v dpkg-shlibdeps >/dev/null; then
  [ "$(id -u)" = 0 ] || die "dpkg-shlibdeps is missing: apt-get install dpkg-dev"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dpkg-dev >&2 ||
    { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dpkg-dev >&2; } ||
    die "cannot install dpkg-dev"
fi

log "building the example plugins: $example_plugins"
stage="$target/deb-plugins-build"
rm -rf "$stage"
VIGIL_LANGS=rust VIGIL_RUST_PACKAGES="$example_plugins" VIGIL_RUST_TARGET_DIR="$target/deb-wasm-plugins" \
  bash plugins/build.sh "$stage" >/dev/null
assets="$target/release/vigil-plugins"
rm -rf "$assets"
mkdir -p "$assets"
for name in $example_plugins; do
  file="${name//-/_}.wasm"
  [ -f "$stage/$file" ] || die "plugins/build.sh did not build $file"
  cp "$stage/$file" "$assets/"
done

log "cargo deb -p vigil (release build)"
# --strip: the release profile keeps line tables (for backtraces), which cargo deb would keep.
"$cargo_deb" -p vigil --locked --strip --output "$target/debian/" | tail -n1
