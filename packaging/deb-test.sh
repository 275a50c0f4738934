#!/usr/bin/env bash
# Builds the Debian package (packaging/build-deb.sh) and checks that it installs, removes
# and purges as a Debian package should, on this machine (root):
#   install: binary, unit, conffile, example plugins, docs; the user `vigil`; its state and
#            cache directories owned by it; `vigil check` of the packaged config passes; the
#            unit passes `systemd-analyze verify`; the agent, run as `vigil` on the packaged
#            layout, compiles and evaluates a plugin using only syscalls of the unit's
#            SystemCallFilter=@system-service (strace);
#   remove:  binary and unit gone, conffile and state kept;
#   purge:   conffile, state and cache gone, the user kept (Debian practice).
# Lists the files at each step and stops at the first deviation (exit 1). Idempotent: an
# installed vigil is purged first; the machine is left as it was found (the package purged,
# the user deleted when this script created it).
# Environment: CARGO_TARGET_DIR (default: target/ at the repo root).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
target="${CARGO_TARGET_DIR:-$repo/target}"
mkdir -p "$target"
target="$(cd "$target" && pwd)"
export CARGO_TARGET_DIR="$target"

# The Rust example plugins shipped in /usr/share/vigil/plugins (as packaging/build-deb.sh builds them).
example_plugins="$(bash packaging/build-deb.sh --example-plugins)"
unit_name="vigil.service"

say() { echo "== $*"; }
fail() {
  echo "deb-test: FAILED: $*" >&2
  exit 1
}
[ "$(id -u)" = 0 ] || fail "run as root (it installs and purges the package)"
command -v dpkg >/dev/null || fail "dpkg is missing: this test needs Debian"
apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1; }
}
command -v systemd-analyze >/dev/null || apt_install systemd || echo "note: systemd-analyze unavailable (systemd does not install here); the unit is not verified"
command -v strace >/dev/null || apt_install strace || echo "note: strace unavailable; the syscall filter is not checked"

say "building the package (packaging/build-deb.sh)"
deb="$(bash packaging/build-deb.sh | tail -n1)"
[ -f "$deb" ] || fail "packaging/build-deb.sh did not print the path of a .deb (got: $deb)"
echo "package: $deb ($(du -h "$deb" | cut -f1), $(stat -c %s "$deb") bytes)"
dpkg-deb --info "$deb" | sed -n '/Package:/,$p'
dpkg-deb --contents "$deb"

# --- helpers --------------------------------------------------------------------------------
# The unit is enabled at install (deb-systemd-helper: a symlink, also without systemd running).
wants="/etc/systemd/system/multi-user.target.wants/$unit_name"
paths=(/usr/bin/vigil /etc/vigil /var/lib/vigil /var/cache/vigil /usr/share/vigil /usr/share/doc/vigil
  /usr/lib/systemd/system/$unit_name "$wants")
list_files() {
  echo "-- files after $1:"
  for path in "${paths[@]}"; do
    if [ -e "$path" ] || [ -L "$path" ]; then find "$path" -printf '%M %u:%g %10s %p %l\n'; fi
  done
  echo "-- user: $(getent passwd vigil || echo 'no user vigil')"
  echo "-- dpkg: $(package_state) $(dpkg-query -W -f='${Version}' vigil 2>/dev/null || echo 'not known')"
}
expect_present() { for p in "$@"; do [ -e "$p" ] || fail "$p is missing"; done; }
expect_absent() { for p in "$@"; do [ ! -e "$p" ] || fail "$p is still there"; done; }
expect_owner() {
  local want="$1" path
  shift
  for path in "$@"; do
    [ "$(stat -c %U:%G "$path")" = "$want" ] || fail "$path is owned by $(stat -c %U:%G "$path"), not $want"
  done
}
# The syscalls of a systemd syscall group, nested groups expanded.
syscall_set() {
  local item
  for item in $(systemd-analyze syscall-filter "$1" | sed -nE 's/^ +([@a-z0-9_-]+)$/\1/p'); do
    if [[ "$item" == @* ]]; then syscall_set "$item"; else echo "$item"; fi
  done
}
unit_path() { grep "/systemd/system/$unit_name\$" <<<"$(dpkg-query -L vigil 2>/dev/null)" | head -n1 || true; }

