#!/usr/bin/env bash
# Install the .deb into a scratch Debian root (debootstrap minbase, a plain chroot: no
# container, no systemd running) and check what an operator would find:
#   1. the files, their owners and modes; /etc/pdtf root:pdtf 0750, the config 0640;
#   2. the pdtf account (system, no login, home /var/lib/pdtf); nothing enabled or started;
#   3. `pdtf-agent validate` passes as pdtf on the installed example (with the site's TLS
#      files put in place and the two passwords in the environment, as the README says),
#      and fails for another user, who may not read /etc/pdtf;
#   4. the installed unit passes `systemd-analyze verify` and its `security` exposure is at
#      most 2.0 (systemd's own tools, run inside the scratch root);
#   5. an operator's edit of a conffile survives a reinstall, and so do the owners;
#   6. remove keeps the config, purge keeps the journal unless PDTF_PURGE_JOURNAL=yes.
# Usage: tests/package/deb_install.sh path/to/pdtf-agent_*.deb
# (the base system is cached in $PDTF_DEBOOTSTRAP_CACHE, default under target/)
# Needs root, debootstrap and openssl; fetches bookworm (minbase with systemd, for
# systemd-sysusers and systemd-analyze; nothing runs it as init) from $DEBIAN_MIRROR.
set -euo pipefail
DEB=$(realpath "${1:?usage: deb_install.sh path/to/pdtf-agent.deb}")
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
ROOT=$(mktemp -d /tmp/pdtf-deb-root.XXXXXX)
cleanup() { umount "$ROOT/proc" 2>/dev/null || true; rm -rf "$ROOT"; }
trap cleanup EXIT
fail() { echo "PACKAGE FAIL: $*" >&2; exit 1; }
in_root() { chroot "$ROOT" "$@"; }

cache=${PDTF_DEBOOTSTRAP_CACHE:-target/ci-debootstrap-bookworm-systemd.tgz}
if [ -s "$cache" ]; then
  tar -xzf "$cache" -C "$ROOT"
else
  debootstrap --variant=minbase --include=systemd,procps bookworm "$ROOT" "$MIRROR" > "$ROOT.log" 2>&1 \
    || { tail -20 "$ROOT.log" >&2; fail "debootstrap bookworm from $MIRROR"; }
  rm -f "$ROOT.log"
  tar -czf "$cache" -C "$ROOT" .
fi
chmod 0755 "$ROOT"   # the scratch system's /: every user traverses it (mktemp made it 0700)
mount -t proc proc "$ROOT/proc"

cp "$DEB" "$ROOT/tmp/pdtf-agent.deb"
in_root dpkg -i /tmp/pdtf-agent.deb >/dev/null || fail "dpkg -i"

# 1. Files, owners, modes.
expect() { # path owner:group mode
  local got
  got=$(in_root stat -c '%U:%G %a' "$1" 2>/dev/null) || fail "$1 is not installed"
  [ "$got" = "$2 $3" ] || fail "$1 is $got, expected $2 $3"
}
expect /usr/bin/pdtf-agent root:root 755
expect /usr/lib/systemd/system/pdtf-agent.service root:root 644
expect /usr/lib/sysusers.d/pdtf-agent.conf root:root 644
expect /etc/pdtf root:pdtf 750
expect /etc/pdtf/tags root:pdtf 750
expect /etc/pdtf/tls root:pdtf 750
expect /etc/pdtf/agent.toml root:pdtf 640
expect /etc/pdtf/tags/granulator.toml root:pdtf 640
expect /var/lib/pdtf pdtf:pdtf 750
expect /usr/share/doc/pdtf-agent/README.md root:root 644
expect /usr/share/doc/pdtf-agent/copyright root:root 644
expect /usr/share/man/man1/pdtf-agent.1.gz root:root 644
expect /usr/share/man/man1/pdtf-agent-validate.1.gz root:root 644
expect /usr/share/bash-completion/completions/pdtf-agent root:root 644
expect /usr/share/zsh/vendor-completions/_pdtf-agent root:root 644
in_root test ! -e /usr/share/man/man1/pdtf-agent-demo.1.gz || fail "the demo's man page ships"
in_root /usr/bin/pdtf-agent --version | grep -q '^features: none$' \
  || fail "the packaged binary is not the lean build: $(in_root /usr/bin/pdtf-agent --version)"
in_root /usr/bin/pdtf-agent demo --duration 1 >/dev/null 2>&1 && fail "the packaged binary has the demo"
grep -q 'Documentation=file:///usr/share/doc/pdtf-agent/README.md' \
  "$ROOT/usr/lib/systemd/system/pdtf-agent.service" || fail "the unit's Documentation= is not the installed README"
for f in /etc/pdtf/agent.toml /etc/pdtf/tags/granulator.toml; do
  grep -qx "$f" "$ROOT/var/lib/dpkg/info/pdtf-agent.conffiles" || fail "$f is not a conffile"
done

# 2. The account; nothing enabled.
IFS=: read -r _ _ uid _ _ home shell < <(in_root getent passwd pdtf) || fail "no pdtf user"
[ "$uid" -lt 1000 ] || fail "pdtf is not a system user (uid $uid)"
[ "$home" = /var/lib/pdtf ] || fail "pdtf's home is $home"
case "$shell" in */nologin | */false) ;; *) fail "pdtf has a login shell: $shell" ;; esac
[ -z "$(find "$ROOT/etc/systemd" -name 'pdtf-agent*' 2>/dev/null)" ] \
  || fail "the package enabled the unit: $(find "$ROOT/etc/systemd" -name 'pdtf-agent*')"