user_existed=no
getent passwd vigil >/dev/null && user_existed=yes
# dpkg's state of vigil: `ii` installed, `rc` removed with its config left, `pn`/`un` or
# empty when not (or no longer) there.
package_state() { dpkg-query -W -f='${db:Status-Abbrev}' vigil 2>/dev/null | tr -d ' ' || true; }
package_known() { [[ "$(package_state)" == [ihrt]* ]]; }
purge_package() {
  if package_known; then dpkg --purge vigil >/dev/null; fi
}
cleanup() {
  purge_package || true
  if [ "$user_existed" = no ] && getent passwd vigil >/dev/null; then
    deluser --system vigil >/dev/null 2>&1 || true
    getent group vigil >/dev/null && delgroup --system vigil >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

# --- install --------------------------------------------------------------------------------
say "purging any installed vigil first"
purge_package
say "dpkg -i"
dpkg -i "$deb"
list_files "install"
unit="$(unit_path)"
[ -n "$unit" ] || fail "the package has no $unit_name"
expect_present /usr/bin/vigil /etc/vigil/agent.toml "$unit" /usr/share/doc/vigil/README.md \
  /usr/share/doc/vigil/copyright /var/lib/vigil/plugins /var/cache/vigil/plugins
for name in $example_plugins; do expect_present "/usr/share/vigil/plugins/${name//-/_}.wasm"; done
[ -x /usr/bin/vigil ] || fail "/usr/bin/vigil is not executable"
[ -L "$wants" ] || fail "the unit was not enabled ($wants is missing)"
grep -q ' /etc/vigil/agent.toml ' <<<"$(dpkg-query -W -f='${Conffiles}\n' vigil)" ||
  fail "/etc/vigil/agent.toml is not a conffile"
IFS=: read -r _ _ uid _ _ home shell < <(getent passwd vigil) || fail "no user vigil"
[ "$uid" -lt 1000 ] || fail "vigil is not a system user (uid $uid)"
[ "$home" = /var/lib/vigil ] || fail "vigil's home is $home, not /var/lib/vigil"
[[ "$shell" == */nologin || "$shell" == */false ]] || fail "vigil has a login shell ($shell)"
getent group vigil >/dev/null || fail "no group vigil"
expect_owner vigil:vigil /var/lib/vigil /var/lib/vigil/plugins /var/cache/vigil /var/cache/vigil/plugins
expect_owner root:root /usr/bin/vigil /etc/vigil/agent.toml
echo "binary: /usr/bin/vigil $(du -h /usr/bin/vigil | cut -f1) ($(stat -c %s /usr/bin/vigil) bytes)"
# (.debug_gdb_scripts is loaded with the program and stays: it is not debug info.)
if [ "$(readelf -S /usr/bin/vigil | grep -cE '\.debug_(info|line|str)')" != 0 ]; then
  fail "/usr/bin/vigil still has debug sections (cargo deb strips them)"
fi

say "vigil check --config /etc/vigil/agent.toml"
vigil check --config /etc/vigil/agent.toml || fail "vigil check of the packaged config failed"
say "vigil check as the service user, with an example plugin installed (compiles into the packaged cache)"
# (redis_hit_ratio needs no settings; threshold and ewma_anomaly refuse to load without theirs.)
install -o vigil -g vigil -m 0644 /usr/share/vigil/plugins/redis_hit_ratio.wasm /var/lib/vigil/plugins/
runuser -u vigil -- vigil check --config /etc/vigil/agent.toml || fail "vigil check as user vigil failed"
[ -n "$(find /var/cache/vigil/plugins -type f -user vigil)" ] || fail "nothing was cached in /var/cache/vigil/plugins"

if command -v systemd-analyze >/dev/null; then
  say "systemd-analyze verify $unit"
  # verify also loads the units the unit names (network-online.target, ...): only lines about
  # our own unit count.
  out="$(systemd-analyze verify "$unit" 2>&1 || true)"
  echo "$out"
  if grep -q "$unit_name" <<<"$out"; then fail "systemd-analyze verify reports problems with $unit_name"; fi
fi

if command -v strace >/dev/null && command -v systemd-analyze >/dev/null; then
  say "syscalls of the agent (run as vigil, plugin compiled in its child) vs SystemCallFilter=@system-service"
  work="$(runuser -u vigil -- mktemp -d)"
  runuser -u vigil -- mkdir "$work/plugins"
  runuser -u vigil -- cp /usr/share/vigil/plugins/threshold.wasm "$work/plugins/"
  cat >"$work/agent.toml" <<EOF
[agent]
shutdown_timeout = "5s"
[collect.system]
interval = "1s"
[plugins]
dir = "$work/plugins"
cache_dir = "$work/cache"
[[plugins.settings.threshold.rules]]
name = "memory-in-use"
metric = "system.memory.utilization"
op = ">="
value = 0.0
[export.otlp]
enabled = false
[export.debug]
verbosity = "basic"
[tuning]
audit_file = "/var/lib/vigil/actions.jsonl"
EOF
  chown vigil:vigil "$work/agent.toml"
  runuser -u vigil -- strace -f -qq -o "$work/trace" /usr/bin/vigil run --once --config "$work/agent.toml" >"$work/out" 2>&1 ||
    { cat "$work/out"; fail "vigil run --once as user vigil failed"; }
  grep -q '^alert firing plugin=threshold' "$work/out" || { cat "$work/out"; fail "the plugin did not evaluate"; }
  # Syscall names of the trace (`PID name(` lines, resumed calls included).
  used="$(sed -nE 's/^[0-9]+ +(<\.\.\. )?([a-z0-9_]+)[( ].*/\2/p' "$work/trace" | sort -u)"
  allowed="$(syscall_set @system-service | sort -u)"
  denied="$(comm -23 <(echo "$used") <(echo "$allowed"))"
  echo "syscalls used: $(echo "$used" | wc -l), outside @system-service: ${denied:-none}"
  rm -rf "$work"
  [ -z "$denied" ] || fail "the agent uses syscalls SystemCallFilter=@system-service denies: $denied"
fi

# --- reinstall (the upgrade path: postinst configure with the old version) -------------------
say "dpkg -i again over a changed config (an upgrade keeps a changed conffile, the user and the state)"
echo "# changed by deb-test" >>/etc/vigil/agent.toml
uid_before="$(id -u vigil)"
dpkg -i "$deb" </dev/null
grep -qx '# changed by deb-test' /etc/vigil/agent.toml || fail "reinstalling replaced the changed /etc/vigil/agent.toml"
[ "$(id -u vigil)" = "$uid_before" ] || fail "reinstalling changed the user vigil"
expect_present /var/lib/vigil/plugins/redis_hit_ratio.wasm
expect_owner vigil:vigil /var/lib/vigil /var/lib/vigil/plugins /var/cache/vigil /var/cache/vigil/plugins

# --- remove -----------------------------------------------------------------------------------
say "dpkg -r vigil (remove: config and state stay)"
dpkg -r vigil
list_files "remove"
expect_absent /usr/bin/vigil "$unit" /usr/share/vigil /usr/share/doc/vigil
expect_present /etc/vigil/agent.toml /var/lib/vigil/plugins/redis_hit_ratio.wasm /var/cache/vigil/plugins
getent passwd vigil >/dev/null || fail "remove deleted the user vigil"
[ "$(package_state)" = rc ] || fail "vigil is in state '$(package_state)' after remove, not rc (config-files)"

# --- purge --------------------------------------------------------------------------------------
say "dpkg -P vigil (purge: config, state and cache go, the user stays)"
dpkg -P vigil
list_files "purge"
expect_absent /etc/vigil /var/lib/vigil /var/cache/vigil
[ ! -L "$wants" ] || fail "purge left the unit's enablement symlink $wants"
getent passwd vigil >/dev/null || fail "purge deleted the user vigil (Debian practice keeps system users)"
if package_known; then fail "vigil is still known to dpkg after purge (state $(package_state))"; fi
say "deb-test passed: $deb"