# 3. validate as pdtf on the installed example, as the README's install steps say.
tls=$(mktemp -d)
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=site-ca -keyout "$tls/ca.key" \
  -out "$ROOT/etc/pdtf/tls/site-ca.pem" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=basel-b12-gw-03 -keyout "$ROOT/etc/pdtf/tls/gw03.key" \
  -out "$tls/gw03.csr" 2>/dev/null
printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n' > "$tls/ext"   # v3, as webpki requires
openssl x509 -req -in "$tls/gw03.csr" -CA "$ROOT/etc/pdtf/tls/site-ca.pem" -CAkey "$tls/ca.key" \
  -CAcreateserial -days 2 -extfile "$tls/ext" -out "$ROOT/etc/pdtf/tls/gw03.pem" 2>/dev/null
rm -rf "$tls"
in_root chown root:pdtf /etc/pdtf/tls/site-ca.pem /etc/pdtf/tls/gw03.pem /etc/pdtf/tls/gw03.key
in_root chmod 0640 /etc/pdtf/tls/site-ca.pem /etc/pdtf/tls/gw03.pem /etc/pdtf/tls/gw03.key
secrets=(env PDTF_PLANT_MQTT_PASSWORD=ci-plant PDTF_SITE_MQTT_PASSWORD=ci-site)
out=$(in_root runuser -u pdtf -- "${secrets[@]}" pdtf-agent validate 2>&1) \
  || fail "validate as pdtf: $out"
echo "validate as pdtf: $out"
if out=$(in_root runuser -u nobody -- "${secrets[@]}" pdtf-agent validate 2>&1); then
  fail "user nobody could read /etc/pdtf: $out"
fi
echo "$out" | grep -q "/etc/pdtf/agent.toml" || fail "validate as nobody does not name the file: $out"
out=$(in_root runuser -u pdtf -- pdtf-agent validate 2>&1) && fail "validate passed without the passwords"
echo "$out" | grep -q "PDTF_PLANT_MQTT_PASSWORD" || fail "a missing password is not named: $out"
# verify takes the state dir from the config and needs no secrets to find it.
out=$(in_root runuser -u pdtf -- pdtf-agent verify 2>&1) || true
echo "$out" | grep -q "/var/lib/pdtf" || fail "verify does not look in /var/lib/pdtf: $out"

# 4. The unit, checked by systemd's own tools (the minbase root has no man-db: --man=no; the
#    man page's presence is checked above).
in_root systemd-analyze verify --man=no /usr/lib/systemd/system/pdtf-agent.service \
  || fail "systemd-analyze verify"
exposure=$(in_root systemd-analyze security --offline=yes /usr/lib/systemd/system/pdtf-agent.service \
  | sed -n 's/.*Overall exposure level for pdtf-agent.service: \([0-9.]*\).*/\1/p')
echo "systemd-analyze security: exposure $exposure"
awk -v e="${exposure:-99}" 'BEGIN { exit !(e <= 2.0) }' || fail "unit exposure ${exposure:-unknown} > 2.0"

# 5. A reinstall keeps an operator's edit and the owners.
echo '# edited by the operator' >> "$ROOT/etc/pdtf/agent.toml"
in_root dpkg -i --force-confold /tmp/pdtf-agent.deb >/dev/null || fail "reinstall"
grep -q '^# edited by the operator$' "$ROOT/etc/pdtf/agent.toml" || fail "the reinstall lost the operator's edit"
expect /etc/pdtf root:pdtf 750
expect /etc/pdtf/agent.toml root:pdtf 640

# 6. Remove keeps the config; purge keeps the journal unless asked.
in_root install -o pdtf -g pdtf -m 0640 /dev/null /var/lib/pdtf/journal.redb
in_root dpkg -r pdtf-agent >/dev/null || fail "dpkg -r"
in_root test ! -e /usr/bin/pdtf-agent || fail "remove left the binary"
in_root test -f /etc/pdtf/agent.toml || fail "remove deleted the config"
out=$(in_root dpkg -P pdtf-agent 2>&1) || fail "dpkg -P: $out"
in_root test -f /var/lib/pdtf/journal.redb || fail "purge deleted the journal"
echo "$out" | grep -q "PDTF_PURGE_JOURNAL=yes" || fail "purge does not say how to delete the journal: $out"
in_root test ! -e /etc/pdtf/agent.toml || fail "purge left the conffile"
in_root dpkg -i /tmp/pdtf-agent.deb >/dev/null || fail "install after purge"
expect /var/lib/pdtf/journal.redb pdtf:pdtf 640
in_root env PDTF_PURGE_JOURNAL=yes dpkg -P pdtf-agent >/dev/null 2>&1 || fail "purge with PDTF_PURGE_JOURNAL=yes"
in_root test ! -e /var/lib/pdtf || fail "PDTF_PURGE_JOURNAL=yes kept /var/lib/pdtf"

echo "PACKAGE OK: $(basename "$DEB") installs, validates as pdtf, upgrades, removes and purges as documented"
